"""Benchmark: wall time of a hyperparameter sweep against the ideal schedule.

Run from the repository root::

    .venv/bin/python benchmarks/bench_sweep.py            # 20 trials of 1 s at concurrency 2
    .venv/bin/python benchmarks/bench_sweep.py --trials 10 --seconds 0.5 --concurrency 2
    .venv/bin/python benchmarks/bench_sweep.py --profile   # also print where the driver's time goes

A random sweep on the local target, against a throwaway embedded MLflow store, whose trials each
``time.sleep(seconds)`` and log one metric. The baseline is the ideal: ``trials * seconds /
concurrency`` (every slot busy sleeping all the time). Also reported: the same ideal from the
trials' own measured durations (process start to end, Python start-up included), the overhead
per trial, and the largest number of trials that ran at once (from the trials' own start and end
times). The last line of stdout is one JSON object with every number. Goal: ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRIAL_SCRIPT = """
import argparse, json, os, time
started = time.time()
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
args = parser.parse_args()
from airflow_provider.core import Run
time.sleep(float(os.environ["TRIAL_SECONDS"]))
Run.get_context().log("score", args.lr)
ended = time.time()
with open(os.environ["TRIAL_TIMES"], "a") as out:
    out.write(json.dumps({"start": started, "end": ended}) + "\\n")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    os.environ["TRAINING_RUNS_HOME"] = str(scratch / "state")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        return _run(options, scratch)
    finally:
        if not options.keep:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(options: argparse.Namespace, scratch: Path) -> int:
    from airflow_provider.core import Experiment, ScriptRunConfig
    from airflow_provider.core.hyperdrive import HyperDriveConfig, RandomParameterSampling, uniform

    source = scratch / "src"
    source.mkdir()
    (source / "train.py").write_text(TRIAL_SCRIPT)
    times = scratch / "times.jsonl"
    config = HyperDriveConfig(
        ScriptRunConfig(source, "train.py", environment_variables={
            "TRIAL_SECONDS": str(options.seconds), "TRIAL_TIMES": str(times)}),
        RandomParameterSampling({"--lr": uniform(0.0, 1.0)}, seed=1),
        "score", "maximize", max_total_runs=options.trials, max_concurrent_runs=options.concurrency,
    )
    experiment = Experiment("bench-sweep")
    experiment.tracker.experiment_id("warm-up")  # MLflow's import and store creation are not the sweep's
    profiler = cProfile.Profile() if options.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    run = experiment.submit(config)
    details = run.wait_for_completion()
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - started
    spans = [json.loads(line) for line in times.read_text().splitlines()]
    ideal = options.trials * options.seconds / options.concurrency
    measured_ideal = sum(s["end"] - s["start"] for s in spans) / options.concurrency
    events = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    result = {
        "trials": options.trials, "seconds": options.seconds, "concurrency": options.concurrency,
        "completed": sum(t["status"] == "Completed" for t in details["trials"]),
        "wall_s": round(wall, 3), "ideal_s": round(ideal, 3), "ratio": round(wall / ideal, 3),
        "ideal_from_trial_durations_s": round(measured_ideal, 3),
        "ratio_to_trial_durations": round(wall / measured_ideal, 3),
        "overhead_per_trial_s": round((wall - ideal) * options.concurrency / options.trials, 3),
        "peak_concurrent_trials": peak, "goal_ratio": 1.2,
    }
    print(f"{options.trials} trials x {options.seconds:g} s at concurrency {options.concurrency}: "
          f"{wall:.2f} s vs ideal {ideal:.2f} s = {wall / ideal:.3f}x "
          f"(vs the trials' own durations: {wall / measured_ideal:.3f}x); peak concurrency {peak}")
    if profiler:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(45)
        print(stream.getvalue())
    print(json.dumps(result))
    return 0 if result["completed"] == options.trials and peak <= options.concurrency else 1


if __name__ == "__main__":
    sys.exit(main())
