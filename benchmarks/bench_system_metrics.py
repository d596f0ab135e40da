"""Benchmark: what sampling system metrics costs a CPU-bound run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_system_metrics.py              # ~30 s of work, 3 rounds
    .venv/bin/python benchmarks/bench_system_metrics.py --seconds 10 --rounds 5
    .venv/bin/python benchmarks/bench_system_metrics.py --check      # exit 2 when the goal is missed

One script does a fixed amount of pure-Python work (calibrated here to take ``--seconds``) and
reports how long its loop took (``time.perf_counter``, so start-up is not counted). Each round runs
it, interleaved, as a bare ``python`` process (the baseline), as a local-target run with system
metrics off, at the default interval (10 s) and at a 1 s interval (ten times the samples, to show
the cost per sample above the noise). Medians of the loop times are compared. The sampler's own cost
per sample is also measured directly (``timeit`` of one sample written to a file) and given as a
share of one CPU at each interval. Goal: metrics at 10 s cost at most 1 % of the loop time.
The last line of stdout is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORK_SCRIPT = """
import os, sys, time
rounds = int(sys.argv[1])
started = time.perf_counter()
total = 0
for _ in range(rounds):
    total += sum(i * i for i in range(10000))
elapsed = time.perf_counter() - started
print(f"loop_seconds={elapsed!r}", flush=True)
if os.environ.get("TRAINING_RUN_EVENTS_FILE"):
    from airflow_provider.core import Run
    Run.get_context().log("loop_seconds", elapsed)
"""
GOAL = 1.01


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the script's work takes here")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench_system_metrics_"))
    os.environ["TRAINING_RUNS_HOME"] = str(scratch / "state")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):
        os.environ.pop(name, None)
    try:
        result = _run(options, scratch)
    finally:
        if not options.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result))
    return 2 if options.check and not result["goal_met"] else 0


def _bare(script: Path, rounds: int) -> float:
    output = subprocess.run([sys.executable, str(script), str(rounds)], capture_output=True, text=True, check=True)
    return float(output.stdout.split("loop_seconds=")[1].split()[0])


def _run(options: argparse.Namespace, scratch: Path) -> dict[str, object]:
    from airflow_provider.core import Experiment, ScriptRunConfig
    from airflow_provider.runtime.system_metrics import SystemMetricsSampler

    source = scratch / "src"
    source.mkdir()
    script = source / "train.py"
    script.write_text(WORK_SCRIPT)
    probe = _bare(script, 400)  # long enough for the CPU's clock to settle as it will in the runs
    rounds = max(1, int(400 * options.seconds / probe))
    print(f"calibrated: {rounds} rounds of work ~ {options.seconds:g}s", flush=True)
    experiment = Experiment("bench-system-metrics")
    variants = {"bare python": None, "run, metrics off": 0, "run, metrics every 10s": 10, "run, metrics every 1s": 1}
    loops: dict[str, list[float]] = {name: [] for name in variants}
    samples: dict[str, list[int]] = {name: [] for name in variants}
    for round_index in range(options.rounds):
        for name, interval in variants.items():
            if interval is None:
                loops[name].append(_bare(script, rounds))
                continue
            run = experiment.submit(ScriptRunConfig(source, "train.py", arguments=[rounds],
                                                    system_metrics_interval_seconds=interval))
            assert run.wait_for_completion()["status"] == "Completed"
            client = experiment.tracker.client
            loops[name].append(client.get_run(run.id).data.metrics["loop_seconds"])
            history = client.get_metric_history(run.id, "system/cpu_utilization_percentage")
            samples[name].append(len(history))
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {v[-1]:.2f}s" for n, v in loops.items()), flush=True)

    # The sampler's own cost: one sample (read /proc, encode 8 lines, one write), measured alone.
    events = scratch / "sampler-events.jsonl"
    sampler = SystemMetricsSampler(str(events), 3600, env={"CUDA_VISIBLE_DEVICES": ""})
    sampler.start()
    per_sample = min(timeit.repeat(sampler._write_sample, number=500, repeat=5)) / 500
    sampler.stop(final_sample=False)

    median = {name: statistics.median(values) for name, values in loops.items()}
    off = median["run, metrics off"]
    ratios = {
        "metrics_10s_vs_off": median["run, metrics every 10s"] / off,
        "metrics_1s_vs_off": median["run, metrics every 1s"] / off,
        "metrics_off_vs_bare": off / median["bare python"],
        "metrics_10s_vs_bare": median["run, metrics every 10s"] / median["bare python"],
    }
    share = {"10s": per_sample / 10, "1s": per_sample / 1}
    print()
    print(f"{'variant':<26} {'median loop (s)':>16} {'all (s)':>24} {'samples':>10}")
    for name in variants:
        print(f"{name:<26} {median[name]:>16.3f} {', '.join(f'{v:.2f}' for v in loops[name]):>24} "
              f"{','.join(str(s) for s in samples[name]) or '-':>10}")
    print()
    for name, value in ratios.items():
        print(f"{name:<24} {value:.4f}")
    print(f"one sample: {per_sample * 1e6:.0f} us; one CPU's share at 10 s: {share['10s'] * 100:.4f} %, "
          f"at 1 s: {share['1s'] * 100:.4f} %")
    goal_met = ratios["metrics_10s_vs_off"] <= GOAL
    print(f"goal metrics at 10 s <= {GOAL:g}x the loop without: {'met' if goal_met else 'MISSED'}")
    return {"seconds": options.seconds, "rounds": options.rounds, "work_rounds": rounds,
            "loops": loops, "median": median, "samples": samples, "ratios": ratios,
            "sample_seconds": per_sample, "cpu_share": share, "goal": GOAL, "goal_met": goal_met,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S")}


if __name__ == "__main__":
    sys.exit(main())
