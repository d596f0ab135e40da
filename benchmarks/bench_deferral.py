"""Benchmark: what a deferrable task adds over a ``BashOperator`` running the same script.

Run from the repository root::

    .venv/bin/python benchmarks/bench_deferral.py                 # 2 s and 20 s scripts, 3 repeats
    .venv/bin/python benchmarks/bench_deferral.py --seconds 2 --repeat 5
    .venv/bin/python benchmarks/bench_deferral.py --profile       # also: where one deferred task's time goes

One DAG per variant and script length, each run with ``dag.test()`` (what ``airflow dags test``
runs), all in one driver process against a throwaway Airflow home and embedded MLflow store:

* ``bash``: ``BashOperator`` running ``python train.py SECONDS`` (the baseline);
* ``ours``: ``SubmitTrainingRunOperator`` running the same script, not deferrable;
* ``deferrable``: the same with ``deferrable=True`` and its default ``defer_after_seconds``.

The variants take turns, after one untimed round (imports, MLflow's store). Reported per script
length: the median wall time of each variant's ``dag.test()``, the time added over ``bash``, and
whether the deferrable task deferred. The last line of stdout is one JSON object with every number.
Goal (issue 14): a deferrable task adds <= 2 s over ``bash``.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("bash", "ours", "deferrable")
GOAL_ADDED_S = 2.0

SCRIPT = """
import sys, time
time.sleep(float(sys.argv[1]))
print("slept", sys.argv[1], flush=True)
"""

DAGS = '''
from datetime import datetime
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from airflow_provider.operators import SubmitTrainingRunOperator

for seconds in {lengths!r}:
    with DAG(f"bash_{{seconds}}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        BashOperator(task_id="train", bash_command=f"{python} {source}/train.py {{seconds}}")
    with DAG(f"ours_{{seconds}}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        SubmitTrainingRunOperator(task_id="train", source_directory="{source}", script="train.py",
                                  arguments=[seconds], poll_interval=1.0)
    with DAG(f"deferrable_{{seconds}}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        SubmitTrainingRunOperator(task_id="train", source_directory="{source}", script="train.py",
                                  arguments=[seconds], poll_interval=1.0, deferrable=True)
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[2.0, 20.0], help="script lengths")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--driver", help=argparse.SUPPRESS)  # internal: the process that runs the DAGs
    options = parser.parse_args()
    if options.driver:
        return _drive(options)
    scratch = Path(tempfile.mkdtemp(prefix="bench_deferral_"))
    try:
        return _run(options, scratch)
    finally:
        if options.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _environment(scratch: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_", "TRAINING_RUNS_"))}
    return {**keep, "AIRFLOW_HOME": str(scratch / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(scratch / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "TRAINING_RUNS_HOME": str(scratch / "state"), "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _run(options: argparse.Namespace, scratch: Path) -> int:
    source = scratch / "src"
    for folder in (source, scratch / "dags", scratch / "airflow", scratch / "state"):
        folder.mkdir()
    (source / "train.py").write_text(SCRIPT)
    lengths = [int(s) if float(s).is_integer() else s for s in options.seconds]
    (scratch / "dags" / "bench_dags.py").write_text(DAGS.format(lengths=lengths, python=sys.executable,
                                                                source=source))
    environment = _environment(scratch)
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=environment, check=True,
                   capture_output=True)
    results = scratch / "results.json"
    command = [sys.executable, __file__, "--driver", str(results), "--repeat", str(options.repeat),
               "--seconds", *map(str, lengths)] + (["--profile"] if options.profile else [])
    with open(scratch / "driver.log", "wb") as log:
        driver = subprocess.run(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
    if driver.returncode != 0 or not results.exists():
        print((scratch / "driver.log").read_text(errors="replace")[-5000:])
        return 1
    data = json.loads(results.read_text())
    _report(data)
    if options.keep:
        print(f"driver log: {scratch / 'driver.log'}")
    print(json.dumps(data))
    return 0 if all(row["goal_met"] for row in data["lengths"].values()) else 2


def _report(data: dict) -> None:
    print(f"dag.test() wall time, median of {data['repeat']} (s); added = variant - bash")
    print(f"{'script':>7} {'bash':>7} {'ours':>7} {'deferr.':>7} {'ours +':>7} {'deferr. +':>9} "
          f"{'deferred':>8} {'goal <= +2 s':>12}")
    for length, row in data["lengths"].items():
        m = row["median_s"]
        print(f"{length + ' s':>7} {m['bash']:7.2f} {m['ours']:7.2f} {m['deferrable']:7.2f} "
              f"{row['added_s']['ours']:+7.2f} {row['added_s']['deferrable']:+9.2f} "
              f"{row['deferred']!s:>8} {'met' if row['goal_met'] else 'MISSED':>12}")
    if data.get("profile"):
        print(data["profile"])


def _drive(options: argparse.Namespace) -> int:
    """Run every DAG with dag.test() in this one process and write the numbers to ``options.driver``."""
    from datetime import datetime, timezone

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    assert not bag.import_errors, bag.import_errors
    lengths = [f"{s:g}" for s in options.seconds]

    def run(dag_id: str) -> tuple[float, bool]:
        triggers = _triggers()
        print(f"=== {dag_id}", flush=True)
        started = time.perf_counter()
        dag_run = bag.dags[dag_id].test(logical_date=datetime.now(timezone.utc))
        seconds = time.perf_counter() - started
        if str(dag_run.state) != "success":
            raise SystemExit(f"{dag_id} ended {dag_run.state}")
        return seconds, _triggers() > triggers

    for variant in VARIANTS:  # untimed: imports, MLflow's store, the first snapshot
        run(f"{variant}_{lengths[0]}")
    times: dict[str, dict[str, list[float]]] = {s: {v: [] for v in VARIANTS} for s in lengths}
    deferred: dict[str, set[bool]] = {s: set() for s in lengths}
    for _ in range(options.repeat):
        for length in lengths:
            for variant in VARIANTS:
                seconds, did_defer = run(f"{variant}_{length}")
                times[length][variant].append(seconds)
                if variant == "deferrable":
                    deferred[length].add(did_defer)
    data: dict = {"repeat": options.repeat, "goal_added_s": GOAL_ADDED_S, "lengths": {}}
    for length in lengths:
        median = {v: statistics.median(times[length][v]) for v in VARIANTS}
        added = {v: median[v] - median["bash"] for v in ("ours", "deferrable")}
        data["lengths"][length] = {
            "median_s": {v: round(median[v], 3) for v in VARIANTS},
            "all_s": {v: [round(t, 3) for t in times[length][v]] for v in VARIANTS},
            "added_s": {v: round(added[v], 3) for v in added},
            "ratio_to_bash": {v: round(median[v] / median["bash"], 3) for v in added},
            "deferred": sorted(deferred[length]) == [True],
            "goal_met": added["deferrable"] <= GOAL_ADDED_S,
        }
    if options.profile:
        data["profile"] = _profile(run, f"deferrable_{lengths[-1]}")
    Path(options.driver).write_text(json.dumps(data))
    return 0


def _triggers() -> int:
    """How many triggers Airflow's database holds: a deferral adds one (no triggerer removes it here)."""
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return int(session.scalar(select(func.count()).select_from(Trigger)) or 0)


def _profile(run: object, dag_id: str) -> str:
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    run(dag_id)  # type: ignore[operator]
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(30)
    return stream.getvalue()


if __name__ == "__main__":
    sys.exit(main())
