"""Docker target: submit+wait of a trivial script vs a bare ``docker run --rm IMAGE python3 train.py``.

Both on the same image and daemon, measured in this one process (medians of N). Needs dockerd and
the base image (``scripts/components.sh``). Usage: ``.venv/bin/python benchmarks/bench_docker.py [N]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with tempfile.TemporaryDirectory(prefix="bench_docker_") as scratch:
        os.environ["TRAINING_RUNS_HOME"] = str(Path(scratch) / "state")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from airflow_provider.core import Experiment, ScriptRunConfig
        from airflow_provider.core.targets.docker import DEFAULT_IMAGE, DockerTarget

        source = Path(scratch) / "src"
        source.mkdir()
        (source / "train.py").write_text('print("ok")\n')
        target = DockerTarget()
        experiment = Experiment("bench-docker")
        config = ScriptRunConfig(source, "train.py", compute_target=target)
        for _ in range(2):  # warm-up: creates the store, imports MLflow
            experiment.submit(config).wait_for_completion()
        submitted = []
        for _ in range(repetitions):
            started = time.perf_counter()
            experiment.submit(config).wait_for_completion()
            submitted.append(time.perf_counter() - started)
        bare = []
        for _ in range(repetitions):
            started = time.perf_counter()
            target.client.containers.run(DEFAULT_IMAGE, ["python3", "-c", 'print("ok")'], remove=True)
            bare.append(time.perf_counter() - started)
        ours, theirs = statistics.median(submitted), statistics.median(bare)
        print(f"submit+wait on the Docker target  {ours:.3f} s  (median of {repetitions})")
        print(f"bare docker run --rm               {theirs:.3f} s")
        print(f"ratio                              {ours / theirs:.2f}x  (goal < 1.5x)")
        _image_cache(experiment, source, target, Path(scratch))


def _image_cache(experiment: Any, source: Path, target: Any, scratch: Path) -> None:
    """An environment image built cold (pip requirements from a local wheel) vs a cache hit."""
    import uuid
    import zipfile

    from airflow_provider.core import Environment, ScriptRunConfig
    from airflow_provider.core.environments.docker_images import IMAGE_REPOSITORY

    wheel = scratch / "benchpkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("benchpkg.py", f"TOKEN = {uuid.uuid4().hex!r}\n")  # never built before
        archive.writestr("benchpkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: benchpkg\nVersion: 1.0\n")
        archive.writestr("benchpkg-1.0.dist-info/WHEEL",
                         "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr("benchpkg-1.0.dist-info/RECORD", "")
    environment = Environment("bench")
    environment.add_pip_package(str(wheel))
    config = ScriptRunConfig(source, "train.py", compute_target=target, environment=environment)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        experiment.submit(config).wait_for_completion()
        timings.append(time.perf_counter() - started)
    cold, warm = timings[0], statistics.median(timings[1:])
    print(f"environment image: cold build + run {cold:.2f} s, cache hit + run {warm:.3f} s ({cold / warm:.1f}x)")
    for image in target.client.images.list(IMAGE_REPOSITORY, filters={"label": "training.environment.name=bench"}):
        target.client.images.remove(image.id, force=True)


if __name__ == "__main__":
    main()
