"""The multi-worker deployment (``scripts/cluster.sh``): per-task overhead and tracking throughput.

1. **Per-task overhead on the Celery topology**: a DAG of one ``SubmitTrainingRunOperator`` task
   (local target, the tracking server through the ``mlflow_cluster`` connection) running a script
   that sleeps S seconds (default 5), against a DAG of one ``BashOperator`` running the same script;
   the DAG runs alternate, each measured from the run's start to its end as Airflow records them.
   Goal: at most 1.3x.
2. **50 concurrent runs into the PostgreSQL-backed server**: 50 processes each submit a run through
   the core API (``Experiment.submit``, local target) whose script logs M values with ``run.log``;
   metric values per second from the first submit to the last run finalized, against 50 processes
   each sending the same M values with MLflow's own ``log_batch`` (chunks of 1,000) to runs of the
   same server.

Needs root and what ``scripts/components.sh`` installs; starts its own topology (about 2 minutes)
in a temporary folder and stops it at the end. ``--keep`` keeps the folder.

    .venv/bin/python benchmarks/bench_cluster.py [--seconds 5] [--repeat 3] [--runs 50] [--values 500]
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
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from tests.cluster import TRACKING_CONN_ID, Cluster, start_cluster  # noqa: E402

SLEEP_SCRIPT = """
import sys, time
time.sleep(float(sys.argv[1]))
print("slept", sys.argv[1])
"""

LOGGING_SCRIPT = """
import sys
from airflow_provider.core import Run
run = Run.get_context()
for i in range(int(sys.argv[1])):
    run.log("m", i)
"""

DAGS = """
from datetime import datetime
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from airflow_provider.operators import SubmitTrainingRunOperator

with DAG("bench_operator", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SubmitTrainingRunOperator(task_id="train", source_directory={source!r}, script="train.py",
                              arguments=[{seconds!r}], experiment_name="bench_operator",
                              compute_target="training_local", tracking_conn_id={tracking!r}, poll_interval=0.5)

with DAG("bench_bash", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    BashOperator(task_id="train", cwd={source!r}, bash_command="python train.py {seconds}")
"""

# One process of the throughput section: "submit" runs a script through the core API, "batch" sends
# the values with MLflow's own log_batch. Prints the seconds it took.
WORKER = """
import os, sys, time
mode, tracking_uri, source, values = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if mode == "submit":
    from airflow_provider.core import Experiment, ScriptRunConfig
    experiment = Experiment("bench_throughput_submit", tracking_uri=tracking_uri)
    experiment.submit(ScriptRunConfig(source, "train.py", arguments=[str(values)])).wait_for_completion()
else:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("bench_throughput_batch")
    run = client.create_run(experiment.experiment_id)
    now = int(time.time() * 1000)
    metrics = [Metric("m", float(i), now, i) for i in range(values)]
    for start in range(0, values, 1000):
        client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000])
    client.set_terminated(run.info.run_id)
"""


def _dag_run_seconds(cluster: Cluster, dag_id: str) -> tuple[float, float]:
    """Run ``dag_id`` once; the seconds from its DAG run's start to its end, and its task's own
    duration (start to end of the task instance), as Airflow recorded them."""
    run_id = cluster.trigger(dag_id)
    (task,) = cluster.wait_for_dag_run(dag_id, run_id, timeout=600)
    if task["state"] != "success":
        raise RuntimeError(f"{dag_id} ended {task['state']}:\n{cluster.task_logs(dag_id)[-4000:]}")
    deadline = time.monotonic() + 120
    while True:  # the scheduler marks the DAG run ended a moment after its last task
        run = cluster.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
        if run.get("end_date") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    started = datetime.fromisoformat(run["start_date"])
    ended = datetime.fromisoformat(run["end_date"])
    task_seconds = (datetime.fromisoformat(task["end_date"]) - datetime.fromisoformat(task["start_date"]))
    return (ended - started).total_seconds(), task_seconds.total_seconds()


def per_task_overhead(cluster: Cluster, seconds: float, repeat: int) -> dict[str, Any]:
    source = cluster.dags / "bench_sleep"
    source.mkdir(exist_ok=True)
    (source / "train.py").write_text(textwrap.dedent(SLEEP_SCRIPT))
    (cluster.dags / "bench_dags.py").write_text(DAGS.format(source=str(source), seconds=str(seconds),
                                                            tracking=TRACKING_CONN_ID))
    ours: list[tuple[float, float]] = []
    bash: list[tuple[float, float]] = []
    _dag_run_seconds(cluster, "bench_operator")  # warm-up: the first run creates the experiment
    _dag_run_seconds(cluster, "bench_bash")
    for _ in range(repeat):
        ours.append(_dag_run_seconds(cluster, "bench_operator"))
        bash.append(_dag_run_seconds(cluster, "bench_bash"))
    result: dict[str, Any] = {"script_seconds": seconds, "operator_s": ours, "bash_s": bash}
    for index, name in ((0, "dag_run"), (1, "task")):
        result[f"operator_{name}_median_s"] = statistics.median(t[index] for t in ours)
        result[f"bash_{name}_median_s"] = statistics.median(t[index] for t in bash)
        result[f"{name}_ratio"] = result[f"operator_{name}_median_s"] / result[f"bash_{name}_median_s"]
    return result


def _in_parallel(mode: str, count: int, tracking_uri: str, source: Path, values: int,
                 environment: dict[str, str]) -> float:
    started = time.monotonic()
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, mode, tracking_uri, str(source), str(values)],
                                  env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for _ in range(count)]
    errors = [p.communicate()[1] for p in processes]
    failed = [e.decode(errors="replace")[-2000:] for p, e in zip(processes, errors, strict=True) if p.returncode]
    if failed:
        raise RuntimeError(f"{len(failed)} of {count} {mode} processes failed; the first:\n{failed[0]}")
    return time.monotonic() - started


def throughput(cluster: Cluster, runs: int, values: int, folder: Path) -> dict[str, Any]:
    source = folder / "logging_source"
    source.mkdir(exist_ok=True)
    (source / "train.py").write_text(textwrap.dedent(LOGGING_SCRIPT))
    client = cluster.mlflow()
    client.create_experiment("bench_throughput_batch")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINING_RUNS_", "MLFLOW_"))}
    environment.update({"TRAINING_RUNS_HOME": str(folder / "state"), "MLFLOW_TRACKING_USERNAME": "trainer",
                        "MLFLOW_TRACKING_PASSWORD": cluster.secret("MLFLOW_TRAINER_PASSWORD"),
                        "MLFLOW_DISABLE_TELEMETRY": "true"})
    _in_parallel("submit", 1, cluster.tracking_uri(), source, 10, environment)  # warm-up: experiment, caches
    batch_seconds = _in_parallel("batch", runs, cluster.tracking_uri(), source, values, environment)
    submit_seconds = _in_parallel("submit", runs, cluster.tracking_uri(), source, values, environment)
    total = runs * values
    return {"runs": runs, "values_per_run": values, "submit_s": submit_seconds, "log_batch_s": batch_seconds,
            "submit_values_per_s": total / submit_seconds, "log_batch_values_per_s": total / batch_seconds,
            "ratio": batch_seconds / submit_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--values", type=int, default=500)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--only", choices=("per-task", "throughput"), help="run one of the two sections")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    results: dict[str, Any] = {}
    started = time.monotonic()
    cluster = start_cluster(folder / "cluster")
    results["startup_s"] = time.monotonic() - started
    try:
        if options.only != "throughput":
            _print_per_task(results, per_task_overhead(cluster, options.seconds, options.repeat), options)
        if options.only != "per-task":
            _print_throughput(results, throughput(cluster, options.runs, options.values, folder), options)
    finally:
        cluster.stop()
        if not options.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results))
    return 0


def _print_per_task(results: dict[str, Any], overhead: dict[str, Any], options: argparse.Namespace) -> None:
    results["per_task"] = overhead
    print(f"per-task overhead, a {options.seconds:g} s script (median of {options.repeat}; "
          "DAG run start to end, and the task's own duration)")
    for name, label in (("dag_run", "DAG run"), ("task", "task")):
        ratio = overhead[f"{name}_ratio"]
        print(f"  {label:8s} SubmitTrainingRunOperator {overhead[f'operator_{name}_median_s']:.2f} s, "
              f"BashOperator {overhead[f'bash_{name}_median_s']:.2f} s: {ratio:.2f}x "
              f"(goal <= 1.3x: {'met' if ratio <= 1.3 else 'missed'})")
    print(f"  each (DAG run s, task s): operator {overhead['operator_s']}, bash {overhead['bash_s']}")


def _print_throughput(results: dict[str, Any], rate: dict[str, Any], options: argparse.Namespace) -> None:
    results["throughput"] = rate
    print(f"{options.runs} concurrent runs of {options.values} values into the PostgreSQL-backed server")
    print(f"  through the provider (submit, run.log, relay)  {rate['submit_s']:.1f} s  "
          f"{rate['submit_values_per_s']:.0f} values/s")
    print(f"  MLflow's log_batch from {options.runs} processes      {rate['log_batch_s']:.1f} s  "
          f"{rate['log_batch_values_per_s']:.0f} values/s")
    print(f"  provider / log_batch throughput: {rate['ratio']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
