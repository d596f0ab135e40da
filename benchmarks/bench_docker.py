"""Docker target: submit+wait of a trivial script vs a bare ``docker run --rm IMAGE python3 -c ...``.

Both on the same image and daemon, measured in this one process, interleaved (one of each in
turn, so a load change on the machine hits both alike), medians of N. Then a few instrumented
submissions say where the added time goes, phase by phase, next to the bare run's own steps
(create, start, wait, logs, remove). Last, an environment image built cold vs a cache hit.

Needs dockerd and the base image (``scripts/components.sh``). Usage::

    .venv/bin/python benchmarks/bench_docker.py [N]      # N=10 by default
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout

GOAL_RATIO = 1.5
SCRIPT = 'print("ok")'


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with tempfile.TemporaryDirectory(prefix="bench_docker_") as scratch:
        os.environ["TRAINING_RUNS_HOME"] = str(Path(scratch) / "state")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        from airflow_provider.core import Experiment, ScriptRunConfig
        from airflow_provider.core.targets.docker import DEFAULT_IMAGE, DockerTarget

        source = Path(scratch) / "src"
        source.mkdir()
        (source / "train.py").write_text(f"{SCRIPT}\n")
        target = DockerTarget()
        experiment = Experiment("bench-docker")
        config = ScriptRunConfig(source, "train.py", compute_target=target)
        for _ in range(2):  # warm-up: creates the store, imports MLflow
            experiment.submit(config).wait_for_completion()
            bare_run(target.client, DEFAULT_IMAGE)
        submitted, bare = [], []
        for _ in range(repetitions):
            submitted.append(timed(lambda: experiment.submit(config).wait_for_completion()))
            bare.append(timed(lambda: bare_run(target.client, DEFAULT_IMAGE)))
        ours, theirs = statistics.median(submitted), statistics.median(bare)
        print(f"submit+wait on the Docker target  {ours:.3f} s  (median of {repetitions})")
        print(f"bare docker run --rm               {theirs:.3f} s")
        print(f"ratio                              {ours / theirs:.2f}x  (goal <= {GOAL_RATIO}x: "
              f"{'met' if ours / theirs <= GOAL_RATIO else 'missed'})")
        print()
        print_breakdown(experiment, config, target, DEFAULT_IMAGE, max(3, repetitions // 2))
        print()
        _image_cache(experiment, source, target, Path(scratch))


def timed(action: Callable[[], object]) -> float:
    """Seconds ``action`` takes, after a full garbage collection (kept out of the measurement)."""
    gc.collect()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bare_run(client: Any, image: str, steps: dict[str, float] | None = None) -> None:
    """What ``docker run --rm IMAGE python3 -c SCRIPT`` does, step by step (as docker-py's
    ``containers.run(..., remove=True)``): create, start, wait, read the logs, remove.

    :param steps: when given, receives the seconds of each step (added to what it holds).
    """
    times = steps if steps is not None else defaultdict(float)

    def step(name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = call()
        times[name] = times.get(name, 0.0) + time.perf_counter() - started
        return result

    container = step("create", lambda: client.api.create_container(image, ["python3", "-c", SCRIPT])["Id"])
    step("start", lambda: client.api.start(container))
    step("wait (runs)", lambda: client.api.wait(container))
    step("logs", lambda: client.api.logs(container))
    step("remove", lambda: client.api.remove_container(container))


class PhaseTimer:
    """Wall time of patched methods, by label; a call inside another timed call counts only in the
    innermost label's own time, so the labels add up to the whole."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.overlapped: dict[str, float] = defaultdict(float)
        """Time of calls made in other threads (overlapping the main thread's), by label."""
        self._stack: list[list[float]] = []

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():  # overlaps the main thread's time
                started = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    self.overlapped[label] += time.perf_counter() - started
            self._stack.append([time.perf_counter(), 0.0])  # start, time of timed calls inside
            try:
                return function(*args, **kwargs)
            finally:
                started, inner = self._stack.pop()
                elapsed = time.perf_counter() - started
                self.seconds[label] += elapsed - inner
                if self._stack:
                    self._stack[-1][1] += elapsed

        return timed_call

    @contextlib.contextmanager
    def patched(self, targets: list[tuple[object, str, str]]) -> Iterator[None]:
        """Replace each ``owner.attribute`` by a timed wrapper for the ``with`` block."""
        originals = [(owner, name, vars(owner)[name]) for owner, name, _ in targets]
        for (owner, name, original), (_, _, label) in zip(originals, targets, strict=True):
            setattr(owner, name, self.wrap(label, original))
        try:
            yield
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)


def print_breakdown(experiment: Any, config: Any, target: Any, image: str, runs: int) -> None:
    """Where a submission's time goes, next to the bare run's steps (means over ``runs``)."""
    from mlflow.tracking import MlflowClient

    from airflow_provider.core.run_history import RunHistory
    from airflow_provider.core.submit import Experiment, StagedRun
    from airflow_provider.core.targets.docker import DockerTarget
    from airflow_provider.core.watcher import RunWatcher

    timer = PhaseTimer()
    phases = [
        (Experiment, "stage", "before the container: validate, MLflow run, snapshot, state tags"),
        (DockerTarget, "stage", "create the container, pack the job folder"),
        (DockerTarget, "launch", "attach, start, stream the job folder"),
        (StagedRun, "launch", "Running state"),
        (RunWatcher, "watch", "the container runs (supervisor + script) until its end is seen"),
        (RunWatcher, "finalize", "finalize: collect logs and outputs, final state"),
        (DockerTarget, "cleanup", "remove the container"),
        (RunHistory, "get_details", "get_details"),
        (RunWatcher, "wait_for_cleanup", "wait for the container's removal (begun before get_details)"),
    ]
    mlflow_calls = [(MlflowClient, name, "MLflow") for name, value in vars(MlflowClient).items()
                    if not name.startswith("_") and callable(value)]
    mlflow_timer = PhaseTimer()
    totals, bare_steps = [], defaultdict(float)
    with timer.patched(phases), mlflow_timer.patched(mlflow_calls):
        for _ in range(runs):
            totals.append(timed(lambda: experiment.submit(config).wait_for_completion()))
    for _ in range(runs):
        gc.collect()
        bare_run(target.client, image, bare_steps)
    total_ms = 1000 * sum(totals) / runs
    rows = [(label, 1000 * timer.seconds[label] / runs) for _, _, label in phases]
    rows.append(("other (ScriptRun state reads, locks, ...)", total_ms - sum(ms for _, ms in rows)))
    bare_ms = {name: 1000 * seconds / runs for name, seconds in bare_steps.items()}
    print(f"where the time goes (mean of {runs} instrumented submissions, ms)")
    for label, ms in rows:
        print(f"  {ms:7.1f}  {label}")
    print(f"  {total_ms:7.1f}  total submit+wait")
    for label, seconds in timer.overlapped.items():
        print(f"  ({1000 * seconds / runs:5.1f}  {label}: in a thread, overlapping the above)")
    print(f"  of which inside MLflow client calls: {1000 * sum(mlflow_timer.seconds.values()) / runs:.1f} "
          f"(and {1000 * sum(mlflow_timer.overlapped.values()) / runs:.1f} in threads)")
    print("bare docker run, step by step (ms)")
    for name, ms in bare_ms.items():
        print(f"  {ms:7.1f}  {name}")
    bare_total = sum(bare_ms.values())
    print(f"  {bare_total:7.1f}  total")
    print(f"added: {total_ms - bare_total:.1f} ms; the container's run (start to end seen) vs bare start + wait: "
          f"{rows[2][1] + rows[4][1] - bare_ms['start'] - bare_ms['wait (runs)']:+.1f} ms")


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
