"""Benchmarks of the core's hot paths, in one process, against a throwaway embedded MLflow store.

Run from the repository root::

    .venv/bin/python benchmarks/bench_core.py            # full: N=10 submissions, M=20,000 metrics (~1-2 min)
    .venv/bin/python benchmarks/bench_core.py --quick    # smaller N and M (well under a minute)

It points ``TRAINING_RUNS_HOME`` at a fresh temporary folder, so every run goes to the embedded
SQLite MLflow store there, and measures:

(a) submit overhead: ``Experiment.submit(ScriptRunConfig(src, "train.py")).wait_for_completion()``
    of ``print("ok")`` against the same script run bare with ``subprocess.run``; once with no
    environment (current interpreter) and once with a pip environment whose venv is cached;
(b) metric relay throughput: ``EventRelay.pump`` of an events file written by the run context,
    against per-call ``MlflowClient.log_metric`` and a direct ``MlflowClient.log_batch`` loop;
(c) import cost of ``from airflow_provider.core import Run`` and whether it imports Airflow or MLflow;
(d) the snapshot benchmark ``benchmarks/bench_snapshot.py``, when it exists.

Each section prints a table; the very last line of stdout is one JSON object with every number.
``benchmarks/README.md`` explains each number. Exit status: 0, or 1 when a section failed, or 2
with ``--check`` when a goal was missed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import gc
import importlib.util
import inspect
import io
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, and its tests.helpers

from airflow_provider.core import submit as submit_module
from airflow_provider.core.config import ScriptRunConfig
from airflow_provider.core.environments.local_cache import EnvironmentCache
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.relay import EventRelay
from airflow_provider.core.script_run import ScriptRun
from airflow_provider.core.snapshot import SnapshotStore
from airflow_provider.core.submit import Experiment
from airflow_provider.core.targets.base import JobHandle
from airflow_provider.core.targets.local import LocalTarget
from airflow_provider.core.tracking import Tracker
from airflow_provider.core.watcher import RunWatcher
from airflow_provider.runtime import job_runner
from airflow_provider.runtime.events import (
    EVENTS_FILE_VARIABLE,
    UPLOADS_DIR_VARIABLE,
    MetricEvent,
    decode_event,
    split_complete_lines,
)
from airflow_provider.runtime.run_context import Run as RunContext

REPO_ROOT = Path(__file__).resolve().parents[1]

# Goals (see benchmarks/README.md).
GOAL_SUBMIT_ADDED_S = 0.3
GOAL_RELAY_OVER_PER_CALL = 40.0
GOAL_RELAY_OVER_BATCH = 0.8
GOAL_IMPORT_MS = 50.0

METRIC_KEYS = ("loss", "accuracy", "learning_rate", "grad_norm")
IMPORT_STATEMENT = "from airflow_provider.core import Run"
HEAVY_PACKAGES = ("airflow", "mlflow")
SNAPSHOT_BENCH = REPO_ROOT / "benchmarks" / "bench_snapshot.py"


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark mode."""

    mode: str
    warmups: int  # untimed submissions first (the very first creates the DB and imports MLflow)
    repetitions: int  # N: timed submissions, and bare runs, per environment (median reported)
    breakdown_runs: int  # extra instrumented submissions for the per-phase breakdown
    metrics: int  # M: metric events relayed, and logged with log_batch
    relay_repeats: int  # repetitions of each section (b) measurement, each in a fresh run (median)
    per_call_sample: int  # log_metric calls timed to estimate the per-call rate
    batch_size: int  # metrics per direct log_batch call (MLflow's limit is 1000)
    import_repeats: int  # subprocess runs of each section (c) measurement (median)
    snapshot_args: tuple[str, ...]  # bench_snapshot.py options, when it has no --quick


FULL = Settings("full", 3, 10, 5, 20_000, 3, 1_000, 1_000, 5, ())
QUICK = Settings("quick", 2, 5, 3, 5_000, 3, 200, 1_000, 5, ("--files", "2000", "--mb", "20"))


# ---------------------------------------------------------------------------------------- helpers
def summary(samples: Sequence[float]) -> dict[str, float]:
    """Median, min and max of ``samples`` (seconds or whatever unit they are in)."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def print_table(title: str, rows: Sequence[tuple[str, str, str]]) -> None:
    """Print ``rows`` of (measure, value, note) under ``title``."""
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"\n== {title}")
    for label, value, note in rows:
        print(f"  {label:<{width}}  {value:>{value_width}}  {note}".rstrip())
    sys.stdout.flush()


def verdict(ok: bool) -> str:
    """The mark shown beside a goal."""
    return "PASS" if ok else "MISS"


def child_env(pythonpath: str | None) -> dict[str, str]:
    """This process's environment for a child Python: no run-context variables, a chosen PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in (EVENTS_FILE_VARIABLE, UPLOADS_DIR_VARIABLE, "PYTHONPATH", "MLFLOW_RUN_ID")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


class Stopwatch:
    """Wall time of a ``with`` block, and the garbage collector's share of it.

    A full (generation 2) collection takes ~0.2 s in this process (MLflow and SQLAlchemy make a
    big heap) and lands wherever allocations happen to cross the collector's thresholds. So the
    block starts with ``gc.collect()``: every measurement starts with no collection debt left by
    earlier code, and only the collections its own allocations trigger are counted in it.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.gc_seconds = 0.0
        self.full_collections = 0
        self._start = 0.0
        self._gc_start = 0.0

    def __enter__(self) -> Stopwatch:
        gc.collect()
        gc.callbacks.append(self._on_gc)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self._start
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
            return
        self.gc_seconds += time.perf_counter() - self._gc_start
        if info["generation"] == 2:
            self.full_collections += 1


class CallTimer:
    """Wall time and call counts of patched callables, grouped; nested calls in a group count once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._depth: Counter[str] = Counter()

    def wrap(self, group: str, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """Return ``function`` timed under ``label`` (outermost calls of ``group`` only)."""

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth[group]:
                return function(*args, **kwargs)
            self._depth[group] += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1
                self._depth[group] -= 1

        return timed

    @contextlib.contextmanager
    def patched(self, group: str, targets: Sequence[tuple[object, str, str]]) -> Iterator[list[str]]:
        """Replace each ``owner.attribute`` by a timed wrapper for the ``with`` block.

        Only attributes defined on the owner itself are patched (never inherited ones); the names
        that could not be found are yielded, so a renamed function is reported, not fatal.
        """
        originals: list[tuple[object, str, Any]] = []
        missing: list[str] = []
        for owner, attribute, label in targets:
            original = vars(owner).get(attribute)
            if not callable(original):
                missing.append(label)
                continue
            originals.append((owner, attribute, original))
            setattr(owner, attribute, self.wrap(group, label, original))
        try:
            yield missing
        finally:
            for owner, attribute, original in originals:
                setattr(owner, attribute, original)


# ---------------------------------------------------------------------------------------- (a) submit
def write_script(folder: Path, body: str) -> Path:
    """Write ``train.py`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(body)
    return folder


def time_submission(experiment: Experiment, config: ScriptRunConfig) -> tuple[float, float]:
    """Submit and wait; return (seconds until submit returned, seconds until wait returned)."""
    start = time.perf_counter()
    run = experiment.submit(config)
    submitted = time.perf_counter()
    run.wait_for_completion()  # raises RunFailedError unless the run ended Completed
    return submitted - start, time.perf_counter() - start


def time_bare(argv: list[str], cwd: Path) -> float:
    """Seconds to run ``argv`` in ``cwd`` with ``subprocess.run`` (output discarded)."""
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure_overhead(experiment: Experiment, config: ScriptRunConfig, bare_argv: list[str], cwd: Path,
                     settings: Settings, warmups: int) -> dict[str, Any]:
    """Median submit+wait vs median bare run over N repetitions, after ``warmups`` submissions."""
    for _ in range(warmups):
        time_submission(experiment, config)
    timed = [time_submission(experiment, config) for _ in range(settings.repetitions)]
    time_bare(bare_argv, cwd)  # one untimed run: page cache and .pyc files
    bare = [time_bare(bare_argv, cwd) for _ in range(settings.repetitions)]
    submit_wait = summary([total for _, total in timed])
    bare_summary = summary(bare)
    return {
        "submit_wait_s": submit_wait,
        "submit_only_s": summary([only for only, _ in timed]),
        "bare_s": bare_summary,
        "added_s": submit_wait["median"] - bare_summary["median"],
    }


PHASES: list[tuple[object, str, str]] = [
    (ScriptRunConfig, "validate", "validate config"),
    (SnapshotStore, "take", "snapshot take"),
    (submit_module, "read_git_state", "git state"),
    (Experiment, "_prepare_environment", "prepare environment + tags"),
    (LocalTarget, "stage", "stage job folder"),
    (LocalTarget, "launch", "launch supervisor"),
    (RunWatcher, "watch", "watch until exit"),
    (RunWatcher, "finalize", "finalize"),
    (ScriptRun, "get_details", "get_details"),
]


def breakdown(experiment: Experiment, config: ScriptRunConfig, runs: int) -> dict[str, Any]:
    """Where the time of a submission goes: lifecycle phases, and every MLflow client call.

    Separate, instrumented submissions (the timed ones above are not instrumented). MLflow calls
    overlap the phases (most phases make some); "other" is what no listed phase covers.
    """
    from mlflow.tracking import MlflowClient

    client_methods = [(MlflowClient, name, name) for name, value in vars(MlflowClient).items()
                      if not name.startswith("_") and inspect.isfunction(value)]
    timer = CallTimer()
    totals = []
    with timer.patched("phase", PHASES) as missing, timer.patched("mlflow", client_methods):
        for _ in range(runs):
            gc.collect()  # a mean over few runs: keep a stray full collection (~0.2 s) out of it
            totals.append(time_submission(experiment, config)[1])
    phase_labels = [label for _, _, label in PHASES if label not in missing]
    mean_total = sum(totals) / runs
    phases_ms = {label: 1000 * timer.seconds[label] / runs for label in phase_labels}
    phases_ms["other (create_run, set_state, manifest upload, ...)"] = 1000 * mean_total - sum(phases_ms.values())
    mlflow_labels = sorted((name for _, name, _ in client_methods if timer.calls[name]),
                           key=lambda n: -timer.seconds[n])
    return {
        "runs": runs,
        "submit_wait_mean_ms": 1000 * mean_total,
        "phases_ms": phases_ms,
        "phases_not_found": missing,
        "mlflow_calls_per_run": {n: timer.calls[n] / runs for n in mlflow_labels},
        "mlflow_ms_per_run": {n: 1000 * timer.seconds[n] / runs for n in mlflow_labels},
        "mlflow_total_calls_per_run": sum(timer.calls[n] for n in mlflow_labels) / runs,
        "mlflow_total_ms_per_run": 1000 * sum(timer.seconds[n] for n in mlflow_labels) / runs,
    }


def bench_pip_environment(work: Path, experiment: Experiment, settings: Settings) -> dict[str, Any]:
    """Submit overhead with a pip environment whose venv is already cached (a wheel built by hand)."""
    try:
        from tests.helpers import make_wheel
    except ImportError as exc:
        return {"skipped": f"tests.helpers.make_wheel is not importable: {exc}"}
    wheel = make_wheel(Path(tempfile.mkdtemp(prefix="wheels-", dir=work)), "benchpkg", "1.0", "VALUE = 42\n")
    requirements = work / "requirements.txt"
    requirements.write_text(f"{wheel}\n")
    environment = Environment.from_pip_requirements("bench-pip", requirements)
    source = write_script(work / "src-pip", 'import benchpkg\nprint("ok", benchpkg.VALUE)\n')
    config = ScriptRunConfig(source, "train.py", environment=environment)

    first_s = time_submission(experiment, config)[1]  # builds the venv (a cache miss)
    cache = EnvironmentCache()
    prepared = cache.prepare(environment)
    if prepared.built:
        raise RuntimeError("the pip environment was rebuilt on the second prepare(): the cache missed")
    prepare_hits = []
    for _ in range(200):
        start = time.perf_counter()
        cache.prepare(environment)
        prepare_hits.append(time.perf_counter() - start)
    result = measure_overhead(experiment, config, [prepared.python, "train.py"], source, settings, warmups=1)
    result.update({
        "first_submission_with_build_s": first_s,
        "prepare_cache_hit_s": summary(prepare_hits),
        "venv_python": prepared.python,
    })
    return result


def bench_submit(work: Path, settings: Settings) -> dict[str, Any]:
    """Section (a)."""
    source = write_script(work / "src", 'print("ok")\n')
    config = ScriptRunConfig(source, "train.py")
    experiment = Experiment("bench")
    cold_s = time_submission(experiment, config)[1]  # creates the DB, imports MLflow, first snapshot
    current = measure_overhead(experiment, config, [sys.executable, "train.py"], source, settings,
                               warmups=settings.warmups - 1)
    current["first_submission_cold_s"] = cold_s
    details_run = experiment.submit(config)
    details_run.wait_for_completion()
    details_times = []
    for _ in range(settings.repetitions):
        start = time.perf_counter()
        details_run.get_details()
        details_times.append(time.perf_counter() - start)
    current["get_details_s"] = summary(details_times)
    current["breakdown"] = breakdown(experiment, config, settings.breakdown_runs)
    pip = bench_pip_environment(work, experiment, settings)

    ms = 1000.0
    rows = [
        ("first submission (creates DB, imports MLflow)", f"{cold_s:.3f} s", ""),
        ("current interpreter: submit+wait median", f"{current['submit_wait_s']['median']:.3f} s",
         f"N={settings.repetitions}, min {current['submit_wait_s']['min']:.3f}, "
         f"max {current['submit_wait_s']['max']:.3f}"),
        ("  of which submit() returns after", f"{current['submit_only_s']['median']:.3f} s", ""),
        ("  bare subprocess.run median", f"{current['bare_s']['median']:.3f} s", f"N={settings.repetitions}"),
        ("  added = submit_wait - bare", f"{current['added_s']:.3f} s",
         f"goal < {GOAL_SUBMIT_ADDED_S} s: {verdict(current['added_s'] < GOAL_SUBMIT_ADDED_S)}"),
        ("  ScriptRun.get_details() alone", f"{current['get_details_s']['median'] * ms:.1f} ms",
         "(part of wait_for_completion)"),
    ]
    if "skipped" in pip:
        rows.append(("pip environment", "skipped", pip["skipped"]))
    else:
        rows += [
            ("pip env: first submission (builds venv)", f"{pip['first_submission_with_build_s']:.3f} s", ""),
            ("pip env: prepare() cache hit", f"{pip['prepare_cache_hit_s']['median'] * ms:.3f} ms", "median of 200"),
            ("pip env (cached): submit+wait median", f"{pip['submit_wait_s']['median']:.3f} s",
             f"N={settings.repetitions}"),
            ("  bare subprocess.run of the venv python", f"{pip['bare_s']['median']:.3f} s", ""),
            ("  added = submit_wait - bare", f"{pip['added_s']:.3f} s",
             f"goal < {GOAL_SUBMIT_ADDED_S} s: {verdict(pip['added_s'] < GOAL_SUBMIT_ADDED_S)}"),
            ("  cache-hit cost vs no environment",
             f"{pip['submit_wait_s']['median'] - current['submit_wait_s']['median']:+.3f} s",
             "submit_wait(pip) - submit_wait(current)"),
        ]
    print_table("(a) submit overhead", rows)
    split = current["breakdown"]
    print_table(f"(a) where a submission's time goes (mean of {split['runs']} instrumented runs)",
                [(label, f"{value:.1f} ms", "") for label, value in split["phases_ms"].items()]
                + [("MLflow client calls (overlap the phases)",
                    f"{split['mlflow_total_ms_per_run']:.1f} ms",
                    f"{split['mlflow_total_calls_per_run']:.0f} calls: " + ", ".join(
                        f"{name} x{count:g}" for name, count in split["mlflow_calls_per_run"].items()))])
    return {"current": current, "pip": pip}


# ---------------------------------------------------------------------------------------- (b) relay
def close_context(context: RunContext) -> None:
    """Close the events file of a run context made by hand (jobs never need to: they exit)."""
    descriptor = getattr(context, "_events_fd", None)
    if isinstance(descriptor, int):
        os.close(descriptor)


def write_events(job_dir: Path, count: int) -> tuple[float, list[MetricEvent]]:
    """Log ``count`` metric values with the run context into ``job_dir/events.jsonl``.

    :return: the seconds the ``run.log`` calls took, and the events as written.
    """
    (job_dir / job_runner.UPLOADS_DIR).mkdir(parents=True)
    events_file = job_dir / job_runner.EVENTS_FILE
    context = RunContext(str(events_file), str(job_dir / job_runner.UPLOADS_DIR), "bench-relay")
    try:
        start = time.perf_counter()
        for i in range(count):
            context.log(METRIC_KEYS[i % len(METRIC_KEYS)], 1.0 / (1 + i))
        elapsed = time.perf_counter() - start
    finally:
        close_context(context)
    lines, _ = split_complete_lines(events_file.read_bytes())
    events = [decode_event(line) for line in lines]
    metric_events = [e for e in events if isinstance(e, MetricEvent)]
    if len(metric_events) != count:
        raise RuntimeError(f"the events file holds {len(metric_events)} metric events, expected {count}")
    return elapsed, metric_events


class RunBook:
    """MLflow runs made by section (b): every one is terminated at the end."""

    def __init__(self, tracker: Tracker, experiment_id: str) -> None:
        self.tracker = tracker
        self.experiment_id = experiment_id
        self.run_ids: list[str] = []

    def new_run(self, kind: str) -> str:
        """Create a fresh run tagged ``bench.kind=kind``."""
        run_id = self.tracker.create_run(self.experiment_id, {"bench.kind": kind})
        self.run_ids.append(run_id)
        return run_id

    def count_metrics(self, run_id: str) -> int:
        """How many metric values the run holds."""
        return sum(len(self.tracker.client.get_metric_history(run_id, key)) for key in METRIC_KEYS)

    def terminate_all(self) -> None:
        """End every run made here that is still open."""
        for run_id in self.run_ids:
            with contextlib.suppress(Exception):
                if self.tracker.client.get_run(run_id).info.status == "RUNNING":
                    self.tracker.client.set_terminated(run_id, "FINISHED")


def relay_once(book: RunBook, job_dir: Path, expected: int) -> Stopwatch:
    """Relay the events file into a fresh run; time ``pump()``."""
    run_id = book.new_run("relay")
    jobs_root = job_dir.parent / "relay-jobs"  # a job folder is <jobs root>/<run id>: each run links the one file
    jobs_root.mkdir(exist_ok=True)
    (jobs_root / run_id).symlink_to(job_dir, target_is_directory=True)
    handle = JobHandle(LocalTarget.kind, run_id, str(jobs_root / run_id))
    relay = EventRelay(book.tracker, LocalTarget(jobs_root=jobs_root), handle, run_id)
    with Stopwatch() as watch:
        relayed = relay.pump()
    stored = book.count_metrics(run_id)
    if relayed != expected or stored != expected:
        raise RuntimeError(f"relay moved {relayed} events and MLflow holds {stored}, expected {expected}")
    return watch


def per_call_once(book: RunBook, events: Sequence[MetricEvent]) -> Stopwatch:
    """Log ``events`` with one ``log_metric`` call each into a fresh run; time the calls."""
    run_id = book.new_run("per-call")
    client = book.tracker.client
    with Stopwatch() as watch:
        for e in events:
            client.log_metric(run_id, e.key, e.value, timestamp=e.timestamp_ms, step=e.step, synchronous=True)
    if book.count_metrics(run_id) != len(events):
        raise RuntimeError("per-call logging lost metric values")
    return watch


def batch_once(book: RunBook, metrics: Sequence[Any], batch_size: int) -> Stopwatch:
    """Log prebuilt ``Metric`` entities in ``log_batch`` chunks into a fresh run; time the calls."""
    run_id = book.new_run("log-batch")
    client = book.tracker.client
    with Stopwatch() as watch:
        for first in range(0, len(metrics), batch_size):
            client.log_batch(run_id, metrics=metrics[first : first + batch_size], synchronous=True)
    if book.count_metrics(run_id) != len(metrics):
        raise RuntimeError("log_batch lost metric values")
    return watch


def interleaved(book: RunBook, job_dir: Path, events: Sequence[MetricEvent], metrics: Sequence[Any],
                settings: Settings, per_call: bool) -> tuple[list[Stopwatch], list[Stopwatch], list[Stopwatch]]:
    """Repeat relay, log_batch (and per-call) measurements; return the stopwatches of each.

    Relay and batch take turns to go first: every insert makes the SQLite file bigger and the next
    insert a little slower, and that drift must hit both alike.
    """
    relay_w: list[Stopwatch] = []
    batch_w: list[Stopwatch] = []
    per_call_w: list[Stopwatch] = []
    for repeat in range(settings.relay_repeats):
        if repeat % 2 == 0:
            relay_w.append(relay_once(book, job_dir, len(events)))
        batch_w.append(batch_once(book, metrics, settings.batch_size))
        if repeat % 2 == 1:
            relay_w.append(relay_once(book, job_dir, len(events)))
        if per_call:
            per_call_w.append(per_call_once(book, events[: settings.per_call_sample]))
    return relay_w, batch_w, per_call_w


def bench_relay(work: Path, settings: Settings) -> dict[str, Any]:
    """Section (b)."""
    from mlflow.entities import Metric

    count = settings.metrics
    job_dir = work / "relay-job"
    write_s, events = write_events(job_dir, count)
    raw = (job_dir / job_runner.EVENTS_FILE).read_bytes()
    start = time.perf_counter()
    lines, _ = split_complete_lines(raw)
    for line in lines:
        decode_event(line)
    parse_s = time.perf_counter() - start
    metrics = [Metric(e.key, e.value, e.timestamp_ms, e.step) for e in events]

    tracker = Tracker()
    book = RunBook(tracker, tracker.experiment_id("bench-relay"))
    try:
        batch_once(book, metrics[: settings.batch_size], settings.batch_size)  # warm-up: SQL paths, caches
        per_call_once(book, events[:20])
        relay_w, batch_w, per_call_w = interleaved(book, job_dir, events, metrics, settings, per_call=True)
        # What-if: the same with the heap MLflow and SQLAlchemy left behind frozen (see README).
        gc.collect()
        gc.freeze()
        try:
            frozen_relay_w, frozen_batch_w, _ = interleaved(book, job_dir, events, metrics, settings, per_call=False)
        finally:
            gc.unfreeze()
    finally:
        book.terminate_all()
    relay_s = [w.seconds for w in relay_w]
    batch_s = [w.seconds for w in batch_w]
    per_call_s = [w.seconds for w in per_call_w]

    relay_rate = count / statistics.median(relay_s)
    batch_rate = count / statistics.median(batch_s)
    per_call_rate = settings.per_call_sample / statistics.median(per_call_s)
    frozen_relay_rate = count / statistics.median(w.seconds for w in frozen_relay_w)
    frozen_batch_rate = count / statistics.median(w.seconds for w in frozen_batch_w)
    result: dict[str, Any] = {
        "metrics": count,
        "events_file_bytes": len(raw),
        "run_log_calls_per_s": count / write_s,
        "parse_only_s": parse_s,
        "relay_pump_s": summary(relay_s),
        "relay_gc_s": summary([w.gc_seconds for w in relay_w]),
        "relay_full_collections": [w.full_collections for w in relay_w],
        "relay_metrics_per_s": relay_rate,
        "log_batch_s": summary(batch_s),
        "log_batch_gc_s": summary([w.gc_seconds for w in batch_w]),
        "log_batch_full_collections": [w.full_collections for w in batch_w],
        "log_batch_metrics_per_s": batch_rate,
        "log_batch_size": settings.batch_size,
        "per_call_sample": settings.per_call_sample,
        "per_call_sample_s": summary(per_call_s),
        "per_call_gc_s": summary([w.gc_seconds for w in per_call_w]),
        "per_call_metrics_per_s": per_call_rate,
        "per_call_extrapolated_s": count / per_call_rate,
        "relay_over_per_call": relay_rate / per_call_rate,
        "relay_over_log_batch": relay_rate / batch_rate,
        "log_batch_over_per_call": batch_rate / per_call_rate,
        "gc_frozen": {
            "relay_pump_s": summary([w.seconds for w in frozen_relay_w]),
            "relay_gc_s": summary([w.gc_seconds for w in frozen_relay_w]),
            "relay_metrics_per_s": frozen_relay_rate,
            "log_batch_s": summary([w.seconds for w in frozen_batch_w]),
            "log_batch_metrics_per_s": frozen_batch_rate,
            "relay_over_per_call": frozen_relay_rate / per_call_rate,
            "relay_over_log_batch": frozen_relay_rate / frozen_batch_rate,
            "relay_speedup": frozen_relay_rate / relay_rate,
        },
        "runs_created_and_terminated": len(book.run_ids),
    }
    repeats = f"median of {settings.relay_repeats}, fresh run each"
    over_per_call, over_batch = result["relay_over_per_call"], result["relay_over_log_batch"]
    print_table(f"(b) metric relay throughput, M={count:,} metrics ({len(raw) / 1e6:.2f} MB of events)", [
        ("run.log() writing the events file", f"{result['run_log_calls_per_s']:,.0f} /s", "script side"),
        ("EventRelay.pump() into MLflow", f"{relay_rate:,.0f} metrics/s",
         f"{statistics.median(relay_s):.3f} s, {repeats}"),
        ("  of which reading + decoding lines", f"{parse_s:.3f} s", "measured alone"),
        ("  of which garbage collection", f"{result['relay_gc_s']['median']:.3f} s",
         f"full collections per repeat: {result['relay_full_collections']}"),
        (f"direct log_batch loop ({settings.batch_size}/batch)", f"{batch_rate:,.0f} metrics/s",
         f"{statistics.median(batch_s):.3f} s, {repeats}"),
        ("  of which garbage collection", f"{result['log_batch_gc_s']['median']:.3f} s",
         f"full collections per repeat: {result['log_batch_full_collections']}"),
        ("per-call log_metric", f"{per_call_rate:,.0f} metrics/s",
         f"{settings.per_call_sample} calls; {count:,} would take {count / per_call_rate:.1f} s"),
        ("relay / per-call", f"{over_per_call:.1f}x",
         f"goal >= {GOAL_RELAY_OVER_PER_CALL:g}x: {verdict(over_per_call >= GOAL_RELAY_OVER_PER_CALL)}"),
        ("relay / direct log_batch", f"{over_batch:.2f}x",
         f"goal >= {GOAL_RELAY_OVER_BATCH}x: {verdict(over_batch >= GOAL_RELAY_OVER_BATCH)}"),
        ("direct log_batch / per-call", f"{result['log_batch_over_per_call']:.1f}x",
         "the most relay / per-call can be while the relay goes through log_batch"),
        ("what-if gc.freeze(): EventRelay.pump()", f"{frozen_relay_rate:,.0f} metrics/s",
         f"x{frozen_relay_rate / relay_rate:.2f}; GC {result['gc_frozen']['relay_gc_s']['median']:.3f} s; "
         f"relay / per-call {frozen_relay_rate / per_call_rate:.1f}x"),
        ("what-if gc.freeze(): direct log_batch", f"{frozen_batch_rate:,.0f} metrics/s",
         f"relay / log_batch {frozen_relay_rate / frozen_batch_rate:.2f}x"),
    ])
    return result


# ---------------------------------------------------------------------------------------- (c) import
_IMPORTTIME_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)\s*$")

# Prints the in-process wall time of the import and which Airflow/MLflow modules got loaded.
_PROBE = (
    "import time; start = time.perf_counter(); " + IMPORT_STATEMENT + "; "
    "elapsed = time.perf_counter() - start; import json, sys, airflow_provider; "
    "print(json.dumps({'ms': elapsed * 1000, 'file': airflow_provider.__file__, 'heavy': sorted("
    f"m for m in sys.modules if m.split('.')[0] in {HEAVY_PACKAGES!r})}}))"
)


@dataclass(frozen=True)
class ImportEntry:
    """One line of ``-X importtime`` output."""

    depth: int
    name: str
    self_us: int
    cumulative_us: int


def importtime(code: str, pythonpath: str | None, cwd: Path) -> list[ImportEntry]:
    """Run ``python -X importtime -c code``; return its entries."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=cwd, env=child_env(pythonpath),
                          capture_output=True, text=True, check=True)
    entries = []
    for line in done.stderr.splitlines():
        match = _IMPORTTIME_LINE.match(line)
        if match:
            # One space after the bar, then two more per nesting level.
            depth = (len(match.group(3)) - 1) // 2
            entries.append(ImportEntry(depth, match.group(4), int(match.group(1)), int(match.group(2))))
    return entries


def wall_ms(code: str, pythonpath: str | None, cwd: Path) -> float:
    """Milliseconds to start ``python -c code`` and have it exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=cwd, env=child_env(pythonpath), check=True)
    return 1000 * (time.perf_counter() - start)


def probe(pythonpath: str | None, cwd: Path) -> dict[str, Any]:
    """Run the in-process probe of the import in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=cwd, env=child_env(pythonpath),
                          capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def write_runtime(folder: Path) -> bool:
    """Write the run-context package exactly as a job gets it (``runtime.job_files()``)."""
    from airflow_provider import runtime

    for relative, content in runtime.job_files().items():
        path = folder / Path(relative).relative_to(runtime.RUNTIME_DIR)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return True


def bench_import(work: Path, settings: Settings) -> dict[str, Any]:
    """Section (c).

    How the ``-X importtime`` number is summed: ``Run`` is not a real attribute of
    ``airflow_provider.core``; the package's ``__getattr__`` imports ``run_context`` with
    ``importlib.import_module``, which bypasses the interpreter's C-level import timer. So
    ``run_context`` gets no line of its own, and the modules it imports (``shutil``, ``threading``,
    ``pathlib``, ``airflow_provider.runtime.events``, ...) appear as top-level entries instead of
    under it. Summing only the ``airflow_provider*`` top-level lines would therefore miss them.
    We sum the cumulative time of every top-level entry that ``python -c pass`` does not have
    (everything the statement imported, each counted once, children included). ``run_context``'s
    own module body is still missing from that sum: the in-process probe (``time.perf_counter``
    around the import statement, in a fresh interpreter) measures everything and is shown too.
    """
    repeats = settings.import_repeats
    path = str(REPO_ROOT)
    cwd = work  # not the repository: the package must come from PYTHONPATH, as when installed
    startup_names = {e.name for e in importtime("pass", path, cwd) if e.depth == 0}
    totals_us, package_us, heavy_seen = [], [], set()
    for _ in range(repeats):
        entries = importtime(IMPORT_STATEMENT, path, cwd)
        new_top = [e for e in entries if e.depth == 0 and e.name not in startup_names]
        totals_us.append(sum(e.cumulative_us for e in new_top))
        package_us.append(sum(e.cumulative_us for e in new_top if e.name.split(".")[0] == "airflow_provider"))
        heavy_seen |= {e.name for e in entries if e.name.split(".")[0] in HEAVY_PACKAGES}
    top_level = sorted(((e.name, e.cumulative_us / 1000) for e in new_top), key=lambda item: -item[1])
    probes = [probe(path, cwd) for _ in range(repeats)]
    heavy_seen |= {name for p in probes for name in p["heavy"]}
    pass_ms = [wall_ms("pass", path, cwd) for _ in range(repeats)]
    import_ms = [wall_ms(IMPORT_STATEMENT, path, cwd) for _ in range(repeats)]

    runtime: dict[str, Any] = {}
    if write_runtime(work / "runtime-warm"):
        probe(str(work / "runtime-warm"), cwd)  # writes __pycache__
        warm = [probe(str(work / "runtime-warm"), cwd) for _ in range(repeats)]
        cold = []
        for index in range(repeats):  # a job's runtime folder is new: no .pyc files yet
            folder = work / f"runtime-cold-{index}"
            write_runtime(folder)
            cold.append(probe(str(folder), cwd))
        heavy_seen |= {name for p in warm + cold for name in p["heavy"]}
        runtime = {
            "imported_from": warm[0]["file"],
            "probe_ms_warm_pyc": summary([p["ms"] for p in warm]),
            "probe_ms_cold_no_pyc": summary([p["ms"] for p in cold]),
        }

    total_ms = statistics.median(totals_us) / 1000
    heavy = sorted(heavy_seen)
    ok = not heavy and total_ms < GOAL_IMPORT_MS
    result = {
        "statement": IMPORT_STATEMENT,
        "importtime_total_ms": summary([t / 1000 for t in totals_us]),
        "importtime_airflow_provider_lines_ms": summary([t / 1000 for t in package_us]),
        "importtime_top_level_entries_ms": dict(top_level),
        "probe_ms": summary([p["ms"] for p in probes]),
        "imported_from": probes[0]["file"],
        "python_pass_wall_ms": summary(pass_ms),
        "python_import_wall_ms": summary(import_ms),
        "wall_added_ms": statistics.median(import_ms) - statistics.median(pass_ms),
        "heavy_modules_imported": heavy,
        "job_runtime_copy": runtime,
        "goal_met": ok,
    }
    rows = [
        ("-X importtime: all new top-level entries", f"{total_ms:.1f} ms",
         f"median of {repeats}; goal < {GOAL_IMPORT_MS:g} ms and no airflow/mlflow: {verdict(ok)}"),
        ("  of which airflow_provider* lines only", f"{statistics.median(package_us) / 1000:.1f} ms",
         "misses run_context's imports (see comment)"),
        ("  biggest entries", "", ", ".join(f"{n} {ms:.1f}" for n, ms in top_level[:6])),
        ("in-process perf_counter around the import", f"{result['probe_ms']['median']:.1f} ms",
         f"from {result['imported_from']}"),
        ("wall: python -c pass", f"{result['python_pass_wall_ms']['median']:.1f} ms", ""),
        (f"wall: python -c '{IMPORT_STATEMENT}'", f"{result['python_import_wall_ms']['median']:.1f} ms",
         f"added {result['wall_added_ms']:.1f} ms"),
        ("airflow / mlflow modules imported", str(len(heavy)), ", ".join(heavy[:8]) or "none"),
    ]
    if runtime:
        rows += [
            ("job runtime copy, .pyc cached", f"{runtime['probe_ms_warm_pyc']['median']:.1f} ms",
             f"from {runtime['imported_from']}"),
            ("job runtime copy, fresh folder (as in a job)", f"{runtime['probe_ms_cold_no_pyc']['median']:.1f} ms",
             "compiles run_context.py and events.py"),
        ]
    print_table("(c) import cost of the run context", rows)
    return result


# ---------------------------------------------------------------------------------------- (d) snapshot
SNAPSHOT_API_NAMES = ("run_benchmark", "benchmark", "bench", "run")


@contextlib.contextmanager
def preserved_process_state(argv: list[str]) -> Iterator[io.StringIO]:
    """Run a foreign benchmark with ``sys.argv = argv``, capturing its stdout; restore env and argv."""
    saved_env, saved_argv = dict(os.environ), sys.argv
    output = io.StringIO()
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(output):
            yield output
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)


def parse_summary_line(text: str) -> dict[str, Any]:
    """``SUMMARY k=v ... PASS`` lines of bench_snapshot's output as a dict."""
    found: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.startswith("SUMMARY"):
            continue
        for token in line.split()[1:]:
            key, sep, value = token.partition("=")
            if not sep:
                found["verdict"] = token
                continue
            try:
                found[key] = int(value)
            except ValueError:
                try:
                    found[key] = float(value)
                except ValueError:
                    found[key] = value
    return found


def snapshot_bench_interface() -> tuple[set[str], set[str]]:
    """The top-level function names and the ``--options`` of bench_snapshot.py, read without running it."""
    source = SNAPSHOT_BENCH.read_text()
    functions = {node.name for node in ast.parse(source).body
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    options = set(re.findall(r"""["'](--[a-z][a-z0-9-]*)["']""", source))
    return functions, options


def load_snapshot_bench() -> ModuleType:
    """Import bench_snapshot.py as a module (its ``if __name__ == "__main__"`` part does not run)."""
    spec = importlib.util.spec_from_file_location("bench_snapshot", SNAPSHOT_BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def echo(text: str) -> None:
    """Print a foreign benchmark's output, indented."""
    if text.strip():
        print("\n".join(f"    | {line}" for line in text.splitlines()))


def call_function(function: Callable[..., Any], args: list[str], pass_argv: bool,
                  kwargs: dict[str, Any]) -> dict[str, Any]:
    """Call a benchmark function in this process with ``sys.argv`` = ``args``; capture what it prints."""
    value, code = None, None
    start = time.perf_counter()
    with preserved_process_state([str(SNAPSHOT_BENCH), *args]) as output:
        try:
            value = function(args) if pass_argv else function(**kwargs)
        except SystemExit as exc:
            code = exc.code
    elapsed = time.perf_counter() - start
    echo(output.getvalue())
    how = f"called {function.__name__}() with " + (f"argv {args}" if not kwargs else f"{kwargs}")
    if code not in (0, None):
        return {"status": "error", "how": how, "reason": f"it exited with status {code}"}
    return {"status": "ok", "how": how, "elapsed_s": elapsed, "summary": parse_summary_line(output.getvalue()),
            "returned": value if isinstance(value, dict) else None}


def run_as_subprocess(args: list[str]) -> dict[str, Any]:
    """Run bench_snapshot.py as a program (when it exposes no function)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(SNAPSHOT_BENCH), *args], capture_output=True, text=True,
                          check=False, env=child_env(None))
    echo(done.stdout)
    return {"status": "ok" if done.returncode == 0 else "error", "how": f"subprocess with {args}",
            "elapsed_s": time.perf_counter() - start, "returncode": done.returncode,
            "summary": parse_summary_line(done.stdout), "stderr_tail": done.stderr[-500:] if done.returncode else ""}


def run_snapshot_bench(settings: Settings) -> dict[str, Any]:
    """Pick how to run bench_snapshot.py (see benchmarks/README.md) and run it."""
    quick = settings.mode == "quick"
    functions, options = snapshot_bench_interface()
    api_name = next((name for name in SNAPSHOT_API_NAMES if name in functions), None)
    if api_name is not None:
        api = getattr(load_snapshot_bench(), api_name)
        kwargs = {"quick": quick} if "quick" in inspect.signature(api).parameters else {}
        return call_function(api, [], False, kwargs)
    if quick and "--quick" in options:
        args = ["--quick"]
    elif quick and set(settings.snapshot_args[::2]) <= options:
        args = list(settings.snapshot_args)
    elif quick:
        return {"status": "skipped", "reason": "it has neither --quick nor --files/--mb: too slow for --quick"}
    else:
        args = []
    if "main" not in functions:
        if quick and args != ["--quick"]:
            return {"status": "skipped", "reason": "it exposes no function and has no --quick option"}
        return run_as_subprocess(args)
    main = load_snapshot_bench().main
    return call_function(main, args, bool(inspect.signature(main).parameters), {})


def bench_snapshot(settings: Settings) -> dict[str, Any]:
    """Section (d): the other engineer's snapshot benchmark, however it can be run."""
    print("\n== (d) snapshot benchmark (benchmarks/bench_snapshot.py)")
    if SNAPSHOT_BENCH.exists():
        result = run_snapshot_bench(settings)
    else:
        result = {"status": "skipped", "reason": "benchmarks/bench_snapshot.py does not exist"}
    print(f"  status: {result['status']}"
          + (f" ({result.get('how')}, {result['elapsed_s']:.1f} s)" if "elapsed_s" in result else "")
          + (f": {result['reason']}" if "reason" in result else ""))
    sys.stdout.flush()
    return result


# ---------------------------------------------------------------------------------------- cleanup
def stop_leftover_jobs(state: Path) -> list[str]:
    """Cancel local jobs of this benchmark that still run (only after a failure); return their ids."""
    stopped: list[str] = []
    jobs_root = state / "local" / "jobs"
    if not jobs_root.is_dir():
        return stopped
    target = LocalTarget(jobs_root=jobs_root)
    for job_dir in jobs_root.iterdir():
        if (job_dir / job_runner.RUNNER_STATE).exists() and not (job_dir / job_runner.EXIT_STATE).exists():
            handle = JobHandle(LocalTarget.kind, job_dir.name, str(job_dir))
            if target.poll(handle).state == "running":
                target.cancel(handle, grace_seconds=2)
                stopped.append(job_dir.name)
    return stopped


def terminate_open_runs(state: Path) -> list[str]:
    """End every MLflow run of the benchmark's store still RUNNING (only after a failure)."""
    if not (state / "mlflow.db").exists() or "mlflow" not in sys.modules:
        return []
    client = Tracker().client
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    open_runs = client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'",
                                   max_results=1000) if experiment_ids else []
    for run in open_runs:
        client.set_terminated(run.info.run_id, "KILLED")
    return [run.info.run_id for run in open_runs]


def cleanup(work: Path, keep: bool) -> dict[str, Any]:
    """Stop what is left, end open runs, remove the temporary folder."""
    state = work / "state"
    report: dict[str, Any] = {}
    for name, action in (("jobs_stopped", stop_leftover_jobs), ("runs_terminated", terminate_open_runs)):
        try:
            report[name] = action(state)
        except Exception as exc:
            report[name] = f"failed: {exc!r}"
    # Everything the core put in the temporary folder and did not remove itself (see main()).
    scratch = work / "tmp"
    report["temp_leftovers"] = sorted(p.name for p in scratch.iterdir()) if scratch.is_dir() else []
    if keep:
        report["kept"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
        report["removed"] = not work.exists()
    return report


# ---------------------------------------------------------------------------------------- main
def goals(results: dict[str, Any]) -> dict[str, bool | None]:
    """Each goal: True met, False missed, None not measured."""

    def get(*path: str) -> Any:
        node: Any = results
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def check(value: Any, test: Callable[[Any], bool]) -> bool | None:
        return None if value is None else test(value)

    return {
        "submit_added_lt_0.3s": check(get("submit", "current", "added_s"), lambda v: v < GOAL_SUBMIT_ADDED_S),
        "submit_added_pip_cached_lt_0.3s": check(get("submit", "pip", "added_s"), lambda v: v < GOAL_SUBMIT_ADDED_S),
        "relay_over_per_call_ge_40x": check(get("relay", "relay_over_per_call"),
                                            lambda v: v >= GOAL_RELAY_OVER_PER_CALL),
        "relay_over_log_batch_ge_0.8x": check(get("relay", "relay_over_log_batch"),
                                              lambda v: v >= GOAL_RELAY_OVER_BATCH),
        "import_lt_50ms_without_airflow_mlflow": get("import", "goal_met"),
    }


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: runs end, temp folder goes


def main(argv: list[str] | None = None) -> int:
    """Run every section; print the tables and the final JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller N and M (under a minute)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed at the end)")
    parser.add_argument("--check", action="store_true", help="exit with status 2 when a goal is missed")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    work = Path(tempfile.mkdtemp(prefix="bench_core_"))
    saved_env = dict(os.environ)
    os.environ["TRAINING_RUNS_HOME"] = str(work / "state")
    os.environ["TRAINING_RUNS_CACHE"] = str(work / "cache")  # the first submission makes MLflow's schema itself
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
                 EVENTS_FILE_VARIABLE, UPLOADS_DIR_VARIABLE):
        os.environ.pop(name, None)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no "Creating initial MLflow database tables"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # a benchmark must not phone home (nor wait on it)
    # Temporary files of this process and its children go inside the work folder: they are removed
    # with it, and whatever is left there at the end was leaked (reported as temp_leftovers).
    (work / "tmp").mkdir()
    os.environ["TMPDIR"] = str(work / "tmp")
    tempfile.tempdir = str(work / "tmp")

    print(f"bench_core ({settings.mode}): Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"state in {work / 'state'}")
    results: dict[str, Any] = {"mode": settings.mode, "settings": asdict(settings),
                               "python": platform.python_version(), "cpus": os.cpu_count()}
    failed: list[str] = []
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("submit", lambda: bench_submit(work, settings)),
        ("relay", lambda: bench_relay(work, settings)),
        ("import", lambda: bench_import(work, settings)),
        ("snapshot", lambda: bench_snapshot(settings)),
    ]
    try:
        for name, section in sections:
            try:
                results[name] = section()
            except Exception as exc:
                traceback.print_exc()
                print(f"\n== section {name} FAILED: {exc!r}")
                results[name] = {"error": repr(exc)}
                failed.append(name)
        with contextlib.suppress(ImportError):
            import mlflow

            results["mlflow"] = mlflow.__version__
    finally:
        results["cleanup"] = cleanup(work, args.keep)
        tempfile.tempdir = None
        os.environ.clear()
        os.environ.update(saved_env)

    results["goals"] = goals(results)
    results["failed_sections"] = failed
    results["total_s"] = time.perf_counter() - started
    print_table("goals", [(name, {True: "PASS", False: "MISS", None: "n/a"}[ok], "")
                          for name, ok in results["goals"].items()]
                + [("total time", f"{results['total_s']:.1f} s", f"mode {settings.mode}")])
    if results["cleanup"].get("kept"):
        print(f"  kept {results['cleanup']['kept']}")
    if results["cleanup"]["temp_leftovers"]:
        print(f"  temporary files the core left behind (removed now): {results['cleanup']['temp_leftovers']}")
    print(json.dumps(results, default=str))
    if failed:
        return 1
    if args.check and any(ok is False for ok in results["goals"].values()):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
