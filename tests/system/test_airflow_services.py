"""Against a real Airflow (scheduler, triggerer, dag-processor, API server: ``airflow standalone``).

Proves what ``dag.test()`` cannot: a deferred task is watched by the real triggerer; a try whose
worker process is SIGKILLed is retried and the retry reattaches to the job that outlived it (the
script's side effect happens once); marking a running or a deferred task failed in Airflow stops
the job's whole process tree and the MLflow run ends Canceled. The last two also for the Docker
target (a ``training_docker`` connection in the standalone's environment): the container is stopped,
what the script wrote is collected by the detached finalizer and the container is removed; and for
the SSH target against the SSH host container (a ``training_ssh`` connection, in the environment
only when that host answers): no process of the job remains on the remote host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

import airflow_provider
from tests.conftest import skip_or_fail
from tests.helpers import pid_alive, stop_process_tree, wait_until
from tests.ssh_hosts import SLURM_SHARED, SSHHost, container_host, restore_host_key, slurm_login
from tests.system.airflow_api import api_call, trigger_dag

pytestmark = pytest.mark.slow

SCRIPT = """
import os, sys, time
from airflow_provider.core import Run
control = os.environ["CONTROL_DIR"]
name = os.environ["RUN_NAME"]
run = Run.get_context()
with open(os.path.join(control, name + ".executions"), "a") as out:
    out.write(f"{os.getpid()}\\n")
for i in range(10_000):
    run.log("tick", i)
    print("tick", i, flush=True)
    if os.path.exists(os.path.join(control, name + ".go")) and i >= 3:
        break
    time.sleep(0.2)
os.makedirs("outputs", exist_ok=True)
open("outputs/done.txt", "w").write(name)
"""

# Runs in a container, which sees none of this machine's files: the test knows it runs from the
# "tick" metrics reaching MLflow, and stops it by marking the task failed.
DOCKER_SCRIPT = """
import os, time
from airflow_provider.core import Run
run = Run.get_context()
os.makedirs("outputs", exist_ok=True)
open("outputs/started.txt", "w").write(os.environ["RUN_NAME"])
for i in range(1500):
    run.log("tick", i)
    print("tick", i, flush=True)
    time.sleep(0.2)
"""

# A sweep's trial: --trial N; it loops until CONTROL_DIR/<dag>_<N>.go exists (trials listed in
# QUICK_TRIALS end after 4 ticks by themselves).
SWEEP_SCRIPT = """
import argparse, os, time
from airflow_provider.core import Run
parser = argparse.ArgumentParser()
parser.add_argument("--trial", type=int)
trial = parser.parse_args().trial
control = os.environ["CONTROL_DIR"]
name = f"{os.environ['RUN_NAME']}_{trial}"
quick = str(trial) in os.environ.get("QUICK_TRIALS", "").split(",")
run = Run.get_context()
with open(os.path.join(control, name + ".executions"), "a") as out:
    out.write(f"{os.getpid()}\\n")
for i in range(10_000):
    run.log("tick", i)
    if i >= 3 and (quick or os.path.exists(os.path.join(control, name + ".go"))):
        break
    time.sleep(0.2)
"""

# Prints a secret whose name Airflow does not take for a secret; a deferred run (WAIT_FOR_GO) keeps
# printing it while the triggerer streams its output, then it fails, so the error shows its log tail.
SECRET_SCRIPT = """
import os, sys, time
from airflow_provider.core import Run
run = Run.get_context()
print("secret1:", os.environ["DB_CONN_STR"], flush=True)
if os.environ.get("WAIT_FOR_GO"):
    go = os.path.join(os.environ["CONTROL_DIR"], os.environ["RUN_NAME"] + ".go")
    for i in range(10_000):
        run.log("tick", i)
        print("still:", os.environ["DB_CONN_STR"], flush=True)
        if os.path.exists(go) and i >= 3:
            break
        time.sleep(0.2)
print("secret2:", os.environ["DB_CONN_STR"], flush=True)
sys.exit(1)
"""
SECRET_VALUE = "postgres://u:Pw-Alpha-7731@db/x"

# Over about when the triggerer starts the trigger of a task that defers at once: the trigger would
# fire at its start but for the scheduler race (see airflow_provider.triggers.training_run).
QUICK_SCRIPT = """
import time
from airflow_provider.core import Run
Run.get_context().log("tick", 0)
time.sleep(2)
print("done", flush=True)
"""

DOCKER_CONN_ID = "svc_docker"
DOCKER_URL = "unix:///var/run/docker.sock"
DOCKER_IMAGE = "training-runs/python:3.11"

SSH_CONN_ID = "svc_ssh"
SSH_WORK_ROOT = "/root/svc-runs"

SLURM_CONN_ID = "svc_slurm"
SLURM_LOGIN_ADDRESS = "172.28.0.40"

DAG_TEMPLATE = """
from datetime import datetime, timedelta
from airflow.sdk import DAG
from airflow_provider.core.hyperdrive import GridParameterSampling, choice
from airflow_provider.operators import HyperparameterSweepOperator, SubmitTrainingRunOperator

def training_dag(dag_id, deferrable, retries=0, compute_target="local", source={source!r},
                 defer_after_seconds=5.0, control_dir={control!r}):
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        SubmitTrainingRunOperator(
            task_id="train", source_directory=source, script="train.py", deferrable=deferrable,
            defer_after_seconds=defer_after_seconds,
            poll_interval=1, retries=retries, retry_delay=timedelta(seconds=1), experiment_name=dag_id,
            environment_variables={{"CONTROL_DIR": control_dir, "RUN_NAME": dag_id}},
            compute_target=compute_target,
        )
    return dag

deferred_success = training_dag("svc_deferred_success", True)
deferred_kill = training_dag("svc_deferred_kill", True)
deferred_quick_end = training_dag("svc_deferred_quick_end", True, source={quick_source!r}, defer_after_seconds=0)
running_kill = training_dag("svc_running_kill", False)
reattach = training_dag("svc_reattach", False, retries=1)
docker_deferred_kill = training_dag("svc_docker_deferred_kill", True, compute_target={docker_conn!r},
                                    source={docker_source!r})
docker_running_kill = training_dag("svc_docker_running_kill", False, compute_target={docker_conn!r},
                                   source={docker_source!r})
ssh_deferred_kill = training_dag("svc_ssh_deferred_kill", True, compute_target={ssh_conn!r},
                                 source={docker_source!r})
ssh_running_kill = training_dag("svc_ssh_running_kill", False, compute_target={ssh_conn!r},
                                source={docker_source!r})
slurm_reattach = training_dag("svc_slurm_reattach", False, retries=1, compute_target={slurm_conn!r},
                              control_dir={slurm_control!r})
slurm_deferred_kill = training_dag("svc_slurm_deferred_kill", True, compute_target={slurm_conn!r},
                                   control_dir={slurm_control!r})

def secret_dag(dag_id, deferrable, compute_target="local"):
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        SubmitTrainingRunOperator(
            task_id="train", source_directory={secret_source!r}, script="train.py", deferrable=deferrable,
            poll_interval=1, experiment_name=dag_id, compute_target=compute_target,
            environment_variables={{"CONTROL_DIR": {control!r}, "RUN_NAME": dag_id,
                                    "WAIT_FOR_GO": "1" if deferrable else ""}},
            secret_environment_variables={{"DB_CONN_STR": {secret!r}}},
        )
    return dag

secret_local = secret_dag("svc_secret_local", False)
secret_deferred = secret_dag("svc_secret_deferred", True)
secret_docker = secret_dag("svc_secret_docker", False, compute_target={docker_conn!r})

def sweep_dag(dag_id, concurrent, quick="", retries=0):
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        HyperparameterSweepOperator(
            task_id="train", source_directory={sweep_source!r}, script="train.py", retries=retries,
            retry_delay=timedelta(seconds=1), experiment_name=dag_id,
            environment_variables={{"CONTROL_DIR": {control!r}, "RUN_NAME": dag_id, "QUICK_TRIALS": quick}},
            hyperparameter_sampling=GridParameterSampling({{"--trial": choice(0, 1, 2)}}),
            primary_metric_name="tick", primary_metric_goal="MAXIMIZE", max_concurrent_runs=concurrent,
        )
    return dag

sweep_kill = sweep_dag("svc_sweep_kill", 2)
sweep_reattach = sweep_dag("svc_sweep_reattach", 1, quick="0,2", retries=1)
"""


@dataclass
class Airflow:
    home: Path
    control: Path
    api: httpx.Client
    ssh_host: SSHHost | None = None  # the SSH host container, when connection svc_ssh points at it
    slurm_control: Path | None = None  # CONTROL_DIR of the Slurm DAG, here, when the cluster answers

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return api_call(self.api, method, path, **kwargs)

    def trigger(self, dag_id: str) -> str:
        return trigger_dag(self.api, dag_id)

    def task(self, dag_id: str, run_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/train")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_for_task(self, dag_id: str, run_id: str, states: set[str], timeout: float = 120) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def reached() -> bool:
            found.update(self.task(dag_id, run_id))
            return found.get("state") in states

        wait_until(reached, timeout=timeout, message=f"{dag_id} task in {states}")
        return found

    def mark(self, dag_id: str, run_id: str, state: str) -> None:
        response = self.call("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/train",
                             json={"new_state": state})
        assert response.status_code == 200, response.text

    def executions(self, name: str, control: Path | None = None) -> list[int]:
        path = (control or self.control) / f"{name}.executions"
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def mlflow(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.home / 'training_runs' / 'mlflow.db'}")

    def ticks(self, experiment: str) -> int:
        """How many "tick" values of the experiment's run have reached MLflow."""
        with contextlib.suppress(AssertionError, ValueError):
            return len(self.mlflow().get_metric_history(self.run_of(experiment).info.run_id, "tick"))
        return 0

    def trigger_is_relaying(self, experiment: str, since: int = 0) -> bool:
        """True once ticks beyond ``since`` reach MLflow. Counted from when the task is deferred,
        only the trigger relays them; the task itself relays what came before it deferred (a job
        that starts fast has ticks then, and marking the task failed before the triggerer has
        picked up the trigger stops nothing: Airflow calls no on_kill in that window)."""
        return self.ticks(experiment) >= since + 2

    def sweep_runs(self, experiment: str) -> tuple[Any, dict[int, Any]]:
        """The sweep's parent run and its trials' runs by index."""
        client = self.mlflow()
        found = client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment}"
        runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
        (parent,) = [r for r in runs if r.data.tags.get("training.sweep.role") == "sweep"]
        trials = {int(r.data.tags["training.sweep.trial_index"]): r for r in runs  # the newest of an index
                  if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        return parent, trials

    def run_of(self, experiment: str) -> Any:
        client = self.mlflow()
        found = client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment}"
        (run,) = client.search_runs([found.experiment_id])
        return run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("airflow-services")
    control = home / "control"
    source = home / "source"
    docker_source = home / "docker_source"
    sweep_source = home / "sweep_source"
    secret_source = home / "secret_source"
    quick_source = home / "quick_source"
    slurm_folder = f"svc-{uuid.uuid4().hex[:8]}"
    for folder in (control, source, docker_source, sweep_source, secret_source, quick_source, home / "dags"):
        folder.mkdir()
    (quick_source / "train.py").write_text(textwrap.dedent(QUICK_SCRIPT))
    (secret_source / "train.py").write_text(textwrap.dedent(SECRET_SCRIPT))
    (source / "train.py").write_text(textwrap.dedent(SCRIPT))
    (sweep_source / "train.py").write_text(textwrap.dedent(SWEEP_SCRIPT))
    (docker_source / "train.py").write_text(textwrap.dedent(DOCKER_SCRIPT))
    examples = Path(airflow_provider.__file__).parent / "example_dags"  # scheduled on an asset: proven here
    shutil.copy(examples / "retrain_on_new_data.py", home / "dags")
    shutil.copytree(examples / "retrain_on_new_data_src", home / "dags" / "retrain_on_new_data_src")
    (home / "dags" / "service_dags.py").write_text(DAG_TEMPLATE.format(
        source=str(source), control=str(control), docker_source=str(docker_source), docker_conn=DOCKER_CONN_ID,
        ssh_conn=SSH_CONN_ID, sweep_source=str(sweep_source), secret_source=str(secret_source),
        secret=SECRET_VALUE, quick_source=str(quick_source), slurm_conn=SLURM_CONN_ID,
        slurm_control=f"/shared/{slurm_folder}/control"))
    port = _free_port()
    venv_bin = str(Path(sys.executable).parent)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRAINING_RUNS_", "MLFLOW_", "AIRFLOW"))},
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "TRAINING_EXAMPLE_DATA": str(home / "example_data"),
        "TRAINING_EXAMPLE_MODELS": str(home / "example_models"),
        f"AIRFLOW_CONN_{DOCKER_CONN_ID.upper()}": json.dumps({
            "conn_type": "training_docker", "host": DOCKER_URL, "extra": {"image": DOCKER_IMAGE}}),
    }
    ssh_host = container_host()
    if ssh_host is not None:
        environment[f"AIRFLOW_CONN_{SSH_CONN_ID.upper()}"] = json.dumps({
            "conn_type": "training_ssh", "host": ssh_host.host, "port": ssh_host.port, "login": ssh_host.username,
            "extra": {"key_file": str(ssh_host.key_path), "host_key": ssh_host.host_public_key,
                      "work_root": SSH_WORK_ROOT}})
    slurm_host = slurm_login()
    slurm_control = None
    if slurm_host is not None:  # the cluster sees /shared/<folder> as SLURM_SHARED/<folder> here
        slurm_control = SLURM_SHARED / slurm_folder / "control"
        slurm_control.mkdir(parents=True)
        environment[f"AIRFLOW_CONN_{SLURM_CONN_ID.upper()}"] = json.dumps({
            "conn_type": "training_slurm", "host": slurm_host.host, "login": slurm_host.username,
            "extra": {"key_file": str(slurm_host.key_path), "host_key": slurm_host.host_public_key,
                      "work_root": f"/shared/{slurm_folder}/runs"}})
    log = open(home / "standalone.log", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen([f"{venv_bin}/airflow", "standalone"], env=environment, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        passwords = home / "simple_auth_manager_passwords.json.generated"

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError((home / "standalone.log").read_text()[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                return passwords.exists() and httpx.get(f"{base}/api/v2/monitor/health").status_code == 200
            return False

        wait_until(ready, timeout=180, message="airflow standalone to answer")
        password = json.loads(passwords.read_text())["admin"]
        token = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password}).json()
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=30)
        wait_until(lambda: api.get("/api/v2/dags/svc_reattach").status_code == 200, timeout=120,
                   message="the DAGs to be parsed")
        yield Airflow(home, control, api, ssh_host, slurm_control)
    finally:
        if slurm_control is not None:
            shutil.rmtree(slurm_control.parent, ignore_errors=True)
        leftovers = _stop_leftover_jobs(home / "training_runs" / "local" / "jobs")
        stop_process_tree(process.pid)  # its scheduler and executor workers too, whatever their group
        process.wait()
        log.close()
    assert not leftovers, f"job processes were still running after the tests: {leftovers}"


def _stop_leftover_jobs(jobs: Path) -> list[int]:
    """Kill job processes the tests left running (and report them: a test must not leave any)."""
    alive = []
    for runner_state in jobs.glob("*/runner.json"):
        data = json.loads(runner_state.read_text())
        for key in ("child_pid", "runner_pid"):
            pid = data.get(key)
            if pid and pid_alive(int(pid)):
                alive.append(int(pid))
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid), signal.SIGKILL)
    return alive


def test_deferred_run_is_watched_by_the_triggerer(airflow: Airflow) -> None:
    run_id = airflow.trigger("svc_deferred_success")
    airflow.wait_for_task("svc_deferred_success", run_id, {"deferred"})
    # Let the triggerer take over first: an event fired before the scheduler has processed the
    # deferral makes Airflow 3.3 fail the task ("finished with state success, but ... queued").
    since = airflow.ticks("svc_deferred_success")
    wait_until(lambda: airflow.trigger_is_relaying("svc_deferred_success", since), timeout=60,
               message="the triggerer to watch the run")
    time.sleep(2)
    (airflow.control / "svc_deferred_success.go").write_text("go")
    task = airflow.wait_for_task("svc_deferred_success", run_id, {"success", "failed"})
    assert task["state"] == "success"
    run = airflow.run_of("svc_deferred_success")
    assert run.info.status == "FINISHED" and run.data.tags["training.state"] == "Completed"
    ticks = airflow.mlflow().get_metric_history(run.info.run_id, "tick")
    assert sorted(m.step for m in ticks) == list(range(len(ticks))) and len(ticks) >= 4
    assert [a.path for a in airflow.mlflow().list_artifacts(run.info.run_id, "outputs")] == ["outputs/done.txt"]
    assert len(airflow.executions("svc_deferred_success")) == 1


def test_a_landed_partition_triggers_the_retraining_dag_through_its_asset(airflow: Airflow) -> None:
    """The example ``retrain_on_new_data`` is scheduled on the data folder's asset: the scheduler
    starts it when ``prepare_churn_data`` writes a partition (the asset event of its outlet), and
    its training run reads the folder, writes the model output and the next task registers it."""
    for dag_id in ("retrain_on_new_data", "prepare_churn_data"):
        wait_until(lambda dag_id=dag_id: airflow.call("GET", f"/api/v2/dags/{dag_id}").status_code == 200,
                   timeout=120, message=f"{dag_id} to be parsed")
        response = airflow.call("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        assert response.status_code == 200, response.text
    response = airflow.call("POST", "/api/v2/dags/prepare_churn_data/dagRuns", json={"logical_date": None})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = {}

    def retrained() -> bool:
        runs = airflow.call("GET", "/api/v2/dags/retrain_on_new_data/dagRuns").json()["dag_runs"]
        if runs and runs[0]["state"] == "failed":
            raise AssertionError(f"retrain_on_new_data failed: {runs[0]}\n{_task_logs(airflow, 'retrain_on_new_data')}")
        found.update(runs[0] if runs and runs[0]["state"] == "success" else {})
        return bool(found)

    wait_until(retrained, timeout=300, message="the asset event to start retrain_on_new_data and it to succeed")
    assert found["run_type"] == "asset_triggered", found
    (version,) = airflow.mlflow().search_model_versions("name = 'churn-from-data'")
    model = airflow.home / "example_models" / version.run_id / "model.json"
    assert json.loads(model.read_text())["trained_on"] == [p.name for p in (airflow.home / "example_data").iterdir()]
    assert version.source == str(model.parent)


def test_a_run_over_when_its_trigger_starts_resumes_its_task_without_failing_it(airflow: Airflow) -> None:
    """The scheduler race: the triggerer runs the trigger of a task that deferred at once, whose run
    ends about when the trigger starts. Fired then, its event could reach the scheduler before the
    executor's event for the worker's exit, and Airflow would fail the resumed task; the trigger
    holds it instead, and the task succeeds at its first try."""
    dag_id = "svc_deferred_quick_end"
    run_id = airflow.trigger(dag_id)
    task = airflow.wait_for_task(dag_id, run_id, {"success", "failed", "up_for_retry"}, timeout=180)
    logs = _task_logs(airflow, dag_id)
    assert task["state"] == "success" and task["try_number"] == 1, logs[-3000:]
    assert "the event waits" in logs, "the triggerer's trigger fired without holding its event"
    run = airflow.run_of(dag_id)
    assert run.info.status == "FINISHED" and run.data.tags["training.state"] == "Completed"


def _task_logs(airflow: Airflow, dag_id: str) -> str:
    """Every log file Airflow wrote for the DAG's task (the worker's and the triggerer's)."""
    return "".join(path.read_text(errors="replace") for path in sorted((airflow.home / "logs").rglob("*"))
                   if path.is_file() and f"dag_id={dag_id}" in str(path))


def _assert_secret_masked(airflow: Airflow, dag_id: str, *lines: str) -> None:
    logs = _task_logs(airflow, dag_id)
    for line in lines:
        assert f"{line} ***" in logs, f"{line!r} is missing from the task log of {dag_id}"
    assert SECRET_VALUE not in logs, f"the secret is in clear in the task log of {dag_id}"
    assert "ended Failed" in logs and "last lines of its log" in logs, "the run's error is not in the log"


@pytest.mark.parametrize("dag_id", ["svc_secret_local", "svc_secret_docker"])
def test_a_secret_with_an_ordinary_name_is_masked_in_the_task_log(airflow: Airflow, dag_id: str) -> None:
    run_id = airflow.trigger(dag_id)
    assert airflow.wait_for_task(dag_id, run_id, {"success", "failed"})["state"] == "failed"
    wait_until(lambda: "secret2:" in _task_logs(airflow, dag_id), message="the task log to be written")
    _assert_secret_masked(airflow, dag_id, "secret1:", "secret2:")


def test_a_secret_is_masked_in_the_triggerers_log_of_a_deferred_task(airflow: Airflow) -> None:
    dag_id = "svc_secret_deferred"
    run_id = airflow.trigger(dag_id)
    airflow.wait_for_task(dag_id, run_id, {"deferred"})
    since = airflow.ticks(dag_id)
    wait_until(lambda: airflow.trigger_is_relaying(dag_id, since), timeout=60, message="the triggerer to watch")
    wait_until(lambda: "still:" in _task_logs(airflow, dag_id), timeout=60, message="the trigger to log output")
    (airflow.control / f"{dag_id}.go").write_text("go")
    assert airflow.wait_for_task(dag_id, run_id, {"success", "failed"})["state"] == "failed"
    wait_until(lambda: "secret2:" in _task_logs(airflow, dag_id), message="the task log to be written")
    _assert_secret_masked(airflow, dag_id, "secret1:", "still:", "secret2:")


def test_marking_a_deferred_task_failed_stops_the_job(airflow: Airflow) -> None:
    run_id = airflow.trigger("svc_deferred_kill")
    airflow.wait_for_task("svc_deferred_kill", run_id, {"deferred"})
    wait_until(lambda: bool(airflow.executions("svc_deferred_kill")), message="the script to start")
    (pid,) = airflow.executions("svc_deferred_kill")
    since = airflow.ticks("svc_deferred_kill")
    wait_until(lambda: airflow.trigger_is_relaying("svc_deferred_kill", since), timeout=60,
               message="the triggerer to watch the run")
    airflow.mark("svc_deferred_kill", run_id, "failed")
    wait_until(lambda: not pid_alive(pid), timeout=60, message="the job to be stopped")
    wait_until(lambda: airflow.run_of("svc_deferred_kill").info.status == "KILLED", timeout=60,
               message="the MLflow run to end KILLED")
    run = airflow.run_of("svc_deferred_kill")
    assert run.data.tags["training.state"] == "Canceled"
    assert airflow.task("svc_deferred_kill", run_id)["state"] == "failed"


def test_marking_a_running_task_failed_stops_the_job(airflow: Airflow) -> None:
    run_id = airflow.trigger("svc_running_kill")
    airflow.wait_for_task("svc_running_kill", run_id, {"running"})
    wait_until(lambda: bool(airflow.executions("svc_running_kill")), message="the script to start")
    (pid,) = airflow.executions("svc_running_kill")
    airflow.mark("svc_running_kill", run_id, "failed")
    wait_until(lambda: not pid_alive(pid), timeout=60, message="the job to be stopped")
    wait_until(lambda: airflow.run_of("svc_running_kill").info.status == "KILLED", timeout=60,
               message="the MLflow run to end KILLED")


def test_a_retry_after_a_killed_worker_reattaches_to_the_job(airflow: Airflow) -> None:
    run_id = airflow.trigger("svc_reattach")
    airflow.wait_for_task("svc_reattach", run_id, {"running"})
    wait_until(lambda: bool(airflow.executions("svc_reattach")), message="the script to start")
    (script_pid,) = airflow.executions("svc_reattach")
    run = airflow.run_of("svc_reattach")
    runner_state = airflow.home / "training_runs" / "local" / "jobs" / run.info.run_id / "runner.json"
    runner_pid = json.loads(runner_state.read_text())["runner_pid"]
    with open(f"/proc/{runner_pid}/stat") as stat:
        task_process = int(stat.read().rsplit(")", 1)[1].split()[1])  # the runner's parent: the task
    os.kill(task_process, signal.SIGKILL)  # the worker dies; the job must live on
    airflow.wait_for_task("svc_reattach", run_id, {"up_for_retry", "running", "failed"}, timeout=120)
    assert pid_alive(script_pid), "the job died with its worker"
    wait_until(lambda: airflow.task("svc_reattach", run_id)["try_number"] == 2, timeout=120,
               message="the second try")
    airflow.wait_for_task("svc_reattach", run_id, {"running"})
    time.sleep(2)  # the retry reattaches; give it time to start watching
    (airflow.control / "svc_reattach.go").write_text("go")
    task = airflow.wait_for_task("svc_reattach", run_id, {"success", "failed"})
    assert task["state"] == "success" and task["try_number"] == 2
    assert airflow.executions("svc_reattach") == [script_pid], "the script ran more than once"
    run = airflow.run_of("svc_reattach")
    assert run.info.status == "FINISHED"
    assert run.data.tags["airflow.try_number"] == "1"  # the run was created by the first try


def test_a_retry_after_a_killed_worker_reattaches_to_the_slurm_job(airflow: Airflow) -> None:
    """The worker watching a Slurm job is SIGKILLed: the job runs on, the retry finds it by the run's
    key and watches it to its end; the script ran once and Slurm accounted one job."""
    import psutil

    from tests.integration.slurm_support import accounted

    if airflow.slurm_control is None:
        skip_or_fail("no Slurm cluster (run scripts/components.sh as root)")
    assert airflow.slurm_control is not None
    dag = "svc_slurm_reattach"
    run_id = airflow.trigger(dag)
    airflow.wait_for_task(dag, run_id, {"running"})
    wait_until(lambda: bool(airflow.executions(dag, airflow.slurm_control)), timeout=120,
               message="the script to start on a Slurm node")
    login = (SLURM_LOGIN_ADDRESS, 22)
    watchers = {c.pid for c in psutil.net_connections("tcp") if c.raddr and tuple(c.raddr) == login
                and c.status == psutil.CONN_ESTABLISHED and c.pid not in (None, os.getpid())}
    assert len(watchers) == 1, f"not one task process connected to the login node: {watchers}"
    os.kill(watchers.pop(), signal.SIGKILL)  # the worker dies; the Slurm job must live on
    wait_until(lambda: airflow.task(dag, run_id)["try_number"] == 2, timeout=120, message="the second try")
    airflow.wait_for_task(dag, run_id, {"running"})
    time.sleep(2)  # the retry reattaches; give it time to start watching
    (airflow.slurm_control / f"{dag}.go").write_text("go")
    task = airflow.wait_for_task(dag, run_id, {"success", "failed"}, timeout=120)
    assert task["state"] == "success" and task["try_number"] == 2, _task_logs(airflow, dag)[-3000:]
    assert len(airflow.executions(dag, airflow.slurm_control)) == 1, "the script ran more than once"
    run = airflow.run_of(dag)
    assert run.info.status == "FINISHED" and run.data.tags["airflow.try_number"] == "1"
    assert [a.path for a in airflow.mlflow().list_artifacts(run.info.run_id, "outputs")] == ["outputs/done.txt"]
    cluster = slurm_login()
    assert cluster is not None
    assert accounted(cluster, run.info.run_id, "State") == [["COMPLETED"]]


def test_marking_a_deferred_slurm_task_failed_cancels_the_slurm_job(airflow: Airflow) -> None:
    """Marked failed while the triggerer watches: the job is canceled in Slurm (accounted CANCELLED),
    nothing of it is left on the nodes, and the run ends Canceled with what the script wrote."""
    from tests.integration.slurm_support import accounted, processes_on_nodes

    if airflow.slurm_control is None:
        skip_or_fail("no Slurm cluster (run scripts/components.sh as root)")
    assert airflow.slurm_control is not None
    dag = "svc_slurm_deferred_kill"
    run_id = airflow.trigger(dag)
    airflow.wait_for_task(dag, run_id, {"deferred"})
    wait_until(lambda: bool(airflow.executions(dag, airflow.slurm_control)), timeout=120,
               message="the script to start on a Slurm node")
    since = airflow.ticks(dag)
    wait_until(lambda: airflow.trigger_is_relaying(dag, since), timeout=60, message="the triggerer to watch the run")
    airflow.mark(dag, run_id, "failed")
    wait_until(lambda: airflow.run_of(dag).data.tags.get("training.state") == "Canceled", timeout=120,
               message="the MLflow run to end Canceled")
    run = airflow.run_of(dag)
    assert run.info.status == "KILLED"
    assert airflow.mlflow().get_metric_history(run.info.run_id, "tick")
    wait_until(lambda: not processes_on_nodes(run.info.run_id), timeout=60, message="nothing left on the nodes")
    cluster = slurm_login()
    assert cluster is not None
    assert accounted(cluster, run.info.run_id, "State")[0][0].startswith("CANCELLED")


def test_marking_a_sweep_task_failed_stops_every_running_trial(airflow: Airflow) -> None:
    dag = "svc_sweep_kill"
    run_id = airflow.trigger(dag)
    airflow.wait_for_task(dag, run_id, {"running"})
    wait_until(lambda: bool(airflow.executions(f"{dag}_0") and airflow.executions(f"{dag}_1")), timeout=90,
               message="two trials to run at once")
    pids = airflow.executions(f"{dag}_0") + airflow.executions(f"{dag}_1")
    airflow.mark(dag, run_id, "failed")
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=60, message="both trials to be stopped")

    def trials_killed() -> bool:
        _, trials = airflow.sweep_runs(dag)
        return all(trials[i].info.status == "KILLED" for i in (0, 1))

    wait_until(trials_killed, timeout=90, message="the trials' MLflow runs to end KILLED")
    # The trials' detached finalizers may end them a moment before on_kill ends the sweep itself.
    wait_until(lambda: airflow.sweep_runs(dag)[0].data.tags.get("training.state") == "Canceled", timeout=60,
               message="the sweep's parent run to end Canceled")
    parent, trials = airflow.sweep_runs(dag)
    assert parent.data.tags["training.state"] == "Canceled" and parent.info.status == "KILLED"
    assert all(trials[i].data.tags["training.state"] == "Canceled" for i in (0, 1))
    assert 2 not in trials or trials[2].data.tags["training.state"] == "Canceled", "the staged trial never ran"
    assert not airflow.executions(f"{dag}_2")
    assert airflow.task(dag, run_id)["state"] == "failed"


def test_a_retried_sweep_after_a_killed_worker_reruns_no_finished_trial(airflow: Airflow) -> None:
    dag = "svc_sweep_reattach"
    run_id = airflow.trigger(dag)
    airflow.wait_for_task(dag, run_id, {"running"})
    wait_until(lambda: bool(airflow.executions(f"{dag}_1")), timeout=90, message="trial 1 to start")
    (trial_pid,) = airflow.executions(f"{dag}_1")
    _, trials = airflow.sweep_runs(dag)
    runner_state = airflow.home / "training_runs" / "local" / "jobs" / trials[1].info.run_id / "runner.json"
    runner_pid = json.loads(runner_state.read_text())["runner_pid"]
    with open(f"/proc/{runner_pid}/stat") as stat:
        task_process = int(stat.read().rsplit(")", 1)[1].split()[1])  # the runner's parent: the task
    os.kill(task_process, signal.SIGKILL)  # the worker dies mid-sweep; trial 1 must live on
    wait_until(lambda: airflow.task(dag, run_id)["try_number"] == 2, timeout=120, message="the second try")
    airflow.wait_for_task(dag, run_id, {"running"})
    assert pid_alive(trial_pid), "the trial died with its worker"
    time.sleep(2)  # the retry reattaches to trial 1; then let it end
    (airflow.control / f"{dag}_1.go").write_text("go")
    task = airflow.wait_for_task(dag, run_id, {"success", "failed"}, timeout=120)
    assert task["state"] == "success" and task["try_number"] == 2
    assert [len(airflow.executions(f"{dag}_{i}")) for i in range(3)] == [1, 1, 1], "a trial ran twice"
    parent, trials = airflow.sweep_runs(dag)
    assert parent.data.tags["training.state"] == "Completed" and sorted(trials) == [0, 1, 2]
    assert all(t.data.tags["training.state"] == "Completed" for t in trials.values())
    assert parent.data.tags["training.sweep.best_run_id"] == trials[1].info.run_id  # the most ticks


# ---------------------------------------------------------------------------- the Docker target
@pytest.fixture(scope="module")
def docker_client() -> Any:
    """The local daemon, with the base image the Docker DAGs run in (skip or fail without them)."""
    try:
        import docker

        client = docker.DockerClient(base_url=DOCKER_URL)
        client.ping()
    except Exception as exc:
        skip_or_fail(f"no Docker engine at {DOCKER_URL} (run scripts/components.sh as root): {exc}")
    try:
        client.images.get(DOCKER_IMAGE)
    except Exception:
        skip_or_fail(f"no base image {DOCKER_IMAGE} (run scripts/components.sh)")
    return client


@pytest.fixture
def docker_runs(docker_client: Any) -> Iterator[list[str]]:
    """Run ids whose containers the test checks; any still there at teardown are removed."""
    run_ids: list[str] = []
    yield run_ids
    for run_id in run_ids:
        for container in _containers_of(docker_client, run_id):
            container.remove(force=True)


def _containers_of(client: Any, run_id: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"training.run_id={run_id}"}))


def _assert_docker_run_canceled(airflow: Airflow, docker_client: Any, dag_id: str, run_id: str,
                                tmp_path: Path) -> None:
    """The task failed, the run ends Canceled with what the script wrote, and its container is gone."""
    try:
        wait_until(lambda: airflow.run_of(dag_id).data.tags.get("training.state") == "Canceled", timeout=120,
                   message=f"the MLflow run of {dag_id} to end Canceled")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnosis(airflow, dag_id, docker_client)}") from None
    run = airflow.run_of(dag_id)
    assert run.info.status == "KILLED"
    assert airflow.task(dag_id, run_id)["state"] == "failed"
    client = airflow.mlflow()
    assert [a.path for a in client.list_artifacts(run.info.run_id, "outputs")] == ["outputs/started.txt"]
    assert "system_logs/driver.log" in [a.path for a in client.list_artifacts(run.info.run_id, "system_logs")]
    driver_log = Path(client.download_artifacts(run.info.run_id, "system_logs/driver.log", str(tmp_path)))
    assert "tick 0" in driver_log.read_text()
    assert client.get_metric_history(run.info.run_id, "tick")
    wait_until(lambda: not _containers_of(docker_client, run.info.run_id), timeout=60,
               message=f"the container of run {run.info.run_id} to be removed")


def _diagnosis(airflow: Airflow, dag_id: str, docker_client: Any) -> str:
    """What a failed kill test needs to be understood: the run's tags, the finalizer's and the
    task's logs, the containers."""
    parts = []
    with contextlib.suppress(Exception):
        run = airflow.run_of(dag_id)
        parts.append(f"run {run.info.run_id} status {run.info.status} tags {dict(run.data.tags)}")
        parts.append(f"containers: {[(c.name, c.status) for c in _containers_of(docker_client, run.info.run_id)]}")
    for log in sorted((airflow.home / "training_runs" / "logs").glob("finalizer-*.log")):
        parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")
    for log in sorted((airflow.home / "logs").rglob("*.log")):
        if dag_id in str(log):
            parts.append(f"--- {log} ---\n{log.read_text(errors='replace')[-3000:]}")
    return "\n".join(parts)


def _wait_for_ticks(airflow: Airflow, dag_id: str, docker_runs: list[str]) -> None:
    """Wait until the script in the container has logged a tick (it sees no host file to signal on)."""
    wait_until(lambda: _has_run(airflow, dag_id), timeout=60, message=f"the MLflow run of {dag_id}")
    docker_runs.append(airflow.run_of(dag_id).info.run_id)
    since = airflow.ticks(dag_id)  # the task is deferred (or running) by now
    wait_until(lambda: airflow.trigger_is_relaying(dag_id, since), timeout=90,
               message=f"new ticks of {dag_id} in MLflow")


def _has_run(airflow: Airflow, experiment: str) -> bool:
    with contextlib.suppress(AssertionError, ValueError):
        return bool(airflow.run_of(experiment))
    return False


def test_marking_a_deferred_docker_task_failed_stops_the_container(
        docker_client: Any, airflow: Airflow, docker_runs: list[str], tmp_path: Path) -> None:
    dag_id = "svc_docker_deferred_kill"
    run_id = airflow.trigger(dag_id)
    airflow.wait_for_task(dag_id, run_id, {"deferred"})
    _wait_for_ticks(airflow, dag_id, docker_runs)  # relayed by the triggerer: the task is deferred
    airflow.mark(dag_id, run_id, "failed")
    _assert_docker_run_canceled(airflow, docker_client, dag_id, run_id, tmp_path)


def test_marking_a_running_docker_task_failed_stops_the_container(
        docker_client: Any, airflow: Airflow, docker_runs: list[str], tmp_path: Path) -> None:
    dag_id = "svc_docker_running_kill"
    run_id = airflow.trigger(dag_id)
    airflow.wait_for_task(dag_id, run_id, {"running"})
    _wait_for_ticks(airflow, dag_id, docker_runs)
    airflow.mark(dag_id, run_id, "failed")
    _assert_docker_run_canceled(airflow, docker_client, dag_id, run_id, tmp_path)


# ---------------------------------------------------------------------------- the SSH target
@pytest.fixture
def ssh_runs(airflow: Airflow) -> Iterator[list[str]]:
    """Run ids whose remote jobs the test checks; processes of theirs still on the SSH host container
    at teardown are killed (by pid)."""
    host = airflow.ssh_host
    if host is None:
        skip_or_fail("no SSH host container at 172.28.0.10:22 when airflow standalone started "
                     "(run scripts/components.sh as root)")
    assert host is not None
    restore_host_key(host)  # the connection pins the original host key
    run_ids: list[str] = []
    yield run_ids
    for run_id in run_ids:
        pids = [pid for pid, _ in _remote_processes_of(host, run_id)]
        if pids:
            subprocess.run(["docker", "exec", host.name, "kill", "-KILL", *map(str, pids)],
                           capture_output=True, timeout=60)


def _remote_job_dir(run_id: str) -> str:
    return f"{SSH_WORK_ROOT}/jobs/{run_id}"


def _remote_processes_of(host: SSHHost, run_id: str) -> list[tuple[int, str]]:
    """(pid, command line) of the host's processes that belong to the run: their command line names
    its job folder (the supervisor), or names train.py and they run in that folder (the script;
    another run's train.py elsewhere on the shared host is not this run's)."""
    job_dir = _remote_job_dir(run_id)
    listing = subprocess.run(["docker", "exec", host.name, "ps", "-eo", "pid,args"], capture_output=True,
                             text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    found = []
    for line in listing.stdout.splitlines()[1:]:
        pid, _, command = line.strip().partition(" ")
        if job_dir in command:
            found.append((int(pid), command))
        elif "train.py" in command:
            cwd = subprocess.run(["docker", "exec", host.name, "readlink", f"/proc/{pid}/cwd"], capture_output=True,
                                 text=True, timeout=60).stdout.strip()
            if cwd.startswith(job_dir):  # nothing when the process is gone (or was ps itself)
                found.append((int(pid), command))
    return found


def _remote_job_folder(host: SSHHost, run_id: str) -> list[str] | None:
    """The names in the run's job folder on the host, or None when it is gone."""
    result = subprocess.run(["docker", "exec", host.name, "ls", "-A", _remote_job_dir(run_id)], capture_output=True,
                            text=True, timeout=60)
    return result.stdout.split() if result.returncode == 0 else None


def _assert_ssh_run_canceled(airflow: Airflow, dag_id: str, run_id: str, tmp_path: Path) -> None:
    """The task failed, the run ends Canceled with what the script wrote, no process of the job is
    left on the remote host and its job folder is removed or kept (marked ``.kept``)."""
    host = airflow.ssh_host
    assert host is not None

    def remote_state() -> str:
        with contextlib.suppress(Exception):
            mlflow_run_id = airflow.run_of(dag_id).info.run_id
            return (f"remote processes: {_remote_processes_of(host, mlflow_run_id)}\n"
                    f"remote job folder: {_remote_job_folder(host, mlflow_run_id)}")
        return "remote state unknown"

    try:
        wait_until(lambda: airflow.run_of(dag_id).data.tags.get("training.state") == "Canceled", timeout=120,
                   message=f"the MLflow run of {dag_id} to end Canceled")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{remote_state()}\n{_diagnosis(airflow, dag_id, None)}") from None
    run = airflow.run_of(dag_id)
    assert run.info.status == "KILLED"
    assert airflow.task(dag_id, run_id)["state"] == "failed"
    client = airflow.mlflow()
    assert [a.path for a in client.list_artifacts(run.info.run_id, "outputs")] == ["outputs/started.txt"]
    assert "system_logs/driver.log" in [a.path for a in client.list_artifacts(run.info.run_id, "system_logs")]
    driver_log = Path(client.download_artifacts(run.info.run_id, "system_logs/driver.log", str(tmp_path)))
    assert "tick 0" in driver_log.read_text()
    assert client.get_metric_history(run.info.run_id, "tick")
    try:
        wait_until(lambda: not _remote_processes_of(host, run.info.run_id), timeout=60,
                   message=f"the processes of run {run.info.run_id} on {host.name} to end")
        wait_until(lambda: (folder := _remote_job_folder(host, run.info.run_id)) is None or ".kept" in folder,
                   timeout=30, message=f"the job folder of run {run.info.run_id} to be removed or kept")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{remote_state()}\n{_diagnosis(airflow, dag_id, None)}") from None


def test_marking_a_deferred_ssh_task_failed_stops_the_remote_job(
        airflow: Airflow, ssh_runs: list[str], tmp_path: Path) -> None:
    dag_id = "svc_ssh_deferred_kill"
    run_id = airflow.trigger(dag_id)
    airflow.wait_for_task(dag_id, run_id, {"deferred"})
    _wait_for_ticks(airflow, dag_id, ssh_runs)  # relayed by the triggerer: the task is deferred
    airflow.mark(dag_id, run_id, "failed")
    _assert_ssh_run_canceled(airflow, dag_id, run_id, tmp_path)


def test_marking_a_running_ssh_task_failed_stops_the_remote_job(
        airflow: Airflow, ssh_runs: list[str], tmp_path: Path) -> None:
    dag_id = "svc_ssh_running_kill"
    run_id = airflow.trigger(dag_id)
    airflow.wait_for_task(dag_id, run_id, {"running"})
    _wait_for_ticks(airflow, dag_id, ssh_runs)
    airflow.mark(dag_id, run_id, "failed")
    _assert_ssh_run_canceled(airflow, dag_id, run_id, tmp_path)
