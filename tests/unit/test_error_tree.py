"""The error tree says whether a retry can help, and the libraries' own errors are mapped onto it.

Every mapping is exercised with the real library: MLflow against a closed port, a small HTTP server
answering like a troubled MLflow server, and a real SQLite store; docker against a closed port and
the local daemon; paramiko and sockets against a closed port and the loopback sshd.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider.core import errors
from airflow_provider.core.errors import (
    ArtifactNotFoundError,
    ConfigurationError,
    EnvironmentBuildError,
    EnvironmentNotFoundError,
    RunCanceledError,
    RunFailedError,
    SnapshotError,
    TargetConfigurationError,
    TargetError,
    TrackingError,
    TrackingRefusedError,
    TrackingUnavailableError,
    TrainingRunError,
    is_retryable,
    is_run_failure,
)
from airflow_provider.core.script_run import ScriptRun
from airflow_provider.core.submit import Experiment
from airflow_provider.core.tracking import RunState, Tracker, is_refusal

RETRYABLE = {
    ConfigurationError: False,
    SnapshotError: False,
    EnvironmentNotFoundError: False,
    TargetConfigurationError: False,
    TargetError: True,
    EnvironmentBuildError: True,
    TrackingError: True,
    TrackingUnavailableError: True,
    TrackingRefusedError: False,
    ArtifactNotFoundError: False,
    RunFailedError: True,
    RunCanceledError: True,
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fast_http_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's HTTP client fails at once instead of retrying for minutes."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


# ---------------------------------------------------------------------- the tree itself
def test_every_class_of_the_tree_says_whether_it_is_retryable() -> None:
    classes = {getattr(errors, name) for name in errors.__all__ if isinstance(getattr(errors, name), type)}
    assert classes - {TrainingRunError} == set(RETRYABLE), "a class of errors.py is missing from this test"
    for error_class, retryable in RETRYABLE.items():
        assert error_class.retryable is retryable, error_class.__name__


def test_the_docstring_draws_every_class_with_its_retry_column() -> None:
    drawing = errors.__doc__ or ""
    for error_class, retryable in RETRYABLE.items():
        line = next((line for line in drawing.splitlines() if f"── {error_class.__name__} " in line), None)
        assert line is not None, f"{error_class.__name__} is not drawn in errors.py's docstring"
        column = "run" if issubclass(error_class, RunFailedError) else ("yes" if retryable else "no")
        assert f" {column} " in line, f"the drawing says otherwise for {error_class.__name__}: {line!r}"


def test_a_target_configuration_error_is_caught_as_either_parent() -> None:
    error = TargetConfigurationError("unknown compute target 'x'")
    with pytest.raises(TargetError):
        raise error
    with pytest.raises(ConfigurationError):
        raise error
    assert str(error) == "unknown compute target 'x'" and error.field == "compute_target"
    assert not is_retryable(error)


def test_is_retryable_and_is_run_failure() -> None:
    assert is_retryable(RuntimeError("a bug")), "errors outside the tree keep Airflow's retries"
    assert not is_retryable(ConfigurationError("f", "bad"))
    assert is_retryable(TargetError("host unreachable"))
    canceled = RunFailedError.for_status("r1", "Canceled", "stopped")
    assert isinstance(canceled, RunCanceledError) and is_run_failure(canceled)
    failed = RunFailedError.for_status("r1", "Failed", "exit code 3")
    assert type(failed) is RunFailedError and is_run_failure(failed)
    assert not is_run_failure(TargetError("x"))


# ---------------------------------------------------------------------- MLflow
def test_a_tracking_server_that_does_not_answer_is_unavailable(fast_http_failures: None) -> None:
    from mlflow.exceptions import MlflowException

    tracker = Tracker(f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(TrackingUnavailableError) as caught:
        tracker.get_run("0123456789abcdef")
    assert caught.value.retryable
    assert isinstance(caught.value.__cause__, MlflowException)
    with pytest.raises(TrackingUnavailableError):
        _ = Experiment("down", tracking_uri=tracker.tracking_uri).id
    assert not is_refusal(caught.value)


class _TroubledMLflow(http.server.BaseHTTPRequestHandler):
    """Answers every MLflow request with the status and error code set on the server."""

    def do_GET(self) -> None:
        status, code = self.server.answer  # type: ignore[attr-defined]
        body = json.dumps({"error_code": code, "message": f"answered {status}"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def troubled_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TroubledMLflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "code", "expected"), [
    (503, "TEMPORARILY_UNAVAILABLE", TrackingUnavailableError),
    (500, "INTERNAL_ERROR", TrackingUnavailableError),
    (400, "INVALID_PARAMETER_VALUE", TrackingRefusedError),
    (403, "PERMISSION_DENIED", TrackingRefusedError),
])
def test_mlflow_answers_map_onto_the_tree(troubled_server: http.server.ThreadingHTTPServer, fast_http_failures: None,
                                          status: int, code: str, expected: type[TrackingError]) -> None:
    troubled_server.answer = (status, code)  # type: ignore[attr-defined]
    tracker = Tracker(f"http://127.0.0.1:{troubled_server.server_address[1]}")
    with pytest.raises(TrackingError) as caught:
        tracker.get_run("0123456789abcdef")
    assert type(caught.value) is expected, f"{status} {code} became {caught.value!r}"
    assert caught.value.retryable is (expected is TrackingUnavailableError)
    assert caught.value.__cause__ is not None and "mlflow" in type(caught.value.__cause__).__module__
    assert is_refusal(caught.value) is (code == "INVALID_PARAMETER_VALUE")


def test_a_sqlite_store_refuses_a_missing_run_and_a_changed_param(tracking_uri: str) -> None:
    tracker = Tracker(tracking_uri)
    with pytest.raises(TrackingRefusedError) as missing:
        tracker.get_run("0123456789abcdef0123456789abcdef")
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST" and not missing.value.retryable
    run_id = tracker.create_run(tracker.experiment_id("refusals"), {})
    try:
        tracker.log_params(run_id, {"lr": "0.1"})
        with pytest.raises(TrackingRefusedError) as changed:
            tracker.log_params(run_id, {"lr": "0.2"})
        assert changed.value.error_code == "INVALID_PARAMETER_VALUE"
        assert is_refusal(changed.value), "the relay skips what MLflow refuses, wrapped or not"
        assert "Changing param values is not allowed" in str(changed.value)
    finally:
        tracker.end(run_id, RunState.COMPLETED)


def test_the_same_experiment_name_twice_is_the_same_experiment(tracking_uri: str) -> None:
    tracker = Tracker(tracking_uri)
    assert tracker.experiment_id("twice") == Tracker(tracking_uri).experiment_id("twice")


def test_a_missing_artifact_is_an_artifact_not_found_error_and_a_file_not_found_error(
        tracking_uri: str, tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    experiment = Experiment("artifacts", tracking_uri=tracking_uri)
    run_id = experiment.tracker.create_run(experiment.id, {})
    try:
        experiment.tracker.log_text(run_id, "weights", "outputs/model.txt")
        run = ScriptRun(experiment, run_id, None, None)
        with pytest.raises(FileNotFoundError) as caught:
            run.download_file("outputs/missing.pkl", tmp_path / "missing.pkl")
        assert isinstance(caught.value, ArtifactNotFoundError) and not caught.value.retryable
        assert "has no artifact 'outputs/missing.pkl'" in str(caught.value)
        assert "outputs/model.txt" in str(caught.value), "the message lists what the run has"
        assert isinstance(caught.value.__cause__, MlflowException)
        assert run.download_file("outputs/model.txt", tmp_path).read_text() == "weights"
    finally:
        experiment.tracker.end(run_id, RunState.COMPLETED)


# ---------------------------------------------------------------------- docker
def test_a_docker_daemon_that_does_not_answer_is_retryable() -> None:
    import docker

    from airflow_provider.core.targets.docker import DockerTarget

    target = DockerTarget(base_url=f"tcp://127.0.0.1:{_closed_port()}")
    with pytest.raises(TargetError) as caught:
        target.check()
    assert caught.value.retryable and not isinstance(caught.value, ConfigurationError)
    assert isinstance(caught.value.__cause__, docker.errors.DockerException)
    with pytest.raises(TargetError):
        target.find("0123456789abcdef")


def test_unreadable_docker_tls_files_are_a_configuration_error(tmp_path: Path) -> None:
    from airflow_provider.core.targets.docker import DockerTarget

    target = DockerTarget(base_url="tcp://127.0.0.1:2376", tls={"ca_cert": str(tmp_path / "no-ca.pem")})
    with pytest.raises(TargetConfigurationError, match=r"no-ca\.pem") as caught:
        target.check()
    assert not caught.value.retryable


def test_a_request_the_daemon_refuses_is_a_configuration_error(docker_target: object, tmp_path: Path) -> None:
    import docker

    from airflow_provider.core.environments.prepared import PreparedEnvironment
    from airflow_provider.core.snapshot import SnapshotStore
    from airflow_provider.core.targets.docker import DockerTarget

    assert isinstance(docker_target, DockerTarget)
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("print('hi')\n")
    store = SnapshotStore()
    snapshot = store.take(source).snapshot
    refused = DockerTarget(docker_target.base_url, run_options={"mem_limit": 1024})  # below the daemon's minimum
    environment = PreparedEnvironment("current", "python3", "f" * 16, False, None, "base image")
    with pytest.raises(TargetConfigurationError) as caught:
        refused.stage("0123456789abcdef", snapshot, store, {}, environment)
    assert not caught.value.retryable
    assert isinstance(caught.value.__cause__, docker.errors.APIError)
    assert caught.value.__cause__.response is not None and caught.value.__cause__.response.status_code == 400


# ---------------------------------------------------------------------- paramiko and sockets
def test_an_ssh_host_that_does_not_answer_is_retryable() -> None:
    from airflow_provider.core.targets.ssh_connection import SSHConnection, SSHSettings

    connection = SSHConnection(SSHSettings("127.0.0.1", _closed_port(), username="root", password="x",
                                           accept_unknown_host_keys=True, connect_timeout=3))
    with pytest.raises(TargetError, match="cannot reach the SSH host") as caught:
        _ = connection.client
    assert caught.value.retryable and not isinstance(caught.value, ConfigurationError)
    assert isinstance(caught.value.__cause__, OSError)


def test_a_connection_that_keeps_dropping_is_retryable_with_the_socket_error_as_cause() -> None:
    from airflow_provider.core.targets.ssh_connection import SSHConnection, SSHSettings

    port = _closed_port()
    connection = SSHConnection(SSHSettings("127.0.0.1", port))
    with pytest.raises(TargetError, match="failed 2 times") as caught:
        connection.retrying(lambda: socket.create_connection(("127.0.0.1", port), timeout=3), attempts=2,
                            what="a call")
    assert caught.value.retryable
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_a_refused_login_and_an_unknown_host_key_are_configuration_errors(ssh_loopback: object,
                                                                          tmp_path: Path) -> None:
    import paramiko

    from airflow_provider.core.targets.ssh_connection import SSHConnection, SSHSettings

    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    unknown = SSHConnection(SSHSettings("127.0.0.1", 2222, username="root", password="x",
                                        known_hosts=str(known_hosts), connect_timeout=5))
    with pytest.raises(TargetConfigurationError, match=r"host key of 127\.0\.0\.1:2222 is unknown") as caught:
        _ = unknown.client
    assert not caught.value.retryable
    refused = SSHConnection(SSHSettings("127.0.0.1", 2222, username="nobody-here", password="wrong",
                                        accept_unknown_host_keys=True, connect_timeout=5))
    with pytest.raises(TargetConfigurationError, match="authentication as 'nobody-here'") as login:
        _ = refused.client
    assert isinstance(login.value.__cause__, paramiko.AuthenticationException)


def test_an_unknown_target_name_is_a_configuration_error() -> None:
    from airflow_provider.core.targets import resolve_target, target_from_spec

    with pytest.raises(TargetConfigurationError, match="no_such_target") as caught:
        resolve_target("no_such_target")
    assert caught.value.field == "ScriptRunConfig.compute_target"
    with pytest.raises(ConfigurationError):
        target_from_spec({"kind": "nope"})


# ---------------------------------------------------------------------- sweeps refuse what they cannot honour
@pytest.mark.parametrize(("argument", "value"), [("reattach", False), ("params", {"lr": "0.1"})])
def test_a_sweep_refuses_run_only_arguments(tracking_uri: str, tmp_path: Path, argument: str, value: object) -> None:
    from airflow_provider.core import ScriptRunConfig
    from airflow_provider.core.hyperdrive import GridParameterSampling, HyperDriveConfig, choice

    (tmp_path / "train.py").write_text("print('hi')\n")
    config = HyperDriveConfig(ScriptRunConfig(str(tmp_path), "train.py"),
                              GridParameterSampling({"--lr": choice(0.1, 0.2)}), "loss", "MINIMIZE")
    experiment = Experiment("refused-sweep", tracking_uri=tracking_uri)
    with pytest.raises(ConfigurationError, match=rf"Experiment\.submit\.{argument}") as caught:
        experiment.submit(config, **{argument: value})  # type: ignore[call-overload]
    assert not caught.value.retryable
    assert experiment.tracker.client.search_runs([experiment.id]) == [], "refused before any run exists"


# ---------------------------------------------------------------------- operators
@pytest.mark.parametrize(("error", "raised"), [
    (ConfigurationError("ScriptRunConfig.script", "missing"), "AirflowFailException"),
    (TargetConfigurationError("unknown compute target"), "AirflowFailException"),
    (TrackingRefusedError("refused", "INVALID_PARAMETER_VALUE"), "AirflowFailException"),
    (RunFailedError("r1", "Failed", "exit code 3"), "AirflowException"),
    (RunCanceledError("r1", "Canceled", "stopped"), "AirflowException"),
    (TargetError("host unreachable"), "TargetError"),
    (TrackingUnavailableError("server down"), "TrackingUnavailableError"),
    (EnvironmentBuildError("pip failed"), "EnvironmentBuildError"),
])
def test_operators_turn_the_tree_into_airflow_failures(error: TrainingRunError, raised: str) -> None:
    from airflow_provider.operators.task_runs import raise_for_airflow

    with pytest.raises(Exception) as caught:
        raise_for_airflow(error)
    assert type(caught.value).__name__ == raised
    assert caught.value is error or caught.value.__cause__ is error
    from airflow.sdk.exceptions import AirflowFailException

    assert isinstance(caught.value, AirflowFailException) is (not error.retryable)


def test_run_key_and_run_name_are_the_same_for_every_operator() -> None:
    from types import SimpleNamespace

    from airflow_provider.operators.task_runs import MAX_RUN_NAME, TRIAL_SUFFIX_ROOM, task_run_key, task_run_name

    ti = SimpleNamespace(dag_id="d", task_id="t" * 300, run_id="manual__1", map_index=-1)
    assert task_run_key(ti) == f"d/{'t' * 300}/manual__1/-1"
    assert len(task_run_name(ti)) == MAX_RUN_NAME
    assert len(task_run_name(ti, sweep=True)) == MAX_RUN_NAME - TRIAL_SUFFIX_ROOM
    short = SimpleNamespace(dag_id="d", task_id="train", run_id="manual__1", map_index=3)
    assert task_run_name(short) == task_run_name(short, sweep=True) == "train-manual__1"


def test_tracking_messages_leave_out_database_credentials_and_keep_the_cause(tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    from airflow_provider.core.tracking import tracking_error

    refused = tracking_error(MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST),
                             "postgresql://mlflow:s3cret-pw@db:5432/mlflow", "get_run")
    assert type(refused) is TrackingRefusedError and "s3cret-pw" not in str(refused)
    assert "postgresql://db:5432/mlflow" in str(refused)
    with pytest.raises(FileNotFoundError) as missing:
        open(tmp_path / "not-there", "rb")  # noqa: SIM115 - the real error of a local artifact store
    mapped = tracking_error(missing.value, "file:///tmp/mlruns", "download_artifacts")
    assert type(mapped) is TrackingRefusedError and mapped.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert type(tracking_error(PermissionError("denied"), "file:///tmp/mlruns", "log_artifact")) is TrackingError
