"""What a connection's Test button reports: reach a compute target as a run would, and say what answered.

:func:`reachability` does what a submission does before it uses compute (connect, authenticate,
check the host key by the connection's rules, find the interpreter, the work folder and the
launcher), without staging or running anything, and returns one line per machine reached. It
raises the target's own errors (:class:`~airflow_provider.core.errors.TargetError` when a retry can
help, :class:`~airflow_provider.core.errors.ConfigurationError` when the connection must change),
whose messages name the field and the fix.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from airflow_provider.core.errors import ConfigurationError, TargetError

if TYPE_CHECKING:
    from airflow_provider.core.targets.base import ComputeTarget
    from airflow_provider.core.targets.docker import DockerTarget
    from airflow_provider.core.targets.local import LocalTarget
    from airflow_provider.core.targets.mpi import MPITarget
    from airflow_provider.core.targets.slurm import SlurmTarget
    from airflow_provider.core.targets.ssh import SSHTarget

__all__ = ["reachability"]


def reachability(target: ComputeTarget) -> str:
    """Reach ``target`` as a run would, without running anything, and say what answered.

    :param target: the compute target a connection describes.
    :return: what was reached, one line per machine.
    :raises TargetError: the target cannot be reached now (a retry may help).
    :raises ConfigurationError: the connection is wrong (the message names the field and the fix).
    """
    from airflow_provider.core.targets.docker import DockerTarget
    from airflow_provider.core.targets.local import LocalTarget
    from airflow_provider.core.targets.mpi import MPITarget
    from airflow_provider.core.targets.slurm import SlurmTarget
    from airflow_provider.core.targets.ssh import SSHTarget

    try:
        if isinstance(target, LocalTarget):
            return _local(target)
        if isinstance(target, DockerTarget):
            return _docker(target)
        if isinstance(target, MPITarget):
            return _mpi(target)
        if isinstance(target, SlurmTarget):
            return _slurm(target)
        if isinstance(target, SSHTarget):
            return _ssh(target)
        target.check()
        return f"Reached {target.describe()}."
    finally:
        _close(target)


def _close(target: ComputeTarget) -> None:
    """Close what the test opened (SSH sessions end the hosts' helper agents; a Docker client its pool)."""
    from airflow_provider.core.targets.docker import DockerTarget
    from airflow_provider.core.targets.mpi import MPITarget
    from airflow_provider.core.targets.slurm import SlurmTarget
    from airflow_provider.core.targets.ssh import SSHTarget

    nodes: list[SSHTarget] = []
    if isinstance(target, MPITarget):
        nodes = list(target.nodes)
    elif isinstance(target, SlurmTarget):
        nodes = [target.login]
    elif isinstance(target, SSHTarget):
        nodes = [target]
    for node in nodes:
        node.connection.close()
    if isinstance(target, DockerTarget) and target._client is not None:
        target._client.close()


def _local(target: LocalTarget) -> str:
    root = target.jobs_root
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigurationError("jobs_root", f"{str(root)!r} cannot be written here ({exc.strerror or exc}).",
                                 "choose a folder this worker's user can write, or leave it empty for the "
                                 "default under $AIRFLOW_HOME.") from None
    version = sys.version.split()[0]
    return (f"Local processes on {socket.gethostname()}: jobs folder {root} is writable; Python {version} "
            f"({sys.executable}); conda specifications: {target.conda}.")


def _docker(target: DockerTarget) -> str:
    import docker.errors

    client = target.client  # connects and pings: raises the target's own errors
    try:
        version: dict[str, Any] = client.version()
        info: dict[str, Any] = client.info()
    except docker.errors.APIError as exc:
        raise TargetError(f"the Docker daemon at {target.base_url or 'the local socket'} answered the ping but "
                          f"not a version request ({exc.explanation or exc}); a retry may help.") from None
    runtimes = sorted(info.get("Runtimes") or {})
    gpus = "an NVIDIA GPU runtime" if "nvidia" in runtimes else "no GPU runtime"
    try:
        client.images.get(target.image)
        image = f"default image {target.image} is there"
    except docker.errors.ImageNotFound:
        image = f"default image {target.image} is not there yet (pulled from its registry by the first run)"
    memory = int(info.get("MemTotal") or 0) / 2**30
    return (f"Docker daemon at {target.base_url or 'the local socket'}{' over TLS' if target.tls else ''}: "
            f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}) on "
            f"{info.get('Name', '?')}, {info.get('NCPU', '?')} CPUs, {memory:.1f} GiB, {gpus}; {image}.")


def _host_key_rule(target: SSHTarget) -> str:
    settings = target.settings
    if settings.host_key:
        return "matches the pinned host key"
    known_hosts = settings.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
    if settings.accept_unknown_host_keys:
        return f"checked against {known_hosts}, unknown keys accepted"
    return f"found in {known_hosts}"


def _ssh(target: SSHTarget, role: str = "SSH host") -> str:
    from airflow_provider.core.targets.ssh_connection import fingerprint

    hello = target.hello()  # connects, authenticates, checks the host key, installs or starts the agent
    transport = target.connection.client.get_transport()
    key = transport.get_remote_server_key() if transport is not None else None
    key_text = f"host key {key.get_name()} {fingerprint(key)} {_host_key_rule(target)}" if key is not None else ""
    root = target.root
    answer = target.agent("run", {"argv": ["sh", "-c", 'mkdir -p "$1" && test -w "$1"', "sh", root],
                                  "timeout": 30}, timeout=60)
    if answer.get("code") != 0:
        raise ConfigurationError("work_root", f"{root!r} cannot be written on {target.settings.address} "
                                 f"({str(answer.get('stderr') or '').strip() or 'not writable'}).",
                                 "choose a folder the connection's user can write (default ~/.training-runs).")
    python = str(hello.get("python_version", "?")).split()[0]
    user = f"{target.settings.username}@" if target.settings.username else ""
    system = f"{hello.get('system', '?')} {hello.get('machine', '?')}"
    return (f"{role} {user}{target.settings.address}: {key_text}; {hello.get('hostname', '?')}, {system}, "
            f"Python {python} ({hello.get('executable', '?')}); work root {root} is writable.")


def _mpi(target: MPITarget) -> str:
    from airflow_provider.core.targets.mpi import at_once

    program = "mpiexec.mpich" if target.launcher == "mpich" else "mpirun"

    def one(index: int) -> str:
        node = target.nodes[index]
        line = _ssh(node, f"host {index + 1} of {len(target.nodes)}")
        found = node.agent("which", {"program": program}).get("path")
        if not found:
            raise ConfigurationError("launcher", f"{program} is not on {node.settings.address}'s PATH.",
                                     f"install {'MPICH' if target.launcher == 'mpich' else 'Open MPI'} on every "
                                     "host, or choose the launcher the hosts have (openmpi or mpich).")
        slots = target.slots[index]
        return f"{line[:-1]}; {program} at {found}; {f'{slots} slots' if slots else 'slots: its CPU count'}."

    return "\n".join(at_once(list(range(len(target.nodes))), one))


def _slurm(target: SlurmTarget) -> str:
    line = _ssh(target.login, "Slurm login node")
    target.check()  # the login node has Slurm's commands
    answer = target.login.agent("run", {"argv": ["sinfo", "--noheader", "--summarize"], "timeout": 30}, timeout=60)
    summary = " ".join(str(answer.get("stdout") or "").split()) if answer.get("code") == 0 else "sinfo failed"
    partition = f"; default partition {target.defaults.partition}" if target.defaults.partition else ""
    return f"{line[:-1]}; partitions (name avail limit nodes(A/I/O/T) nodelist): {summary}{partition}."
