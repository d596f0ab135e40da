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


if __name__ == "__main__":
    main()
