"""``SubmitTrainingRunOperator`` behaviour through real DAG files: parsing, validation, XCom, failures, secrets.

One DAG (``behaviour``) holds a succeeding task, a failing task and one task per kind of bad
configuration; it runs once for the whole module through ``dag.test()`` in a subprocess (a fresh
AIRFLOW_HOME with a migrated database, its own state folder and MLflow store), and each test
below checks one promise against that run: the task log, the Airflow database, and MLflow.

Task logs and secrets: in a real worker every line a task writes reaches its log through Airflow's
secrets masker (the supervisor redacts each log event with the values registered by
``mask_secret``). ``dag.test()`` runs tasks in-process and prints to the console without that
step, so even a connection password Airflow itself masks shows in clear there. The run below
therefore goes through a small runner that passes the process's stdout and stderr through
Airflow's own masker (``airflow.sdk._shared.secrets_masker.redact``), then runs
``tests/system/run_dag.py`` unchanged: a value the operator registers is masked, a value it
forgets is not, exactly as in a worker's log.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Run as MlflowRun
from mlflow.tracking import MlflowClient

from tests.conftest import _live_runner_pids, _open_runs
from tests.helpers import write_script
from tests.system.conftest import airflow_environment

pytestmark = pytest.mark.slow

RUN_DAG = Path(__file__).parent / "run_dag.py"
LOGICAL_DATE = "2026-03-05T00:00:00+00:00"
DS = "2026-03-05"
EXPERIMENT = "behaviour-20260305"

SECRETS = {
    # task_id -> values the run's script prints and that must never show
    "succeeds": {"API_TOKEN": "s3cr3t-value-123", "DB_PASSWORD": "hunter2-xyz", "WAREHOUSE": "wh-conn-pass-4242"},
    "fails": {"API_TOKEN": "s3cr3t-fail-456", "DB_PASSWORD": "hunter2-fail-789"},
}
WAREHOUSE_CONNECTION = json.dumps({"conn_type": "generic", "host": "warehouse.example.com", "login": "etl",
                                   "password": SECRETS["succeeds"]["WAREHOUSE"]})
FAILURE_MARKER = "fatal: loss diverged at epoch 2 (marker-7f3a)"

TRAIN_SCRIPT = """
import json, os, sys
from airflow_provider.core import Run

run = Run.get_context()
args = sys.argv[1:]
print("arguments:", json.dumps(args))
print("run date:", os.environ.get("RUN_DATE"))
print("api token:", os.environ.get("API_TOKEN"))
print("db password:", os.environ.get("DB_PASSWORD"))
print("warehouse:", os.environ.get("WAREHOUSE_PART"))
os.makedirs("outputs", exist_ok=True)
os.makedirs("logs", exist_ok=True)
with open("outputs/seen.json", "w") as handle:
    json.dump({"arguments": args, "run_date": os.environ.get("RUN_DATE")}, handle)
with open("logs/progress.txt", "w") as handle:
    handle.write("epoch 1\\nepoch 2\\n")
for loss in (0.9, 0.5, 0.25):
    run.log("loss", loss)
if "--fail" in args:
    print(FAILURE_MARKER, file=sys.stderr, flush=True)
    sys.exit(3)
""".replace("FAILURE_MARKER", repr(FAILURE_MARKER))

BEHAVIOUR_DAG = """
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider.operators import SubmitTrainingRunOperator

SOURCE = {source!r}
NOT_RETRIED = {{"retries": 2, "retry_delay": timedelta(seconds=1)}}

with DAG(dag_id="behaviour", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    SubmitTrainingRunOperator(
        task_id="succeeds",
        source_directory=SOURCE,
        script="train.py",
        arguments=["--date", "{{{{ ds }}}}", "--epochs", 3],
        environment_variables={{"RUN_DATE": "{{{{ ds }}}}", "DB_PASSWORD": {succeeds[DB_PASSWORD]!r},
                               "WAREHOUSE_PART": "{{{{ conn.warehouse.password }}}}"}},
        secret_environment_variables={{"API_TOKEN": {succeeds[API_TOKEN]!r}}},
        tags={{"team": "search", "logical_day": "{{{{ ds }}}}"}},
        experiment_name="behaviour-{{{{ ds_nodash }}}}",
        poll_interval=0.5,
    )
    SubmitTrainingRunOperator(
        task_id="fails",
        source_directory=SOURCE,
        script="train.py",
        arguments=["--fail"],
        environment_variables={{"DB_PASSWORD": {fails[DB_PASSWORD]!r}}},
        secret_environment_variables={{"API_TOKEN": {fails[API_TOKEN]!r}}},
        experiment_name="behaviour-{{{{ ds_nodash }}}}",
        poll_interval=0.5,
    )
    SubmitTrainingRunOperator(task_id="missing_script", source_directory=SOURCE, script="missing.py",
                              experiment_name="behaviour-{{{{ ds_nodash }}}}", **NOT_RETRIED)
    SubmitTrainingRunOperator(task_id="bad_argument", source_directory=SOURCE, script="train.py",
                              arguments=["--config", {{"lr": 0.1}}],
                              experiment_name="behaviour-{{{{ ds_nodash }}}}", **NOT_RETRIED)
    SubmitTrainingRunOperator(task_id="unknown_target", source_directory=SOURCE, script="train.py",
                              compute_target="no_such_target",
                              experiment_name="behaviour-{{{{ ds_nodash }}}}", **NOT_RETRIED)
    SubmitTrainingRunOperator(task_id="unknown_environment", source_directory=SOURCE, script="train.py",
                              environment="no-such-env:3",
                              experiment_name="behaviour-{{{{ ds_nodash }}}}", **NOT_RETRIED)
    SubmitTrainingRunOperator(task_id="bad_secret_type", source_directory=SOURCE, script="train.py",
                              secret_environment_variables={{"API_TOKEN": 12345}},
                              experiment_name="behaviour-{{{{ ds_nodash }}}}", **NOT_RETRIED)
    SubmitTrainingRunOperator(task_id="bad_tags", source_directory=SOURCE, script="train.py",
                              tags=["team", "search"],
                              experiment_name="behaviour-{{{{ ds_nodash }}}}", **NOT_RETRIED)
    SubmitTrainingRunOperator(task_id="missing_tracking_connection", source_directory=SOURCE, script="train.py",
                              tracking_conn_id="no_such_mlflow",
                              experiment_name="behaviour-{{{{ ds_nodash }}}}", **NOT_RETRIED)
    SubmitTrainingRunOperator(task_id="bad_secret_value", source_directory=SOURCE, script="train.py",
                              secret_environment_variables={{"API_TOKEN": "nul\\0-secret-5150"}},
                              experiment_name="behaviour-{{{{ ds_nodash }}}}", **NOT_RETRIED)
"""

# task_id -> texts its failure message must contain (the field at fault, and the offending value)
BAD_CONFIGURATIONS = {
    "missing_script": ["ScriptRunConfig.script", "missing.py"],
    "bad_argument": ["ScriptRunConfig.arguments[1]", "dict"],
    "unknown_target": ["compute_target", "no_such_target"],
    "unknown_environment": ["environment", "no-such-env"],
    "bad_secret_type": ["secret_environment_variables['API_TOKEN']", "must be a string"],
    "bad_tags": ["tags", "must be a dict"],
    "missing_tracking_connection": ["tracking_conn_id", "no Airflow connection 'no_such_mlflow' exists"],
    "bad_secret_value": ["secret_environment_variables['API_TOKEN']", "NUL character"],
}

MASKING_RUNNER = """
import runpy
import sys


class _Redacting:
    # Every write goes through Airflow's secrets masker, as a worker's log does.
    def __init__(self, stream):
        self._stream = stream
        self.redact = None

    def write(self, text):
        if self.redact is not None and text:
            text = self.redact(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


out, err = _Redacting(sys.stdout), _Redacting(sys.stderr)
sys.stdout, sys.stderr = out, err  # before Airflow configures logging on these streams
from airflow.sdk._shared.secrets_masker import redact

out.redact = err.redact = redact
sys.argv = [{run_dag!r}, *sys.argv[1:]]
runpy.run_path({run_dag!r}, run_name="__main__")
"""

_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+)")


@dataclass(repr=False)
class BehaviourRun:
    """The outcome of the module's one DAG run and where to look at it."""

    outcome: dict[str, Any]
    output: str
    client: MlflowClient
    task_instances: dict[str, tuple[str, int]]
    segments: dict[str, list[str]] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"BehaviourRun(tasks={self.task_instances})"

    def task_log(self, task_id: str) -> str:
        """Everything printed while ``task_id`` ran (all its tries)."""
        return "\n".join(self.segments.get(task_id, []))

    def tries_logged(self, task_id: str) -> int:
        return sum(1 for line in self.output.splitlines()
                   if (m := _TASK_START.search(line)) and m.group(1) == task_id)

    def mlflow_run(self, task_id: str) -> MlflowRun:
        runs = self.runs_of(task_id)
        assert len(runs) == 1, f"expected one MLflow run for task {task_id!r}, got {len(runs)}"
        return runs[0]

    def runs_of(self, task_id: str) -> list[MlflowRun]:
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            return []
        return self.client.search_runs([experiment.experiment_id],
                                       filter_string=f"tags.`airflow.task_id` = '{task_id}'")


def _split_by_task(output: str) -> dict[str, list[str]]:
    segments: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        match = _TASK_START.search(line)
        if match:
            current = segments.setdefault(match.group(1), [])
        if current is not None:
            current.append(line)
    return segments


@pytest.fixture(scope="module")
def behaviour(tmp_path_factory: pytest.TempPathFactory, _airflow_db_template: Path,
              _mlflow_db_template: Path) -> Iterator[BehaviourRun]:
    """Run the ``behaviour`` DAG once, through the masking runner, and keep everything it left."""
    base = tmp_path_factory.mktemp("behaviour")
    state, home, dags = base / "state", base / "airflow", base / "dags"
    for folder in (state, home, dags):
        folder.mkdir()
    shutil.copyfile(_airflow_db_template, home / "airflow.db")
    shutil.copyfile(_mlflow_db_template, state / "mlflow.db")
    source = base / "src"
    write_script(source, TRAIN_SCRIPT)
    (dags / "behaviour.py").write_text(textwrap.dedent(BEHAVIOUR_DAG.format(
        source=str(source), succeeds=SECRETS["succeeds"], fails=SECRETS["fails"])))
    runner = base / "masked_run_dag.py"
    runner.write_text(MASKING_RUNNER.format(run_dag=str(RUN_DAG)))

    env = {k: v for k, v in airflow_environment(home, dags).items()
           if not k.startswith(("AIRFLOW_CONN_", "MLFLOW_"))}
    env.update(TRAINING_RUNS_HOME=str(state), AIRFLOW_CONN_WAREHOUSE=WAREHOUSE_CONNECTION)
    result = subprocess.run([sys.executable, str(runner), "behaviour", LOGICAL_DATE], env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    (base / "behaviour.log").write_text(output)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0 and lines, f"dag.test() of behaviour crashed:\n{output[-5000:]}"
    with sqlite3.connect(home / "airflow.db") as connection:
        rows = connection.execute(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = 'behaviour'").fetchall()
    try:
        yield BehaviourRun(
            outcome=json.loads(lines[-1]),
            output=output,
            client=MlflowClient(f"sqlite:///{state / 'mlflow.db'}"),
            task_instances={task_id: (task_state, tries) for task_id, task_state, tries in rows},
            segments=_split_by_task(output),
        )
    finally:
        still_open = _open_runs(state / "mlflow.db")
        leftovers = _live_runner_pids(state)
        assert not still_open, f"the DAG run left MLflow runs open: {still_open}"
        assert not leftovers, f"the DAG run left job processes running: {leftovers}"


# ---------------------------------------------------------------------- (a) parsing
PARSE_DAG = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider.operators import SubmitTrainingRunOperator

with DAG(dag_id="parse_only", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    SubmitTrainingRunOperator(
        task_id="train",
        source_directory="/data/{{ ds }}/src",
        script="train.py",
        arguments=["--date", "{{ ds }}", "--lr", 0.01],
        compute_target="no_such_target",
        tracking_conn_id="no_such_mlflow",
        environment="no-such-env:7",
        environment_variables={"DSN": "{{ conn.no_such_db.get_uri() }}"},
        secret_environment_variables={"API_TOKEN": "{{ var.value.no_such_variable }}"},
        tags={"day": "{{ ds }}"},
        deferrable=True,
    )
"""

PARSE_PROBE = r"""
import json, socket, sys, time

calls = []
_connect = socket.socket.connect


def _recording_connect(self, address):
    calls.append(f"socket.connect({address!r})")
    return _connect(self, address)


socket.socket.connect = _recording_connect

from airflow.dag_processing.dagbag import DagBag
from airflow.models.connection import Connection as ConnectionModel
from airflow.sdk.bases.hook import BaseHook
from airflow.sdk.definitions.connection import Connection
from airflow.sdk.definitions.variable import Variable


def _record(owner, name):
    original = owner.__dict__[name].__func__

    def recorder(cls, *args, **kwargs):
        calls.append(f"{owner.__name__}.{name}{args!r}")
        return original(cls, *args, **kwargs)

    setattr(owner, name, classmethod(recorder))


for owner, name in ((BaseHook, "get_connection"), (Connection, "get"), (Variable, "get"),
                    (ConnectionModel, "get_connection_from_secrets")):
    _record(owner, name)

start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - start
mlflow_imported = "mlflow" in sys.modules
dag = bag.dags.get("parse_only")
task = dag.get_task("train") if dag is not None else None
serialized = ""
if dag is not None:
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = json.dumps(DagSerialization.to_dict(dag))
print(json.dumps({
    "seconds": seconds,
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dags),
    "calls": calls,
    "mlflow_imported": mlflow_imported,
    "task": None if task is None else {
        "arguments": task.arguments, "compute_target": task.compute_target,
        "environment": task.environment, "source_directory": task.source_directory,
        "cached": sorted(k for k in ("compute_hook", "tracking_hook") if k in vars(task)),
    },
    "serialized_has_link": '"MLflow run"' in serialized,
}))
"""


def test_dag_file_parses_fast_without_touching_connections(tmp_path: Path, airflow_home: Path) -> None:
    dags = tmp_path / "parse_dags"
    dags.mkdir()
    (dags / "parse_only.py").write_text(PARSE_DAG)
    env = {k: v for k, v in airflow_environment(airflow_home, dags).items()
           if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}
    result = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(dags)], env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["import_errors"] == {}, report["import_errors"]
    assert report["dags"] == ["parse_only"]
    assert report["calls"] == [], f"parsing looked up connections, variables or the network: {report['calls']}"
    assert report["seconds"] < 1.0, f"parsing the DAG file took {report['seconds']:.2f}s"
    assert not report["mlflow_imported"], "parsing a DAG file imported mlflow"
    task = report["task"]
    assert task["arguments"] == ["--date", "{{ ds }}", "--lr", 0.01], "templates stay raw until execute()"
    assert task["compute_target"] == "no_such_target" and task["environment"] == "no-such-env:7"
    assert task["source_directory"] == "/data/{{ ds }}/src"
    assert task["cached"] == [], "hooks are built lazily, in execute()"
    assert report["serialized_has_link"], "the DAG serializes with the MLflow run extra link"


# ---------------------------------------------------------------------- (b) validation in execute()
@pytest.mark.parametrize("task_id", sorted(BAD_CONFIGURATIONS))
def test_bad_configuration_fails_the_task_once_naming_the_field(behaviour: BehaviourRun, task_id: str) -> None:
    log = behaviour.task_log(task_id)
    assert log, f"no log for task {task_id!r}"
    for text in BAD_CONFIGURATIONS[task_id]:
        assert text in log, f"the failure of {task_id!r} does not mention {text!r}:\n{log[-3000:]}"
    state, tries = behaviour.task_instances[task_id]
    assert state == "failed"
    errors = sorted({line.strip() for line in log.splitlines() if re.match(r"\s*[\w.]+(Error|Exception): ", line)})
    assert (tries, behaviour.tries_logged(task_id)) == (1, 1), (
        f"{task_id!r} ran {tries} tries (retries=2): a bad configuration must raise AirflowFailException, "
        f"not be retried; it raised: {errors}"
    )
    assert "AirflowFailException" in log
    assert behaviour.runs_of(task_id) == [], "validation happens before any MLflow run is created"


# ---------------------------------------------------------------------- (c) a successful run
def test_successful_run_returns_its_result_as_xcom(behaviour: BehaviourRun) -> None:
    assert behaviour.outcome["tasks"]["succeeds"] == "success", behaviour.task_log("succeeds")[-3000:]
    result = behaviour.outcome["xcom"]["succeeds"]
    assert set(result) == {"run_id", "experiment_id", "status", "metrics", "artifact_uri", "tracking_url",
                           "outputs"}
    run = behaviour.mlflow_run("succeeds")
    assert result["run_id"] == run.info.run_id
    assert result["experiment_id"] == run.info.experiment_id
    assert behaviour.client.get_experiment(result["experiment_id"]).name == EXPERIMENT
    assert result["status"] == "Completed" and run.info.status == "FINISHED"
    assert result["metrics"] == {"loss": 0.25}
    assert result["artifact_uri"] == run.info.artifact_uri
    assert result["tracking_url"] is None, "no UI address for the embedded SQLite store"


def test_templated_fields_are_rendered(behaviour: BehaviourRun, tmp_path: Path) -> None:
    run = behaviour.mlflow_run("succeeds")
    assert run.data.tags["logical_day"] == DS and run.data.tags["team"] == "search"
    assert run.data.tags["training.command"] == f"python train.py --date {DS} --epochs 3"
    seen_file = behaviour.client.download_artifacts(run.info.run_id, "outputs/seen.json", str(tmp_path))
    seen = json.loads(Path(seen_file).read_text())
    assert seen == {"arguments": ["--date", DS, "--epochs", "3"], "run_date": DS}
    log = behaviour.task_log("succeeds")
    assert f'[run] arguments: ["--date", "{DS}", "--epochs", "3"]' in log
    assert f"[run] run date: {DS}" in log


# ---------------------------------------------------------------------- (d) a failing run
def test_failing_script_fails_the_task_with_the_error_and_log_tail(behaviour: BehaviourRun) -> None:
    assert behaviour.outcome["tasks"]["fails"] == "failed"
    assert behaviour.task_instances["fails"] == ("failed", 1)
    run = behaviour.mlflow_run("fails")
    log = behaviour.task_log("fails")
    assert f"Training run {run.info.run_id} ended Failed: the command exited with code 3" in log, log[-3000:]
    tail = log.split("--- last lines of its log ---", 1)
    assert len(tail) == 2, f"the task log has no log tail:\n{log[-3000:]}"
    assert FAILURE_MARKER in tail[1] and "arguments: [\"--fail\"]" in tail[1]
    assert "fails" not in behaviour.outcome["xcom"]


def test_failing_run_is_recorded_failed_with_its_outputs(behaviour: BehaviourRun) -> None:
    run = behaviour.mlflow_run("fails")
    assert run.info.status == "FAILED"
    assert run.data.tags["training.state"] == "Failed"
    assert run.data.tags["training.exit_code"] == "3"
    assert "exited with code 3" in run.data.tags["training.error"]
    artifacts = {a.path for folder in ("outputs", "logs", "system_logs")
                 for a in behaviour.client.list_artifacts(run.info.run_id, folder)}
    assert {"outputs/seen.json", "logs/progress.txt", "system_logs/driver.log"} <= artifacts
    assert [m.value for m in behaviour.client.get_metric_history(run.info.run_id, "loss")] == [0.9, 0.5, 0.25]


# ---------------------------------------------------------------------- (e) secrets
@pytest.mark.parametrize("task_id", ["succeeds", "fails"])
def test_secrets_are_masked_in_the_task_log(behaviour: BehaviourRun, task_id: str) -> None:
    log = behaviour.task_log(task_id)
    assert "[run] api token: ***" in log, log[-3000:]
    assert "[run] db password: ***" in log
    if task_id == "succeeds":
        assert "[run] warehouse: ***" in log, "a value rendered from a connection's password is masked"
        assert f"[run] run date: {DS}" in log, "values that are not secret stay readable"
    for name, value in SECRETS[task_id].items():
        assert value not in behaviour.output, f"{name} of task {task_id!r} shows in clear in the task log"


@pytest.mark.parametrize("task_id", ["succeeds", "fails"])
def test_secrets_never_reach_mlflow_params_or_tags(behaviour: BehaviourRun, task_id: str) -> None:
    run = behaviour.mlflow_run(task_id)
    recorded = {**{f"param {k}": f"{k}={v}" for k, v in run.data.params.items()},
                **{f"tag {k}": f"{k}={v}" for k, v in run.data.tags.items()}}
    leaks = sorted(f"{name} in {where}" for where, text in recorded.items()
                   for name, value in SECRETS[task_id].items() if value in text)
    assert not leaks, f"secret values written to MLflow params/tags of {task_id!r}: {leaks}"


# ---------------------------------------------------------------------- the mlflow connection
def _mlflow_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "mlflow", **fields}))


def test_mlflow_connection_with_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider.hooks import MLflowTrackingHook

    _mlflow_connection(monkeypatch, "mlflow_basic", host="http://mlflow.example.com:5000", login="alice",
                       password="mlflow-pass-1234")
    hook = MLflowTrackingHook("mlflow_basic")
    assert hook.get_tracking_uri() == "http://mlflow.example.com:5000"
    assert hook.get_credentials() == {"MLFLOW_TRACKING_USERNAME": "alice",
                                      "MLFLOW_TRACKING_PASSWORD": "mlflow-pass-1234"}


def test_mlflow_connection_with_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider.hooks import MLflowTrackingHook

    _mlflow_connection(monkeypatch, "mlflow_token", host="mlflow.example.com", port=5001,
                       extra={"token": "token-in-extra-99"})
    hook = MLflowTrackingHook("mlflow_token")
    assert hook.get_tracking_uri() == "http://mlflow.example.com:5001"
    assert hook.get_credentials() == {"MLFLOW_TRACKING_TOKEN": "token-in-extra-99"}

    _mlflow_connection(monkeypatch, "mlflow_password_token", host="https://mlflow.example.com",
                       password="token-as-password-42")
    hook = MLflowTrackingHook("mlflow_password_token")
    assert hook.get_tracking_uri() == "https://mlflow.example.com"
    assert hook.get_credentials() == {"MLFLOW_TRACKING_TOKEN": "token-as-password-42"}


def test_mlflow_connection_in_uri_form(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider.hooks import MLflowTrackingHook

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_URI", "mlflow://bob:uri-pass-5678@mlflow.example.com:5000")
    hook = MLflowTrackingHook("mlflow_uri")
    assert hook.get_tracking_uri() == "http://mlflow.example.com:5000"
    assert hook.get_credentials() == {"MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": "uri-pass-5678"}


def test_mlflow_connection_port_goes_before_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tracking server behind a gateway path, its port given in the connection's port field."""
    from airflow_provider.hooks import MLflowTrackingHook

    _mlflow_connection(monkeypatch, "mlflow_gateway", host="http://gateway.example.com/mlflow", port=8080)
    assert MLflowTrackingHook("mlflow_gateway").get_tracking_uri() == "http://gateway.example.com:8080/mlflow"


def test_no_mlflow_connection_uses_the_embedded_store(isolated_state: Path) -> None:
    from airflow_provider.hooks import MLflowTrackingHook

    hook = MLflowTrackingHook(None)
    assert hook.get_tracking_uri() == f"sqlite:///{isolated_state / 'mlflow.db'}"
    assert hook.get_credentials() == {}


def test_unknown_mlflow_connection_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider.core import ConfigurationError
    from airflow_provider.hooks import MLflowTrackingHook

    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_MLFLOW", raising=False)
    with pytest.raises(ConfigurationError) as caught:
        MLflowTrackingHook("no_such_mlflow").get_tracking_uri()
    assert caught.value.field == "tracking_conn_id" and "'no_such_mlflow'" in caught.value.problem


def test_mlflow_connection_with_an_unknown_scheme_names_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider.core import ConfigurationError
    from airflow_provider.hooks import MLflowTrackingHook

    _mlflow_connection(monkeypatch, "mlflow_foo", host="foo://bar")
    with pytest.raises(ConfigurationError) as caught:
        MLflowTrackingHook("mlflow_foo").get_tracking_uri()
    assert caught.value.field == "tracking_conn_id 'mlflow_foo' (its host)" and "'foo'" in caught.value.problem


# ---------------------------------------------------------------------- (d) retries follow the error tree
RETRY_DAG = """
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider.core.hyperdrive import GridParameterSampling, choice
from airflow_provider.operators import HyperparameterSweepOperator, SubmitTrainingRunOperator

SOURCE = {source!r}
RETRIES = {{"retries": 1, "retry_delay": timedelta(seconds=1)}}
SWEEP = {{"hyperparameter_sampling": GridParameterSampling({{"--lr": choice(0.1, 0.2)}}),
          "primary_metric_name": "loss", "primary_metric_goal": "MINIMIZE"}}

with DAG(dag_id="retry_behaviour", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    SubmitTrainingRunOperator(task_id="docker_unreachable", source_directory=SOURCE, script="train.py",
                              compute_target="dead_docker", **RETRIES)
    SubmitTrainingRunOperator(task_id="tracking_down", source_directory=SOURCE, script="train.py",
                              tracking_conn_id="dead_mlflow", **RETRIES)
    HyperparameterSweepOperator(task_id="sweep_docker_unreachable", source_directory=SOURCE, script="train.py",
                                compute_target="dead_docker", **SWEEP, **RETRIES)
    HyperparameterSweepOperator(task_id="sweep_unknown_target", source_directory=SOURCE, script="train.py",
                                compute_target="no_such_target", **SWEEP, **RETRIES)
    HyperparameterSweepOperator(task_id="sweep_bad_tls", source_directory=SOURCE, script="train.py",
                                compute_target="bad_tls_docker", **SWEEP, **RETRIES)
"""

# task_id -> (tries it must take with retries=1, a text of its failure, whether AirflowFailException ended it)
RETRY_EXPECTATIONS = {
    "docker_unreachable": (2, "cannot be reached", False),
    "tracking_down": (2, "is unreachable", False),
    "sweep_docker_unreachable": (2, "cannot be reached", False),
    "sweep_unknown_target": (1, "no_such_target", True),
    "sweep_bad_tls": (1, "is not a readable file", True),
}


def test_both_operators_retry_transient_errors_and_fail_configuration_errors_at_once(
        tmp_path: Path, _airflow_db_template: Path, _mlflow_db_template: Path) -> None:
    """An unreachable daemon or tracking server is retried (Airflow's retries apply) by the run and the
    sweep operator alike; an unknown target or a bad TLS file fails the task at its first try."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = int(probe.getsockname()[1])
    base = tmp_path / "retry_behaviour"
    state, home, dags = base / "state", base / "airflow", base / "dags"
    for folder in (state, home, dags):
        folder.mkdir(parents=True)
    shutil.copyfile(_airflow_db_template, home / "airflow.db")
    shutil.copyfile(_mlflow_db_template, state / "mlflow.db")
    source = base / "src"
    write_script(source, "print('never runs')\n")
    (dags / "retry_behaviour.py").write_text(textwrap.dedent(RETRY_DAG.format(source=str(source))))
    env = {k: v for k, v in airflow_environment(home, dags).items()
           if not k.startswith(("AIRFLOW_CONN_", "MLFLOW_"))}
    env.update(
        TRAINING_RUNS_HOME=str(state),
        AIRFLOW_CONN_DEAD_DOCKER=json.dumps({"conn_type": "training_docker", "host": f"tcp://127.0.0.1:{closed}"}),
        AIRFLOW_CONN_BAD_TLS_DOCKER=json.dumps({"conn_type": "training_docker", "host": "tcp://127.0.0.1:2376",
                                                "extra": {"tls_ca_cert": str(tmp_path / "no-such-ca.pem")}}),
        AIRFLOW_CONN_DEAD_MLFLOW=json.dumps({"conn_type": "mlflow", "host": f"http://127.0.0.1:{closed}"}),
    )
    result = subprocess.run([sys.executable, str(RUN_DAG), "retry_behaviour", LOGICAL_DATE], env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"dag.test() of retry_behaviour crashed:\n{output[-5000:]}"
    with sqlite3.connect(home / "airflow.db") as connection:
        rows = dict(((task_id, (task_state, tries)) for task_id, task_state, tries in connection.execute(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = 'retry_behaviour'")))
    segments = _split_by_task(output)
    for task_id, (tries, text, failed_at_once) in RETRY_EXPECTATIONS.items():
        log = "\n".join(segments.get(task_id, []))
        assert rows[task_id] == ("failed", tries), f"{task_id}: {rows[task_id]} (expected {tries} tries)\n{log[-3000:]}"
        assert text in log, f"{task_id} does not say {text!r}:\n{log[-3000:]}"
        assert ("AirflowFailException" in log) is failed_at_once, f"{task_id}:\n{log[-3000:]}"
    assert _open_runs(state / "mlflow.db") == [] and _live_runner_pids(state) == []


# ---------------------------------------------------------------------- a store on the worker's disk
@pytest.mark.parametrize("executor", ["CeleryExecutor", "LocalExecutor,CeleryExecutor",
                                      "airflow.providers.cncf.kubernetes.executors.kubernetes_executor.KubernetesExecutor"])
def test_a_store_on_the_workers_disk_is_refused_when_tasks_spread_over_machines(
        monkeypatch: pytest.MonkeyPatch, executor: str) -> None:
    from airflow_provider.core.errors import ConfigurationError
    from airflow_provider.hooks import MLflowTrackingHook

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    monkeypatch.delenv("TRAINING_RUNS_SINGLE_MACHINE", raising=False)
    hook = MLflowTrackingHook(None)
    for uri in (hook.get_tracking_uri(), "sqlite:////srv/shared/mlflow.db", "file:///srv/mlruns", "/srv/mlruns"):
        with pytest.raises(ConfigurationError) as raised:
            hook.check_shared_by_every_worker(uri)
        message = str(raised.value)
        assert "tracking_conn_id" in message and "TRAINING_RUNS_SINGLE_MACHINE=1" in message
        assert executor in message
        assert not raised.value.retryable
    hook.check_shared_by_every_worker("http://mlflow.example.com:5000")
    hook.check_shared_by_every_worker("postgresql+psycopg2://u@db.example.com/mlflow")
    monkeypatch.setenv("TRAINING_RUNS_SINGLE_MACHINE", "1")
    hook.check_shared_by_every_worker(hook.get_tracking_uri())


def test_a_store_on_the_workers_disk_is_fine_with_the_local_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider.hooks import MLflowTrackingHook

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    hook = MLflowTrackingHook(None)
    hook.check_shared_by_every_worker(hook.get_tracking_uri())
