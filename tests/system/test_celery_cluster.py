"""The multi-worker deployment (``scripts/cluster.sh``): Airflow with the CeleryExecutor on PostgreSQL
and Redis, two workers that share no provider state (worker-2 in its own container), and an MLflow
tracking server on PostgreSQL behind basic auth, reached through an ``mlflow`` connection.

What it proves: training tasks spread over both workers with everything in the tracking server; a
task whose worker is SIGKILLed mid-run is retried on the other worker and reattaches to its job (Docker
and SSH targets), the script running once and its metrics neither lost nor doubled; a deferred task
survives a restart of the triggerer; runs logging while the tracking server is down for 30 s complete
with nothing lost or doubled and no task failing; the tracking credentials appear in no task log, XCom, MLflow
param or tag, nor in any file of a worker's state; a wrong password fails the task at once, untried.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import TRACKING_CONN_ID, Cluster, gateway_present, start_cluster
from tests.conftest import skip_or_fail
from tests.helpers import wait_until
from tests.ssh_hosts import container_host

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]  # a topology of a dozen processes on 2 cores

DOCKER_IMAGE = "training-runs/python:3.11"
SSH_WORK_ROOT = "/root/cluster-runs"
SSH_CONTROL = "/root/cluster-control"  # on the SSH host container: executions and go files of its runs
GPU_RESERVATIONS = "/var/tmp/cluster-gpu-reservations.json"  # on the SSH host container
DOCKER_CONTROL = "/control"  # in a Docker target's container: a folder of this machine, bind-mounted

SPREAD_SCRIPT = """
import os, socket
from airflow_provider.core import Run
run = Run.get_context()
for i in range(200):
    run.log("loss", 1.0 / (i + 1))
os.makedirs("outputs", exist_ok=True)
open("outputs/host.txt", "w").write(socket.gethostname())
print("trained on", socket.gethostname(), flush=True)
"""

# Appends its pid to CONTROL/<name>.executions, logs "tick" 0, 1, 2, ... every 0.2 s until
# CONTROL/<name>.go exists, then writes outputs/done.txt with the number of ticks.
TICKING_SCRIPT = """
import os, time
from airflow_provider.core import Run
control = os.environ["CONTROL"]
name = os.environ["RUN_NAME"]
with open(os.path.join(control, name + ".executions"), "a") as out:
    out.write(f"{os.getpid()}\\n")
run = Run.get_context()
ticks = 0
while not os.path.exists(os.path.join(control, name + ".go")) or ticks < 3:
    run.log("tick", ticks)
    print("tick", ticks, flush=True)
    ticks += 1
    if ticks > 9000:
        raise SystemExit("never released")
    time.sleep(0.2)
os.makedirs("outputs", exist_ok=True)
open("outputs/done.txt", "w").write(str(ticks))
"""

# Asks for the SSH host's only GPU: writes when it held it and what it was given, for 8 s (long
# enough for tasks started together to find it taken).
GPU_SCRIPT = """
import json, os, time
started = time.time()
time.sleep(8)
os.makedirs("outputs", exist_ok=True)
json.dump({"start": started, "end": time.time(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")},
          open("outputs/held.json", "w"))
"""

# The load: 500 values of "m" (0..499), an output file; the same script runs under BashOperator
# (the anchor), where Run.get_context() is offline and prints its metrics.
LOAD_SCRIPT = """
import argparse, os
from airflow_provider.core import Run
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.01)
lr = parser.parse_args().lr
run = Run.get_context()
for i in range(500):
    run.log("m", i)
run.log("loss", abs(lr - 0.05))
os.makedirs("outputs", exist_ok=True)
open("outputs/result.txt", "w").write("done")
"""

# The scale is 50 tasks and 20 trials at once (TRAINING_CLUSTER_LOAD=50,20). On the 2 cores CI
# has, 64 Airflow task processes at once starve each other for minutes (each takes ~4 s of CPU to
# start), so the suite runs the same scenario smaller by default.
LOAD_TASKS, SWEEP_TRIALS = (int(n) for n in os.environ.get("TRAINING_CLUSTER_LOAD", "10,4").split(","))

DAGS = """
from datetime import datetime, timedelta
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from airflow_provider.core.hyperdrive import RandomParameterSampling, uniform
from airflow_provider.operators import (
    PlanHyperparameterSweepOperator, SelectBestTrialOperator, SubmitTrainingRunOperator)

TRACKING = {tracking!r}

with DAG("cl_spread", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    for i in range(6):
        SubmitTrainingRunOperator(
            task_id=f"train_{{i}}", source_directory={spread_source!r}, script="train.py",
            experiment_name="cl_spread", compute_target="training_local", tracking_conn_id=TRACKING,
            environment_variables={{"TRAINING_DATA": "s3://bucket/data"}},
        )

with DAG("cl_wrong_password", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SubmitTrainingRunOperator(
        task_id="train", source_directory={spread_source!r}, script="train.py", retries=3,
        retry_delay=timedelta(seconds=1), experiment_name="cl_wrong_password",
        compute_target="training_local", tracking_conn_id="mlflow_wrong_password",
    )

with DAG("cl_embedded_store", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SubmitTrainingRunOperator(
        task_id="train", source_directory={spread_source!r}, script="train.py", retries=3,
        retry_delay=timedelta(seconds=1), experiment_name="cl_embedded_store", compute_target="training_local",
    )

with DAG("cl_load", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_tasks=200):
    for i in range({load_tasks}):
        SubmitTrainingRunOperator(
            task_id=f"train_{{i}}", source_directory={load_source!r}, script="train.py",
            experiment_name="cl_load", compute_target="training_local", tracking_conn_id=TRACKING, poll_interval=1,
        )
    plan = PlanHyperparameterSweepOperator(
        task_id="plan", experiment_name="cl_load_sweep", tracking_conn_id=TRACKING,
        hyperparameter_sampling=RandomParameterSampling({{"--lr": uniform(0.001, 0.1)}}, seed=7),
        max_total_runs={sweep_trials}, primary_metric_name="loss", primary_metric_goal="MINIMIZE",
    )
    trials = SubmitTrainingRunOperator.partial(
        task_id="trial", source_directory={load_source!r}, script="train.py", compute_target="training_local",
        tracking_conn_id=TRACKING, poll_interval=1,
    ).expand(sweep_trial=plan.output)
    trials >> SelectBestTrialOperator(task_id="best", sweep_trials=plan.output, tracking_conn_id=TRACKING)

with DAG("cl_load_bash", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_tasks=200):
    for i in range({load_tasks}):
        # Like the operator's job folder, a copy of the source (the DAGs folder is read-only on worker-2).
        BashOperator(task_id=f"train_{{i}}", bash_command="cd $(mktemp -d) && cp -r {load_source}/. . && "
                     "python train.py > /dev/null && rm -rf $PWD")

def ticking(dag_id, compute_target, control, deferrable=False):
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        SubmitTrainingRunOperator(
            task_id="train", source_directory={ticking_source!r}, script="train.py", retries=2,
            retry_delay=timedelta(seconds=1), experiment_name=dag_id, compute_target=compute_target,
            tracking_conn_id=TRACKING, deferrable=deferrable, poll_interval=1,
            environment_variables={{"CONTROL": control, "RUN_NAME": dag_id}},
        )
    return dag

with DAG("cl_outage", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    for i in range(4):
        SubmitTrainingRunOperator(
            task_id=f"train_{{i}}", source_directory={ticking_source!r}, script="train.py", retries=2,
            retry_delay=timedelta(seconds=1), experiment_name=f"cl_outage_{{i}}", compute_target="cl_docker",
            tracking_conn_id=TRACKING, poll_interval=1,
            environment_variables={{"CONTROL": {docker_control!r}, "RUN_NAME": f"cl_outage_{{i}}"}},
        )

def gpu_tasks(dag_id, pool=None):
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, max_active_tasks=10) as dag:
        for i in range(3):
            SubmitTrainingRunOperator(
                task_id=f"train_{{i}}", source_directory={gpu_source!r}, script="train.py", experiment_name=dag_id,
                compute_target="cl_ssh_gpu", tracking_conn_id=TRACKING, compute_resources={{"gpus": 1}},
                deferrable=True, defer_after_seconds=0, poll_interval=1, system_metrics_interval_seconds=0,
                **({{"pool": pool, "pool_slots": 1}} if pool else {{}}),
            )
    return dag

gpu_pool = gpu_tasks("cl_gpu_pool", pool="cl_gpu")
gpu_queue = gpu_tasks("cl_gpu_queue")

docker_retry = ticking("cl_docker_retry", "cl_docker", {docker_control!r})
ssh_retry = ticking("cl_ssh_retry", "cl_ssh", {ssh_control!r})
deferred_triggerer = ticking("cl_deferred_triggerer", "cl_docker", {docker_control!r}, deferrable=True)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not gateway_present():
        skip_or_fail("no docker network gateway 172.28.0.1 (run scripts/components.sh as root)")
    for command in ("redis-server", "docker"):
        if subprocess.run(["sh", "-c", f"command -v {command}"], capture_output=True).returncode != 0:
            skip_or_fail(f"{command} is not installed (run scripts/components.sh as root)")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        skip_or_fail("PostgreSQL is not installed (run scripts/components.sh as root)")
    folder = tmp_path_factory.mktemp("cluster")
    control = tmp_path_factory.mktemp("cluster-control")
    control.chmod(0o777)
    dags = folder / "dags"
    for name, script in (("spread_source", SPREAD_SCRIPT), ("ticking_source", TICKING_SCRIPT),
                         ("load_source", LOAD_SCRIPT), ("gpu_source", GPU_SCRIPT)):
        (dags / name).mkdir(parents=True)
        (dags / name / "train.py").write_text(textwrap.dedent(script))
    (dags / "cluster_dags.py").write_text(DAGS.format(
        tracking=TRACKING_CONN_ID, spread_source=str(dags / "spread_source"),
        ticking_source=str(dags / "ticking_source"), load_source=str(dags / "load_source"), load_tasks=LOAD_TASKS,
        gpu_source=str(dags / "gpu_source"),
        sweep_trials=SWEEP_TRIALS, docker_control=DOCKER_CONTROL, ssh_control=SSH_CONTROL))
    topology = start_cluster(folder)
    topology.control = control  # type: ignore[attr-defined]
    try:
        topology.add_connection("cl_docker", "training_docker", host="unix:///var/run/docker.sock",
                                extra={"image": DOCKER_IMAGE, "volumes": [f"{control}:{DOCKER_CONTROL}:rw"]})
        ssh_host = container_host()
        if ssh_host is not None:
            topology.add_connection("cl_ssh", "training_ssh", host=ssh_host.host, port=ssh_host.port,
                                    login=ssh_host.username,
                                    extra={"key_file": str(ssh_host.key_path), "host_key": ssh_host.host_public_key,
                                           "work_root": SSH_WORK_ROOT})
            _on_ssh_host(f"rm -rf {SSH_CONTROL} {GPU_RESERVATIONS} && mkdir -p {SSH_CONTROL}")
            # The host declares one GPU: runs that ask for it take turns, whichever worker started them.
            topology.add_connection("cl_ssh_gpu", "training_ssh", host=ssh_host.host, port=ssh_host.port,
                                    login=ssh_host.username,
                                    extra={"key_file": str(ssh_host.key_path), "host_key": ssh_host.host_public_key,
                                           "work_root": SSH_WORK_ROOT, "gpus": "0",
                                           "reservations_file": GPU_RESERVATIONS})
        topology.add_connection("mlflow_wrong_password", "mlflow", host=topology.tracking_uri(), login="trainer",
                                password="not-the-password-0000")
        yield topology
    finally:
        topology.stop()


def _on_ssh_host(command: str) -> str:
    """Run a shell command on the SSH host container; its output."""
    host = container_host()
    assert host is not None
    result = subprocess.run(["docker", "exec", host.name, "sh", "-c", command], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _run_of(cluster: Cluster, experiment: str) -> Any:
    runs = cluster.runs_of(experiment)
    assert len(runs) == 1, f"{experiment}: expected one MLflow run, found {len(runs)}"
    return runs[0]


# ----------------------------------------------------------------------------------- spreading
def test_training_tasks_run_on_both_workers_with_everything_in_the_tracking_server(cluster: Cluster) -> None:
    run_id = cluster.trigger("cl_spread")
    tasks = cluster.wait_for_dag_run("cl_spread", run_id)
    assert {ti["state"] for ti in tasks} == {"success"}, cluster.task_logs("cl_spread")[-6000:]
    assert {cluster.worker_number(ti["hostname"]) for ti in tasks} == {1, 2}, \
        f"every task ran on one worker: {[ti['hostname'] for ti in tasks]}"
    client = cluster.mlflow()
    runs = cluster.runs_of("cl_spread")
    assert len(runs) == 6
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 200
        assert [a.path for a in client.list_artifacts(run.info.run_id, "outputs")] == ["outputs/host.txt"]
    # The tracking credentials reach no task log, XCom, MLflow param or tag, nor any file a worker keeps.
    password = cluster.secret("MLFLOW_TRAINER_PASSWORD")
    assert password not in cluster.task_logs("cl_spread")
    assert password not in cluster.xcom_values("cl_spread", run_id, [ti["task_id"] for ti in tasks])
    for run in runs:
        recorded = f"{run.data.params} {run.data.tags}"
        assert password not in recorded
    leaks = subprocess.run(["grep", "-rlF", password, str(cluster.folder / "worker-1")], capture_output=True,
                           text=True)
    assert leaks.stdout == "", f"the password is in worker-1's files: {leaks.stdout}"
    leaks = subprocess.run(["docker", "exec", cluster.worker2_container, "grep", "-rlF", password,
                            "/var/lib/training-runs", "/root", "/opt/airflow", "/tmp"], capture_output=True, text=True)
    assert leaks.stdout == "", f"the password is in worker-2's files: {leaks.stdout}"


def test_a_wrong_tracking_password_fails_the_task_at_once_without_retries(cluster: Cluster) -> None:
    run_id = cluster.trigger("cl_wrong_password")
    (task,) = cluster.wait_for_dag_run("cl_wrong_password", run_id, timeout=300)
    assert task["state"] == "failed"
    assert task["try_number"] == 1, "a refused login was retried"
    log = cluster.task_logs("cl_wrong_password")
    assert "not-the-password-0000" not in log
    assert "401" in log or "UNAUTHENTICATED" in log or "credentials" in log.lower(), log[-4000:]
    assert cluster.runs_of("cl_wrong_password") == []


def test_the_embedded_store_is_refused_when_tasks_spread_over_machines(cluster: Cluster) -> None:
    """Each worker would have its own SQLite store: a retry elsewhere would run the script again."""
    run_id = cluster.trigger("cl_embedded_store")
    (task,) = cluster.wait_for_dag_run("cl_embedded_store", run_id, timeout=300)
    assert task["state"] == "failed"
    assert task["try_number"] == 1, "a configuration error was retried"
    log = cluster.task_logs("cl_embedded_store")
    assert "tracking_conn_id" in log and "CeleryExecutor" in log and "TRAINING_RUNS_SINGLE_MACHINE=1" in log, \
        log[-4000:]


# ----------------------------------------------------------------------------------- retries
def _executions(cluster: Cluster, name: str, on_ssh_host: bool) -> list[str]:
    if on_ssh_host:
        return _on_ssh_host(f"cat {SSH_CONTROL}/{name}.executions 2>/dev/null || true").split()
    path = cluster.control / f"{name}.executions"  # type: ignore[attr-defined]
    return path.read_text().split() if path.exists() else []


def _release(cluster: Cluster, name: str, on_ssh_host: bool) -> None:
    if on_ssh_host:
        _on_ssh_host(f"touch {SSH_CONTROL}/{name}.go")
    else:
        (cluster.control / f"{name}.go").write_text("go")  # type: ignore[attr-defined]


def _ticks(cluster: Cluster, experiment: str) -> list[float]:
    with contextlib.suppress(AssertionError, Exception):
        run = _run_of(cluster, experiment)
        return [m.value for m in cluster.mlflow().get_metric_history(run.info.run_id, "tick")]
    return []


def _assert_reattached_after_worker_death(cluster: Cluster, dag_id: str, on_ssh_host: bool) -> None:
    run_id = cluster.trigger(dag_id)
    first = cluster.wait_for_task(dag_id, run_id, "train", {"running"}, where=lambda t: t.get("hostname"))
    wait_until(lambda: len(_ticks(cluster, dag_id)) >= 5, timeout=240, message=f"{dag_id}'s ticks in MLflow")
    killed = cluster.worker_number(first["hostname"])
    cluster.kill_worker(killed)
    try:
        retry = cluster.wait_for_task(dag_id, run_id, "train", {"running"}, timeout=300,
                                      where=lambda t: t["try_number"] >= 2 and t.get("hostname"))
        assert cluster.worker_number(retry["hostname"]) != killed
        before = len(_ticks(cluster, dag_id))
        wait_until(lambda: len(_ticks(cluster, dag_id)) > before + 3, timeout=120,
                   message="the retry to relay new ticks")
        _release(cluster, dag_id, on_ssh_host)
        (task,) = cluster.wait_for_dag_run(dag_id, run_id, timeout=300)
        assert task["state"] == "success", cluster.task_logs(dag_id)[-6000:]
    finally:
        cluster.start_worker(killed)
    assert len(_executions(cluster, dag_id, on_ssh_host)) == 1, "the script ran more than once"
    run = _run_of(cluster, dag_id)
    assert run.info.status == "FINISHED"
    ticks = _ticks(cluster, dag_id)
    assert sorted(ticks) == [float(i) for i in range(len(ticks))], "ticks lost or doubled"
    client = cluster.mlflow()
    done = client.download_artifacts(run.info.run_id, "outputs/done.txt", str(cluster.folder / dag_id))
    assert int(Path(done).read_text()) == len(ticks)


def test_a_docker_task_whose_worker_dies_is_retried_on_the_other_worker_and_reattaches(cluster: Cluster) -> None:
    _assert_reattached_after_worker_death(cluster, "cl_docker_retry", on_ssh_host=False)
    import docker

    client = docker.from_env()
    run = _run_of(cluster, "cl_docker_retry")
    left = client.containers.list(all=True, filters={"label": f"training.run_id={run.info.run_id}"})
    assert left == [], f"containers left: {[c.name for c in left]}"


def test_an_ssh_task_whose_worker_dies_is_retried_on_the_other_worker_and_reattaches(cluster: Cluster) -> None:
    if container_host() is None:
        skip_or_fail("no SSH host container at 172.28.0.10:22 (run scripts/components.sh as root)")
    _assert_reattached_after_worker_death(cluster, "cl_ssh_retry", on_ssh_host=True)
    run_id = _run_of(cluster, "cl_ssh_retry").info.run_id

    def left_on_the_host() -> list[str]:  # the job's processes, and the agents of both workers' connections
        listing = _on_ssh_host(f"ps -eo pid,args | grep -F -e {SSH_WORK_ROOT} -e {run_id} | grep -v grep || true")
        return [line.strip() for line in listing.splitlines() if line.strip()]

    # The killed worker's connection is gone with it (sshd ends its session); the retry's with its task.
    try:
        wait_until(lambda: not left_on_the_host(), timeout=60, message="the run's processes to end on the SSH host")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; left: {left_on_the_host()}") from None
    assert _on_ssh_host(f"ls -d {SSH_WORK_ROOT}/jobs/{run_id} 2>/dev/null || true").strip() == "", \
        "the job folder was left on the SSH host"


def test_a_deferred_task_survives_a_restart_of_the_triggerer(cluster: Cluster) -> None:
    dag_id = "cl_deferred_triggerer"
    run_id = cluster.trigger(dag_id)
    cluster.wait_for_task(dag_id, run_id, "train", {"deferred"}, timeout=300)
    wait_until(lambda: len(_ticks(cluster, dag_id)) >= 5, timeout=240, message=f"{dag_id}'s ticks in MLflow")
    cluster.restart("triggerer")
    before = len(_ticks(cluster, dag_id))
    wait_until(lambda: len(_ticks(cluster, dag_id)) > before + 3, timeout=240,
               message="the restarted triggerer to relay new ticks")
    _release(cluster, dag_id, on_ssh_host=False)
    (task,) = cluster.wait_for_dag_run(dag_id, run_id, timeout=300)
    assert task["state"] == "success", cluster.task_logs(dag_id)[-6000:]
    assert len(_executions(cluster, dag_id, on_ssh_host=False)) == 1
    ticks = _ticks(cluster, dag_id)
    assert sorted(ticks) == [float(i) for i in range(len(ticks))], "ticks lost or doubled"


# ----------------------------------------------------------------------------------- GPU hosts
def _overlap(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(ordered))


def _held(cluster: Cluster, dag_id: str) -> list[dict[str, Any]]:
    client = cluster.mlflow()
    held = []
    for run in cluster.runs_of(dag_id):
        with tempfile.TemporaryDirectory() as scratch:
            path = client.download_artifacts(run.info.run_id, "outputs/held.json", scratch)
            held.append({**json.loads(Path(path).read_text()), "run_id": run.info.run_id})
    return held


def _task_interval(task: dict[str, Any]) -> tuple[float, float]:
    from datetime import datetime

    start, end = (datetime.fromisoformat(task[name]).timestamp() for name in ("start_date", "end_date"))
    return start, end


def _gpu_dag(cluster: Cluster, dag_id: str, watch: Any = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if container_host() is None:
        skip_or_fail("no SSH host container at 172.28.0.10:22 (run scripts/components.sh as root)")
    run_id = cluster.trigger(dag_id)
    if watch is not None:  # called every 0.3 s until every task has ended
        ended = {"success", "failed", "upstream_failed", "skipped"}

        def done() -> bool:
            watch()
            tasks = cluster._answered(lambda: cluster.task_instances(dag_id, run_id))
            time.sleep(0.3)
            return bool(tasks) and all(ti["state"] in ended for ti in tasks)

        wait_until(done, timeout=600, message=f"every task of {dag_id} to end")
    tasks = cluster.wait_for_dag_run(dag_id, run_id, timeout=600)
    assert {ti["state"] for ti in tasks} == {"success"}, cluster.task_logs(dag_id)[-6000:]
    held = _held(cluster, dag_id)
    assert len(held) == 3 and {h["cuda"] for h in held} == {"0"}
    # The host's reservation is the guarantee: never two runs on its one GPU, with a pool or without.
    assert not _overlap([(h["start"], h["end"]) for h in held]), held
    ledger = json.loads(_on_ssh_host(f"cat {GPU_RESERVATIONS}") or "{}")
    assert ledger.get("holders", {}) == {}, f"a reservation was left: {ledger}"
    return tasks, held


def _waited_on_the_host(cluster: Cluster, held: list[dict[str, Any]]) -> list[bool]:
    """Per run: whether it waited Queued on the host for the GPU (its driver log's first line)."""
    client = cluster.mlflow()
    waited = []
    for entry in held:
        with tempfile.TemporaryDirectory() as scratch:
            log = Path(client.download_artifacts(entry["run_id"], "system_logs/driver.log", scratch)).read_text()
        assert "GPUs 0 reserved" in log, log[:2000]
        waited.append("reserved after waiting" in log)
    return waited


def test_a_pool_counting_deferred_tasks_holds_a_slot_while_a_gpu_run_is_watched(cluster: Cluster) -> None:
    response = cluster.api.post("/api/v2/pools", json={"name": "cl_gpu", "slots": 1, "include_deferred": True,
                                                       "description": "the SSH host's one GPU"})
    assert response.status_code in (200, 201, 409), response.text
    seen: list[dict[str, Any]] = []

    def watch() -> None:
        answer = cluster.api.get("/api/v2/pools/cl_gpu")
        if answer.status_code == 200:
            seen.append(answer.json())

    _gpu_dag(cluster, "cl_gpu_pool", watch)  # the runs never held the GPU at once (the host's reservation)
    # A deferred task, whose run holds the GPU, keeps the pool's slot: the pool has no open slot
    # while it waits. (Airflow may still admit a second task around a deferred task's resumption,
    # seen once here as 2 occupied slots of 1: the host's reservation is the guarantee, not the pool.)
    deferred = [p for p in seen if p["deferred_slots"] >= 1]
    assert deferred, f"no task was seen deferred: nothing was tested ({len(seen)} samples)"
    assert all(p["open_slots"] == 0 and p["occupied_slots"] >= 1 for p in deferred), deferred


def test_without_a_pool_gpu_tasks_start_together_and_their_runs_take_turns_on_the_host(cluster: Cluster) -> None:
    tasks, held = _gpu_dag(cluster, "cl_gpu_queue")
    assert _overlap([_task_interval(ti) for ti in tasks]), "the tasks never ran at once: nothing was tested"
    assert any(_waited_on_the_host(cluster, held)), "no run waited Queued for the GPU"


# ----------------------------------------------------------------------------------- outage
def test_runs_complete_through_a_tracking_server_outage(cluster: Cluster) -> None:
    names = [f"cl_outage_{i}" for i in range(4)]
    run_id = cluster.trigger("cl_outage")
    wait_until(lambda: all(len(_ticks(cluster, name)) >= 5 for name in names), timeout=400,
               message="every run's ticks in MLflow")
    cluster.script("kill", "mlflow")
    outage_started = time.monotonic()
    # The scenario is an outage of 30 s: the runs keep logging meanwhile.
    time.sleep(30)
    cluster.script("start", "mlflow")
    print(f"tracking server down for {time.monotonic() - outage_started:.1f} s")
    counts = {name: len(_ticks(cluster, name)) for name in names}
    wait_until(lambda: all(len(_ticks(cluster, name)) > counts[name] + 3 for name in names), timeout=300,
               message="every run's ticks to reach MLflow again")
    for name in names:
        _release(cluster, name, on_ssh_host=False)
    tasks = cluster.wait_for_dag_run("cl_outage", run_id, timeout=400)
    assert {ti["state"] for ti in tasks} == {"success"}, cluster.task_logs("cl_outage")[-6000:]
    assert {ti["try_number"] for ti in tasks} == {1}, "a task failed during the outage and was retried"
    for name in names:
        assert len(_executions(cluster, name, on_ssh_host=False)) == 1
        ticks = _ticks(cluster, name)
        assert sorted(ticks) == [float(i) for i in range(len(ticks))], f"{name}: ticks lost or doubled"
        assert _run_of(cluster, name).info.status == "FINISHED"


# ----------------------------------------------------------------------------------- load
def _wall_seconds(tasks: list[dict[str, Any]]) -> float:
    """From the first task's start to the last task's end."""
    from datetime import datetime

    starts = [datetime.fromisoformat(ti["start_date"]) for ti in tasks if ti.get("start_date")]
    ends = [datetime.fromisoformat(ti["end_date"]) for ti in tasks if ti.get("end_date")]
    return (max(ends) - min(starts)).total_seconds()


def test_many_training_tasks_and_a_mapped_sweep_at_once_lose_nothing(cluster: Cluster) -> None:
    run_id = cluster.trigger("cl_load")
    tasks = cluster.wait_for_dag_run("cl_load", run_id, timeout=1500)
    failed = sorted((ti["task_id"], ti["map_index"]) for ti in tasks if ti["state"] != "success")
    assert not failed, f"{failed}\n{cluster.task_logs('cl_load')[-6000:]}"
    assert len(tasks) == LOAD_TASKS + 1 + SWEEP_TRIALS + 1
    assert {cluster.worker_number(ti["hostname"]) for ti in tasks} == {1, 2}
    load_seconds = _wall_seconds([ti for ti in tasks if ti["task_id"].startswith("train_")])
    client = cluster.mlflow()
    runs = cluster.runs_of("cl_load")
    assert len(runs) == LOAD_TASKS
    sweep_runs = cluster.runs_of("cl_load_sweep")
    trials = [r for r in sweep_runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(trials) == SWEEP_TRIALS and len(sweep_runs) == SWEEP_TRIALS + 1
    for run in [*runs, *trials]:
        assert run.info.status == "FINISHED" and run.data.tags.get("training.state") == "Completed", run.info.run_id
        values = sorted(m.value for m in client.get_metric_history(run.info.run_id, "m"))
        assert values == [float(i) for i in range(500)], f"{run.info.run_id}: {len(values)} values"
        assert [a.path for a in client.list_artifacts(run.info.run_id, "outputs")] == ["outputs/result.txt"]
    (parent,) = [r for r in sweep_runs if not r.data.tags.get("mlflow.parentRunId")]
    assert cluster.mlflow().get_run(parent.info.run_id).data.tags.get("training.sweep.best_run_id") in {
        t.info.run_id for t in trials}
    # The anchor: the same 50 scripts as plain BashOperator tasks on the same topology.
    bash_run = cluster.trigger("cl_load_bash")
    bash_tasks = cluster.wait_for_dag_run("cl_load_bash", bash_run, timeout=1200)
    assert {ti["state"] for ti in bash_tasks} == {"success"}
    bash_seconds = _wall_seconds(bash_tasks)
    print(f"\n{LOAD_TASKS} training tasks (with a {SWEEP_TRIALS}-trial sweep beside them): {load_seconds:.1f} s; "
          f"{LOAD_TASKS} BashOperator tasks: {bash_seconds:.1f} s; ratio {load_seconds / bash_seconds:.2f}x")
