"""Sanity checks of the MPI hosts scripts/components.sh starts (fixture mpi_hosts) and of Open MPI on
this machine: mpi4py ranks across the three containers, and on this machine alone."""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter

import paramiko
import pytest

from tests.conftest import skip_or_fail
from tests.ssh_hosts import SSHHost

pytestmark = pytest.mark.integration

NETWORK = "172.28.0.0/24"
# Every rank writes the line "RANK SIZE SUM HOSTNAME", SUM being the allreduce of the ranks, in one
# write (print() may split it, and mpirun then interleaves the pieces of different ranks).
ALLREDUCE = (
    "import os, socket; from mpi4py import MPI; c = MPI.COMM_WORLD; total = c.allreduce(c.Get_rank()); "
    "os.write(1, f'{c.Get_rank()} {c.Get_size()} {total} {socket.gethostname()}\\n'.encode())"
)


def connect(host: SSHHost) -> paramiko.SSHClient:
    """A paramiko client that trusts only the host's original key."""
    key_type, key_data = host.host_public_key.split()[:2]
    client = paramiko.SSHClient()
    client.get_host_keys().add(host.host, key_type, paramiko.Ed25519Key(data=base64.b64decode(key_data)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.host, port=host.port, username=host.username, key_filename=str(host.key_path),
                   look_for_keys=False, allow_agent=False, timeout=10)
    return client


def run_on(host: SSHHost, command: str, timeout: float = 30) -> tuple[int, str, str]:
    client = connect(host)
    try:
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        output, errors = stdout.read().decode(), stderr.read().decode()
        return stdout.channel.recv_exit_status(), output, errors
    finally:
        client.close()


def ranks(output: str) -> list[tuple[int, int, int, str]]:
    rows = [line.split() for line in output.splitlines() if line.strip()]
    return sorted((int(rank), int(size), int(total), hostname) for rank, size, total, hostname in rows)


def test_mpi_hosts_are_three_machines_with_this_machines_open_mpi(mpi_hosts: list[SSHHost]) -> None:
    local = subprocess.run(["mpirun", "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    assert [host.host for host in mpi_hosts] == ["172.28.0.21", "172.28.0.22", "172.28.0.23"]
    for number, host in enumerate(mpi_hosts, start=1):
        status, output, errors = run_on(host, "hostname; mpirun --version | head -1; python3 -c 'import mpi4py'")
        assert status == 0, errors
        assert output.splitlines() == [f"mpi-{number}", local]


def test_mpirun_across_the_mpi_hosts(mpi_hosts: list[SSHHost]) -> None:
    hosts = ",".join(f"{host.host}:2" for host in mpi_hosts)
    command = (
        f"mpirun --allow-run-as-root --host {hosts} -np 6 --mca btl_tcp_if_include {NETWORK} "
        f"--mca oob_tcp_if_include {NETWORK} python3 -c {shlex.quote(ALLREDUCE)}"
    )
    status, output, errors = run_on(mpi_hosts[0], command)
    assert status == 0, f"{output}\n{errors}"
    rows = ranks(output)
    assert [row[:3] for row in rows] == [(rank, 6, 15) for rank in range(6)]
    assert Counter(row[3] for row in rows) == {"mpi-1": 2, "mpi-2": 2, "mpi-3": 2}


def test_mpirun_on_this_machine() -> None:
    if shutil.which("mpirun") is None:
        skip_or_fail("no mpirun on this machine (run scripts/components.sh as root)")
    if subprocess.run([sys.executable, "-c", "import mpi4py"], capture_output=True, timeout=30).returncode != 0:
        skip_or_fail(f"mpi4py is not installed for {sys.executable}")
    command = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "4", sys.executable, "-c", ALLREDUCE]
    # With MPICH installed too, mpi4py's binary wheel must be told which MPI it runs under.
    environment = {**os.environ, "MPI4PY_MPIABI": "openmpi"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=environment)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert [row[:3] for row in ranks(result.stdout)] == [(rank, 4, 6) for rank in range(4)]
