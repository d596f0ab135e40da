"""Data inputs on the Docker target: a run reading a folder input, cold and warm through the
daemon's input cache volume and without it, vs ``docker create`` + ``docker cp`` of the same folder
+ ``docker start -a`` (the baseline: a container given the folder the usual way).

The folder (default 1 GB in 1,000 files, random bytes) is a ``download`` input of a run whose
script reads one file. Timed in this one process, interleaved, medians of N:

* ours, cold: submit + wait with a new cache volume (every file is sent to the volume).
* ours, warm: the same run again (nothing changed: nothing is sent).
* ours, no cache (``input_cache_volume=None``): every file streamed into the job's container.
* baseline: ``docker create``, ``docker cp FOLDER``, ``docker start -a``, ``docker rm``.
* the staging step alone, cold and warm: the cache's sync container for the folder's files (a new
  volume, then the same one again), what the SSH benchmark's warm/cold compares.

Goals (issue 18): cold at most 1.3x the baseline; warm under 0.1x of cold. Usage::

    .venv/bin/python benchmarks/bench_docker_inputs.py [N] [FILES] [MB]
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout

GOAL_COLD_RATIO = 1.3
GOAL_WARM_FRACTION = 0.1
SCRIPT = ("import os, sys\n"
          "print(len(open(os.path.join(sys.argv[1], sorted(os.listdir(sys.argv[1]))[0]), 'rb').read()))\n")


def _tree(folder: Path, files: int, megabytes: int) -> None:
    size = megabytes * (1 << 20) // files
    folder.mkdir(parents=True)
    for index in range(files):
        (folder / f"f{index:05d}.bin").write_bytes(os.urandom(size))


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _baseline(image: str, data: Path) -> None:
    name = f"bench-inputs-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "create", "--name", name, image, "python3", "-c", SCRIPT, "/data"], check=True,
                   capture_output=True)
    try:
        subprocess.run(["docker", "cp", str(data), f"{name}:/data"], check=True, capture_output=True)
        subprocess.run(["docker", "start", "-a", name], check=True, capture_output=True)
    finally:
        subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    megabytes = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    with tempfile.TemporaryDirectory(prefix="bench_docker_inputs_", dir=os.environ.get("BENCH_DIR")) as scratch:
        os.environ["TRAINING_RUNS_HOME"] = str(Path(scratch) / "state")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        from airflow_provider.core import Experiment, Input, ScriptRunConfig
        from airflow_provider.core.targets.docker import DEFAULT_IMAGE, DockerTarget
        from airflow_provider.core.targets.docker_input_cache import CachedBlob, sync_blobs

        data = Path(scratch) / "data"
        _tree(data, files, megabytes)
        source = Path(scratch) / "src"
        source.mkdir()
        (source / "train.py").write_text(SCRIPT)
        experiment = Experiment("bench-docker-inputs")

        def run(target: DockerTarget) -> None:
            config = ScriptRunConfig(source, "train.py", arguments=["${{inputs.train}}"], compute_target=target,
                                     inputs={"train": Input(str(data))})
            experiment.submit(config).wait_for_completion()

        run(DockerTarget(input_cache_volume=None))  # warm-up: the store, MLflow, the data's digests
        _baseline(DEFAULT_IMAGE, data)
        results: dict[str, list[float]] = {"ours_cold": [], "ours_warm": [], "ours_no_cache": [], "baseline": [],
                                           "sync_cold": [], "sync_warm": []}
        blobs = {}
        for path in sorted(data.iterdir()):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            blobs[digest] = CachedBlob(digest, path.stat().st_size, path)
        sent: dict[str, int] = {}
        for _ in range(repetitions):
            volume = f"bench-inputs-{uuid.uuid4().hex[:8]}"
            cached = DockerTarget(input_cache_volume=volume)
            try:
                results["ours_cold"].append(_timed(lambda cached=cached: run(cached)))
                sent["cold"] = cached.blob_bytes_sent
                results["ours_warm"].append(_timed(lambda cached=cached: run(cached)))
                sent["warm"] = cached.blob_bytes_sent - sent["cold"]
            finally:
                cached.client.volumes.get(volume).remove(force=True)
            volume = f"bench-inputs-{uuid.uuid4().hex[:8]}"  # the staging step alone: the input cache's sync
            client = DockerTarget().client
            try:
                for phase in ("sync_cold", "sync_warm"):
                    results[phase].append(_timed(lambda volume=volume, client=client: sync_blobs(
                        client, DEFAULT_IMAGE, "python3", volume, f"bench{uuid.uuid4().hex[:8]}", blobs,
                        {"training.managed": "true"})))
            finally:
                client.volumes.get(volume).remove(force=True)
            results["ours_no_cache"].append(_timed(lambda: run(DockerTarget(input_cache_volume=None))))
            results["baseline"].append(_timed(lambda: _baseline(DEFAULT_IMAGE, data)))
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"input: {files} files, {megabytes} MB, Docker target on the local daemon; medians of {repetitions}")
    for name, value in medians.items():
        print(f"  {name:<14} {value:8.2f} s   (runs: {', '.join(f'{v:.2f}' for v in results[name])})")
    print(f"  bytes sent: cold {sent['cold']:,}, warm {sent['warm']:,}")
    cold = medians["ours_cold"] / medians["baseline"]
    warm = medians["ours_warm"] / medians["ours_cold"]
    print(f"cold, ours / docker cp:   {cold:.2f}x (goal <= {GOAL_COLD_RATIO}x) "
          f"{'met' if cold <= GOAL_COLD_RATIO else 'MISSED'}")
    print(f"warm / cold (ours):       {warm:.3f}x (goal < {GOAL_WARM_FRACTION}x) "
          f"{'met' if warm < GOAL_WARM_FRACTION else 'MISSED'}")
    print(f"no cache / docker cp:     {medians['ours_no_cache'] / medians['baseline']:.2f}x")
    print(f"staging alone (the cache's sync), warm / cold: {medians['sync_warm'] / medians['sync_cold']:.3f}x")


if __name__ == "__main__":
    main()
