"""Shared fixtures: every test gets its own state folder and its own MLflow store."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE_COMPONENTS = os.environ.get("TRAINING_RUNS_REQUIRE_COMPONENTS") == "1"
SESSION_MARKER = "PYTEST_TRAINING_SUITE_SESSION"
"""Set for the whole suite and inherited by every process it starts: the end of the session finds
(and stops) any that is still running, so the suite never leaks an Airflow scheduler or a server."""
_LEAK_GRACE_SECONDS = float(os.environ.get("PYTEST_LEAK_GRACE", "90"))


def pytest_sessionstart(session: pytest.Session) -> None:
    import uuid

    os.environ[SESSION_MARKER] = uuid.uuid4().hex


def _processes_of_this_session() -> list[tuple[int, str]]:
    marker = f"{SESSION_MARKER}={os.environ.get(SESSION_MARKER, '-')}".encode()
    mine = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == mine:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if marker not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        from tests.helpers import pid_alive

        if pid_alive(int(entry)):
            found.append((int(entry), command[:200]))
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the suite if a process it started outlives it (after a grace period for detached
    finalizers, which end by themselves); such processes are stopped either way."""
    import signal
    import time

    deadline = time.monotonic() + _LEAK_GRACE_SECONDS
    left = _processes_of_this_session()
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = _processes_of_this_session()
    if not left:
        return
    for pid, _ in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = "\n".join(f"  {pid}: {command}" for pid, command in left)
    message = f"processes started by the test suite were still running at its end (now killed):\n{lines}"
    if reporter is not None:
        reporter.write_line(message, red=True)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def skip_or_fail(reason: str) -> None:
    """Skip a test for a missing component, or fail it when CI requires every component."""
    if REQUIRE_COMPONENTS:
        pytest.fail(f"required component missing (TRAINING_RUNS_REQUIRE_COMPONENTS=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The provider's cache folder for the whole session (the cached MLflow schema is made once)."""
    return tmp_path_factory.mktemp("training-runs-cache")


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _session_cache: Path) -> Iterator[Path]:
    """Point the provider's state folder and MLflow at fresh folders inside the test's tmp_path."""
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("TRAINING_RUNS_HOME", str(state))
    monkeypatch.setenv("TRAINING_RUNS_CACHE", str(_session_cache))  # never the user's cache
    # A test meets an unavailable tracking store on purpose and expects the error at once; the tests
    # of the retries (and the multi-worker topology, which has its own environment) set a budget.
    monkeypatch.setenv("TRAINING_RUNS_TRACKING_RETRY_SECONDS", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    yield state


def _open_runs(database: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(database) as connection:
        try:
            rows = connection.execute(
                "SELECT run_uuid FROM runs WHERE status IN ('RUNNING', 'SCHEDULED') AND lifecycle_stage='active'"
            ).fetchall()
        except sqlite3.OperationalError:  # the store was never initialised
            return []
    return [row[0] for row in rows]


def _live_runner_pids(state: Path) -> list[int]:
    import json

    from airflow_provider.runtime import job_runner

    alive = []
    for runner_state in state.glob("local/jobs/*/runner.json"):
        data = json.loads(runner_state.read_text())
        for pid_key, ticks_key in (("runner_pid", "runner_start_ticks"), ("child_pid", None)):
            pid = data.get(pid_key)
            if pid and job_runner.is_alive(int(pid), data.get(ticks_key) if ticks_key else None):
                alive.append(int(pid))
    return alive


@pytest.fixture(autouse=True)
def nothing_left_behind(isolated_state: Path) -> Iterator[None]:
    """Fail a test that leaves an MLflow run open or a job process running in its state folder."""
    yield
    database = isolated_state / "mlflow.db"
    if database.exists():
        still_open = _open_runs(database)
        assert not still_open, f"the test left MLflow runs open: {still_open}"
    leftovers = _live_runner_pids(isolated_state)
    for pid in leftovers:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    assert not leftovers, f"the test left job processes running: {leftovers}"


@pytest.fixture(scope="session")
def _mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised, empty MLflow SQLite store, made once per session (migrations take seconds)."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-template")
    database = folder / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments()
    return database


@pytest.fixture
def tracking_uri(isolated_state: Path, _mlflow_db_template: Path) -> str:
    """The test's own MLflow store: the embedded default location, pre-initialised."""
    import shutil

    shutil.copyfile(_mlflow_db_template, isolated_state / "mlflow.db")
    return f"sqlite:///{isolated_state / 'mlflow.db'}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on a free 127.0.0.1 port, for the whole session; yields its URI."""
    import contextlib
    import socket
    import subprocess
    import sys

    import httpx

    from tests.helpers import stop_process_tree, wait_until

    folder = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
               "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"]
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               cwd=folder, env=environment)
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError((folder / "server.log").read_text()[-3000:])
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{uri}/health", timeout=2).status_code == 200
        return False

    try:
        wait_until(healthy, timeout=120, message="mlflow server to answer")
        yield uri
    finally:
        stop_process_tree(process.pid)
        process.wait()
        log.close()


def _s3_log_errors() -> str:
    """The last error lines of the S3 server's daemons, to say why it is not up."""
    logs = Path("/var/lib/training-runs-components/s3/log")
    lines = [
        f"{log.name}: {line.strip()}"
        for log in sorted(logs.glob("*.log"))
        for line in log.read_text(errors="replace").splitlines()[-200:]
        if " -1 " in line or "error" in line.lower()
    ]
    return "; daemons' last errors: " + " | ".join(lines[-5:]) if lines else ""


@pytest.fixture(scope="session")
def s3_server() -> dict[str, str]:
    """The S3 server scripts/components.sh starts (Ceph's RADOS Gateway on 127.0.0.1:7480): its
    endpoint and the test user's keys. Each test makes its own bucket."""
    import httpx

    endpoint = "http://127.0.0.1:7480"
    try:
        answered = httpx.get(endpoint, timeout=3).status_code == 200
    except httpx.HTTPError:
        answered = False
    if not answered:
        skip_or_fail(f"no S3 server at {endpoint} (run scripts/components.sh as root){_s3_log_errors()}")
    return {"endpoint_url": endpoint, "key": "training-runs-test", "secret": "training-runs-test-secret"}


# --- SSH hosts (started by scripts/components.sh; see tests/ssh_hosts.py) ---------------------------

from tests.ssh_hosts import (  # noqa: E402
    SSHHost,
    container_host,
    loopback_host,
    mpi_hosts,
    restore_host_key,
    slurm_login,
)


@pytest.fixture(scope="session")
def ssh_loopback() -> SSHHost:
    """The loopback sshd on 127.0.0.1:2222 (root, client key; this machine's filesystem)."""
    host = loopback_host()
    if host is None:
        skip_or_fail("no loopback sshd on 127.0.0.1:2222 (run scripts/components.sh as root)")
    assert host is not None
    restore_host_key(host)  # an interrupted earlier session may have left it rotated
    return host


@pytest.fixture(scope="session")
def ssh_container() -> Iterator[SSHHost]:
    """The SSH host container training-runs-ssh-host at 172.28.0.10:22 (own filesystem and hostname).
    The work roots the session's tests made there (``/tmp/tr-*``, ``/tmp/training-runs-*``: hundreds
    of MB each, with environments) are removed when the session ends."""
    host = container_host()
    if host is None:
        skip_or_fail("no SSH host container at 172.28.0.10:22 (run scripts/components.sh as root)")
    assert host is not None
    restore_host_key(host)  # an interrupted earlier session may have left it rotated
    before = _work_roots(host.name)
    yield host
    made = sorted(_work_roots(host.name) - before)
    if made:
        subprocess.run(["docker", "exec", host.name, "rm", "-rf", "--", *made], capture_output=True, timeout=300,
                       check=False)


def _work_roots(container: str) -> set[str]:
    """The tests' work roots in ``container``'s ``/tmp``."""
    listed = subprocess.run(["docker", "exec", container, "sh", "-c",
                             "ls -d /tmp/tr-* /tmp/training-runs-* /tmp/data-* 2>/dev/null"],
                            capture_output=True, text=True, timeout=60, check=False)
    return {line for line in listed.stdout.splitlines() if line.startswith("/tmp/")}


@pytest.fixture(scope="session")
def slurm_cluster() -> SSHHost:
    """The Slurm cluster's login node (controller) at 172.28.0.40:22, with compute nodes
    slurm-node-1..2 and ``/shared`` (``tests.ssh_hosts.SLURM_SHARED`` here) on all of them."""
    host = slurm_login()
    if host is None:
        skip_or_fail("no Slurm cluster at 172.28.0.40 (run scripts/components.sh as root)")
    assert host is not None
    return host


@pytest.fixture(name="mpi_hosts", scope="session")
def _mpi_hosts() -> list[SSHHost]:
    """The MPI host containers training-runs-mpi-1..3 at 172.28.0.21..23:22 (hostnames mpi-1..3;
    Open MPI and mpi4py installed; root logs in with the client key, and the nodes to each other)."""
    hosts = mpi_hosts()
    if not hosts:
        skip_or_fail("no MPI host containers at 172.28.0.21..23:22 (run scripts/components.sh as root)")
    return hosts


@pytest.fixture
def docker_target() -> Iterator[Any]:
    """A DockerTarget on the local daemon, with the base image the suite builds (never pulled).
    The test fails if it leaves a container of its own (other sessions may share the daemon)."""
    from airflow_provider.core.targets.docker import DEFAULT_IMAGE, LABEL_MANAGED, DockerTarget

    candidate = DockerTarget()
    try:
        candidate.check()
        candidate.client.images.get(DEFAULT_IMAGE)
    except Exception as exc:
        skip_or_fail(f"no Docker engine or base image {DEFAULT_IMAGE} (run scripts/components.sh as root): {exc}")

    def managed() -> list[Any]:
        return list(candidate.client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=true"}))

    before = {c.id for c in managed()}
    yield candidate
    leftovers = [c for c in managed() if c.id not in before]
    for container in leftovers:
        container.remove(force=True)
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"
