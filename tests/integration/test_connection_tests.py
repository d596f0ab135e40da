"""The Test button of every connection form: each hook's ``test_connection`` against the real service.

What Airflow's API server does for the button (``Connection.test_connection``): build the hook from
a connection it exports as ``AIRFLOW_CONN_<ID>``, call ``test_connection()`` and show the message.
Each success names what answered; each failure names the field to fix and says whether testing
again later can help.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from airflow_provider.hooks import compute_hook_for
from airflow_provider.hooks.mlflow import MLflowTrackingHook
from tests.integration.test_docker_remote import TLS_URL, tls_paths  # noqa: F401 - fixture
from tests.ssh_hosts import SSHHost

pytestmark = pytest.mark.integration


def _connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    return conn_id


def _ssh_fields(host: SSHHost, **extra: Any) -> dict[str, Any]:
    return {"conn_type": "training_ssh", "host": host.host, "port": host.port, "login": host.username,
            "extra": {"key_file": str(host.key_path), "host_key": host.host_public_key, **extra}}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_local_reports_its_writable_jobs_folder_and_refuses_one_it_cannot_write(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conn_id = _connection(monkeypatch, "t_local", conn_type="training_local",
                          extra={"jobs_root": str(tmp_path / "jobs")})
    ok, message = compute_hook_for(conn_id).test_connection()
    assert ok, message
    assert f"jobs folder {tmp_path / 'jobs'} is writable" in message and "Python 3." in message

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    conn_id = _connection(monkeypatch, "t_local_bad", conn_type="training_local",
                          extra={"jobs_root": str(blocker / "jobs")})
    ok, message = compute_hook_for(conn_id).test_connection()
    assert not ok
    assert "jobs_root" in message and "will not help until the connection is changed" in message


def test_docker_over_tls_reports_the_daemon_and_the_image(monkeypatch: pytest.MonkeyPatch,
                                                          tls_paths: dict[str, str]) -> None:  # noqa: F811
    conn_id = _connection(monkeypatch, "t_docker", conn_type="training_docker", host=TLS_URL,
                          extra={**tls_paths, "image": "training-runs/python:3.11"})
    ok, message = compute_hook_for(conn_id).test_connection()
    assert ok, message
    assert f"Docker daemon at {TLS_URL} over TLS: Docker " in message
    assert "default image training-runs/python:3.11 is there" in message and "GPU runtime" in message

    missing = _connection(monkeypatch, "t_docker_image", conn_type="training_docker",
                          host="unix:///var/run/docker.sock", extra={"image": "training-runs/absent:0"})
    ok, message = compute_hook_for(missing).test_connection()
    assert ok, message
    assert "training-runs/absent:0 is not there yet" in message


def test_docker_without_a_daemon_says_a_later_test_may_help(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = _connection(monkeypatch, "t_docker_down", conn_type="training_docker",
                          host=f"tcp://127.0.0.1:{_closed_port()}")
    ok, message = compute_hook_for(conn_id).test_connection()
    assert not ok
    assert "cannot be reached" in message and "Testing again later may help." in message


def test_ssh_reports_the_host_key_rule_python_and_work_root(monkeypatch: pytest.MonkeyPatch,
                                                            ssh_container: SSHHost) -> None:
    conn_id = _connection(monkeypatch, "t_ssh", **_ssh_fields(ssh_container, work_root="/tmp/tr-conn-test"))
    ok, message = compute_hook_for(conn_id).test_connection()
    assert ok, message
    assert message.startswith(f"SSH host root@{ssh_container.host}:22: host key ssh-ed25519 SHA256:")
    assert "matches the pinned host key" in message and "work root /tmp/tr-conn-test is writable" in message


def test_ssh_with_a_wrong_pinned_key_is_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch,
                                                                 ssh_container: SSHHost, tmp_path: Path) -> None:
    other = tmp_path / "k"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    wrong = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    conn_id = _connection(monkeypatch, "t_ssh_wrong", **_ssh_fields(ssh_container, host_key=wrong))
    ok, message = compute_hook_for(conn_id).test_connection()
    assert not ok
    assert "host_key" in message or "host key" in message
    assert "will not help until the connection is changed" in message


def test_ssh_with_an_unknown_key_and_no_rule_says_how_to_trust_it(monkeypatch: pytest.MonkeyPatch,
                                                                  ssh_container: SSHHost, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    fields = _ssh_fields(ssh_container, known_hosts=str(empty))
    del fields["extra"]["host_key"]
    conn_id = _connection(monkeypatch, "t_ssh_unknown", **fields)
    ok, message = compute_hook_for(conn_id).test_connection()
    assert not ok
    assert "is unknown" in message and "host_key" in message


def test_mpi_reports_every_host_and_its_launcher(monkeypatch: pytest.MonkeyPatch,
                                                 mpi_hosts: list[SSHHost]) -> None:
    first = mpi_hosts[0]
    conn_id = _connection(monkeypatch, "t_mpi", conn_type="training_mpi", login=first.username,
                          extra={"hosts": ",".join(f"{h.host}:2" for h in mpi_hosts), "key_file": str(first.key_path),
                                 "host_key": first.host_public_key, "work_root": "/tmp/tr-conn-test"})
    ok, message = compute_hook_for(conn_id).test_connection()
    assert ok, message
    lines = message.splitlines()
    assert len(lines) == len(mpi_hosts)
    for index, (line, host) in enumerate(zip(lines, mpi_hosts, strict=True)):
        assert line.startswith(f"host {index + 1} of {len(mpi_hosts)} root@{host.host}:22: host key ")
        assert "mpirun at /" in line and "2 slots" in line


def test_mpi_names_the_launcher_a_host_lacks(monkeypatch: pytest.MonkeyPatch, ssh_container: SSHHost) -> None:
    conn_id = _connection(monkeypatch, "t_mpi_none", conn_type="training_mpi", login=ssh_container.username,
                          extra={"hosts": ssh_container.host, "key_file": str(ssh_container.key_path),
                                 "host_key": ssh_container.host_public_key, "work_root": "/tmp/tr-conn-test",
                                 "launcher": "mpich"})
    ok, message = compute_hook_for(conn_id).test_connection()
    assert not ok
    assert "mpiexec.mpich is not on" in message and "launcher" in message


def test_slurm_reports_the_login_node_and_its_partitions(monkeypatch: pytest.MonkeyPatch,
                                                         slurm_cluster: SSHHost) -> None:
    conn_id = _connection(monkeypatch, "t_slurm", conn_type="training_slurm", host=slurm_cluster.host,
                          login=slurm_cluster.username,
                          extra={"key_file": str(slurm_cluster.key_path), "host_key": slurm_cluster.host_public_key,
                                 "work_root": "/shared/tr-conn-test"})
    ok, message = compute_hook_for(conn_id).test_connection()
    assert ok, message
    assert message.startswith(f"Slurm login node root@{slurm_cluster.host}:22: host key ")
    assert "partitions (" in message and "work root /shared/tr-conn-test is writable" in message


def test_mlflow_server_answers_and_a_closed_port_does_not(monkeypatch: pytest.MonkeyPatch, mlflow_server: str) -> None:
    conn_id = _connection(monkeypatch, "t_mlflow", conn_type="mlflow", host=mlflow_server)
    hook = MLflowTrackingHook(conn_id)
    before = dict(os.environ)
    ok, message = hook.test_connection()
    assert ok, message
    assert message.startswith(f"MLflow tracking server at {mlflow_server} (MLflow 3.")
    assert dict(os.environ) == before  # the API server's environment is left alone (no credentials put there)

    closed = _connection(monkeypatch, "t_mlflow_down", conn_type="mlflow", host=f"http://127.0.0.1:{_closed_port()}")
    ok, message = MLflowTrackingHook(closed).test_connection()
    assert not ok and "cannot be reached" in message and "Testing again later may help." in message


def test_mlflow_url_of_something_else_names_the_host_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn_id = _connection(monkeypatch, "t_not_mlflow", conn_type="mlflow",
                              host=f"http://127.0.0.1:{server.server_address[1]}")
        ok, message = MLflowTrackingHook(conn_id).test_connection()
    finally:
        server.shutdown()
        server.server_close()
    assert not ok and "host" in message and "does not answer as an MLflow tracking server" in message


def test_mlflow_sqlite_store_counts_its_experiments(monkeypatch: pytest.MonkeyPatch, tracking_uri: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    ok, message = MLflowTrackingHook(None).test_connection()
    assert ok, message
    assert "MLflow SQLite store" in message and "experiments" in message
