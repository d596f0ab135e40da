"""Sanity checks of the SSH servers scripts/components.sh starts (fixtures ssh_loopback, ssh_container)."""

from __future__ import annotations

import base64
import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.ssh_hosts import (
    SSHHost,
    cut_sessions,
    presented_host_key,
    restore_host_key,
    rotate_host_key,
    wait_for_host_key,
)

pytestmark = pytest.mark.integration

BOTH = ["ssh_loopback", "ssh_container"]


@pytest.fixture(params=BOTH)
def ssh_host(request: pytest.FixtureRequest) -> SSHHost:
    host = request.getfixturevalue(request.param)
    assert isinstance(host, SSHHost)
    return host


def connect(host: SSHHost, trusted_key: str | None = None) -> paramiko.SSHClient:
    """A paramiko client that trusts only ``trusted_key`` (the host's original key by default)."""
    key_type, key_data = (trusted_key or host.host_public_key).split()[:2]
    client = paramiko.SSHClient()
    address = host.host if host.port == 22 else f"[{host.host}]:{host.port}"
    client.get_host_keys().add(address, key_type, paramiko.Ed25519Key(data=base64.b64decode(key_data)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.host, port=host.port, username=host.username, key_filename=str(host.key_path),
                   look_for_keys=False, allow_agent=False, timeout=10)
    return client


@contextlib.contextmanager
def connected(host: SSHHost) -> Iterator[paramiko.SSHClient]:
    client = connect(host)
    try:
        yield client
    finally:
        client.close()


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, stdout, _ = client.exec_command(command, timeout=10)
    output = stdout.read().decode()
    return stdout.channel.recv_exit_status(), output


def test_host_accepts_the_client_key_and_runs_python(ssh_host: SSHHost) -> None:
    with connected(ssh_host) as client:
        assert run(client, "python3 -c 'print(1)'") == (0, "1\n")
        assert run(client, "id -un") == (0, "root\n")


def test_known_hosts_line_names_the_original_key(ssh_host: SSHHost) -> None:
    assert ssh_host.host_public_key.startswith("ssh-ed25519 AAAA")
    assert ssh_host.known_hosts_line.endswith(ssh_host.host_public_key)
    assert presented_host_key(ssh_host.host, ssh_host.port) == ssh_host.host_public_key


def test_container_is_a_separate_machine(ssh_loopback: SSHHost, ssh_container: SSHHost) -> None:
    marker = Path("/tmp") / f"training-runs-ssh-marker-{uuid.uuid4().hex}"
    marker.write_text("here")
    try:
        with connected(ssh_loopback) as client:
            assert run(client, f"cat {marker}") == (0, "here")
            assert run(client, "hostname")[1].strip() == socket.gethostname()
        with connected(ssh_container) as client:
            assert run(client, f"test -e {marker}")[0] != 0
            hostname = run(client, "hostname")[1].strip()
            assert hostname and hostname != socket.gethostname()
            assert run(client, "hostname -I")[1].split()[0] == ssh_container.host
    finally:
        marker.unlink()


def test_cut_sessions_drops_an_open_connection(ssh_host: SSHHost) -> None:
    client = connect(ssh_host)
    try:
        assert run(client, "true")[0] == 0
        transport = client.get_transport()
        assert transport is not None and transport.is_active()
        assert cut_sessions(ssh_host) >= 1
        deadline = time.monotonic() + 5
        while transport.is_active() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not transport.is_active()
        with pytest.raises((paramiko.SSHException, OSError, EOFError)):
            run(client, "true")
    finally:
        client.close()
    with connected(ssh_host) as again:  # the server itself still serves new connections
        assert run(again, "true")[0] == 0


def test_rotate_host_key_changes_the_key_and_restore_puts_it_back(ssh_host: SSHHost) -> None:
    already_open = connect(ssh_host)
    try:
        new_key = rotate_host_key(ssh_host)
        try:
            assert new_key.startswith("ssh-ed25519 ") and new_key != ssh_host.host_public_key
            assert presented_host_key(ssh_host.host, ssh_host.port) == new_key
            with pytest.raises(paramiko.BadHostKeyException):
                connect(ssh_host).close()
            connect(ssh_host, trusted_key=new_key).close()
            assert run(already_open, "true")[0] == 0  # open sessions survive the rotation
        finally:
            restore_host_key(ssh_host)
    finally:
        already_open.close()
    # sshd re-executes itself on SIGHUP and its port is closed for a moment, so the original key is
    # waited for (as restore_host_key does) rather than probed once.
    wait_for_host_key(ssh_host, ssh_host.host_public_key)
    with connected(ssh_host) as client:
        assert run(client, "true")[0] == 0
