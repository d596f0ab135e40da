"""Real SSH servers for the SSH target's tests, started by ``scripts/components.sh``.

* the loopback sshd on 127.0.0.1:2222 (this machine's filesystem; state in ``$COMPONENTS/sshd``);
* the SSH host container ``training-runs-ssh-host`` at 172.28.0.10:22 (docker network
  ``training-runs-net``), with its own filesystem and hostname;
* three MPI host containers ``training-runs-mpi-1..3`` at 172.28.0.21..23:22 (hostnames mpi-1..3,
  same network), with this machine's Open MPI and mpi4py in their system Python; the nodes log in to
  each other as root, so ``mpirun`` on one of them starts ranks on the others.

* a Slurm cluster: the login node ``training-runs-slurm-ctl`` at 172.28.0.40:22 (slurmctld and
  slurmdbd), compute nodes ``training-runs-slurm-node-1..2``, ``/shared`` on all of them being
  :data:`SLURM_SHARED` here.

Root logs in to all of them with the client key ``$COMPONENTS/sshd/client_ed25519``. The helpers here also
disturb them on purpose: cut the open sessions, rotate a host key (and put the original back).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

COMPONENTS_DIR = Path(os.environ.get("TRAINING_RUNS_COMPONENTS_DIR", "/var/lib/training-runs-components"))
SSHD_DIR = COMPONENTS_DIR / "sshd"
SSH_HOST_DIR = COMPONENTS_DIR / "ssh-host"
CLIENT_KEY = SSHD_DIR / "client_ed25519"
LOOPBACK_PORT = 2222
CONTAINER = "training-runs-ssh-host"
CONTAINER_IP = "172.28.0.10"
MPI_HOST_DIR = COMPONENTS_DIR / "mpi-host"
MPI_CONTAINERS = (("training-runs-mpi-1", "172.28.0.21"), ("training-runs-mpi-2", "172.28.0.22"),
                  ("training-runs-mpi-3", "172.28.0.23"))
SLURM_DIR = COMPONENTS_DIR / "slurm"
SLURM_SHARED = SLURM_DIR / "shared"
"""The Slurm cluster's shared filesystem on this machine (``/shared`` on its nodes)."""
SLURM_LOGIN = ("training-runs-slurm-ctl", "172.28.0.40")
SLURM_NODES = ("training-runs-slurm-node-1", "training-runs-slurm-node-2")
LOOPBACK = "loopback"

# Kills the session processes (``sshd: root@notty``, ``sshd: root@pts/0``, ``sshd: root [priv]``) that
# are children of the listening sshd whose pid is argv[1]; prints how many. Runs on this machine for
# the loopback sshd and inside the container (``docker exec``) for the SSH host.
_CUT_SCRIPT = r"""
import os, signal, sys, time
listener = sys.argv[1]
def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return fields[0], fields[1], command
killed = []
for entry in os.listdir("/proc"):
    info = entry.isdigit() and stat(entry)
    if info and info[1] == listener and info[0] not in "ZX" and info[2].startswith("sshd: root"):
        try:
            os.kill(int(entry), signal.SIGKILL)
            killed.append(entry)
        except ProcessLookupError:
            pass
deadline = time.monotonic() + 5
while time.monotonic() < deadline and any((info := stat(pid)) and info[0] not in "ZX" for pid in killed):
    time.sleep(0.01)
print(len(killed))
"""


@dataclass(frozen=True)
class SSHHost:
    """One SSH server root can log in to with ``key_path``."""

    host: str
    port: int
    username: str
    key_path: Path
    host_public_key: str  # the original host key, "ssh-ed25519 AAAA..." as in known_hosts
    name: str  # "loopback" or the container's name

    @property
    def known_hosts_line(self) -> str:
        """The known_hosts line that trusts this server's original host key."""
        address = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{address} {self.host_public_key}"


def _public_key(path: Path) -> str | None:
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    return " ".join(fields[:2]) if len(fields) >= 2 else None


def presented_host_key(host: str, port: int, timeout: float = 3.0) -> str | None:
    """The host key the SSH server at ``host:port`` presents now ("ssh-ed25519 AAAA..."), or None."""
    import paramiko

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    except (paramiko.SSHException, OSError, EOFError):
        return None
    finally:
        transport.close()
        sock.close()


def wait_for_host_key(host: SSHHost, expected: str, timeout: float = 15.0, settled: float = 0.5) -> None:
    """Return once ``host`` presents ``expected`` to every new connection for ``settled`` seconds in
    a row; fail after ``timeout`` seconds.

    sshd re-executes itself on SIGHUP, and a listener can still serve one more connection (with the
    key it had) just before it does: one matching probe does not mean the restart is over, so the
    key must be seen steadily (observed: the port closed right after a first match)."""
    deadline = time.monotonic() + timeout
    seen = None
    steady_since: float | None = None
    while time.monotonic() < deadline:
        seen = presented_host_key(host.host, host.port, timeout=2.0)
        now = time.monotonic()
        if seen != expected:
            steady_since = None
        elif steady_since is None:
            steady_since = now
        elif now - steady_since >= settled:
            return
        time.sleep(0.05)
    raise AssertionError(f"{host.name} presents {seen!r}, not steadily {expected!r}, after {timeout}s")


def _docker(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, timeout=60)


def loopback_host() -> SSHHost | None:
    """The loopback sshd on 127.0.0.1:2222, or None when it does not answer or its keys are unreadable."""
    original = _public_key(SSHD_DIR / "host_ed25519.pub")
    if original is None or not os.access(CLIENT_KEY, os.R_OK):
        return None
    if presented_host_key("127.0.0.1", LOOPBACK_PORT) is None:
        return None
    return SSHHost("127.0.0.1", LOOPBACK_PORT, "root", CLIENT_KEY, original, LOOPBACK)


def container_host() -> SSHHost | None:
    """The SSH host container at 172.28.0.10:22, or None when it is not running or not answering."""
    original = _public_key(SSH_HOST_DIR / "host_ed25519.pub")
    if original is None or not os.access(CLIENT_KEY, os.R_OK) or shutil.which("docker") is None:
        return None
    try:
        running = _docker("inspect", "-f", "{{.State.Running}}", CONTAINER).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if running != "true" or presented_host_key(CONTAINER_IP, 22) is None:
        return None
    return SSHHost(CONTAINER_IP, 22, "root", CLIENT_KEY, original, CONTAINER)


def mpi_hosts() -> list[SSHHost]:
    """The three MPI host containers (172.28.0.21..23:22, in rank-host order), or [] when not all of
    them are running and answering."""
    original = _public_key(MPI_HOST_DIR / "host_ed25519.pub")
    if original is None or not os.access(CLIENT_KEY, os.R_OK) or shutil.which("docker") is None:
        return []
    names = [name for name, _ in MPI_CONTAINERS]
    try:
        running = _docker("inspect", "-f", "{{.State.Running}}", *names).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return []
    if running != ["true"] * len(names):
        return []
    hosts = [SSHHost(ip, 22, "root", CLIENT_KEY, original, name) for name, ip in MPI_CONTAINERS]
    if any(presented_host_key(host.host, host.port) is None for host in hosts):
        return []
    return hosts


def slurm_login() -> SSHHost | None:
    """The Slurm cluster's login node (its controller, 172.28.0.40:22), or None when the cluster's
    containers are not all running or the login node does not answer."""
    original = _public_key(SLURM_DIR / "host_ed25519.pub")
    if original is None or not os.access(CLIENT_KEY, os.R_OK) or shutil.which("docker") is None:
        return None
    names = [SLURM_LOGIN[0], *SLURM_NODES]
    try:
        running = _docker("inspect", "-f", "{{.State.Running}}", *names).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if running != ["true"] * len(names) or presented_host_key(SLURM_LOGIN[1], 22) is None:
        return None
    return SSHHost(SLURM_LOGIN[1], 22, "root", CLIENT_KEY, original, SLURM_LOGIN[0])


def _loopback_listener() -> int:
    pid = int((SSHD_DIR / "sshd.pid").read_text().split()[0])
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        command = handle.read().replace(b"\0", b" ").decode()
    if str(SSHD_DIR / "sshd_config") not in command:
        raise AssertionError(f"pid {pid} in {SSHD_DIR / 'sshd.pid'} is not the loopback sshd: {command!r}")
    return pid


def cut_sessions(host: SSHHost) -> int:
    """Kill (SIGKILL) the server-side sshd processes serving root's connections to ``host``, as a
    network cut would end them; commands those sessions started keep running. Returns how many
    session processes were killed (one per connection)."""
    if host.name == LOOPBACK:
        command = [sys.executable, "-c", _CUT_SCRIPT, str(_loopback_listener())]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    else:
        result = _docker("exec", host.name, "python3", "-c", _CUT_SCRIPT, "1")
    if result.returncode != 0:
        raise AssertionError(f"cutting the sessions of {host.name} failed: {result.stderr}")
    return int(result.stdout.strip())


def _new_key_pair() -> tuple[bytes, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` atomically."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _install_container_key(host: SSHHost, private: bytes, public: str) -> None:
    """Make the key pair the container's host key (private key on stdin), then SIGHUP sshd (pid 1)."""
    script = (
        "set -e; cd /etc/ssh; umask 077; cat >.rotated_key; "
        f"printf '%s\\n' '{public}' >.rotated_key.pub; chmod 644 .rotated_key.pub; "
        "mv .rotated_key ssh_host_ed25519_key; mv .rotated_key.pub ssh_host_ed25519_key.pub; kill -HUP 1"
    )
    result = _docker("exec", "-i", host.name, "sh", "-c", script, stdin=private.decode())
    if result.returncode != 0:
        raise AssertionError(f"installing a host key in {host.name} failed: {result.stderr}")


def rotate_host_key(host: SSHHost) -> str:
    """Give ``host``'s sshd a new ed25519 host key; returns once new connections see it, with the
    new public key ("ssh-ed25519 AAAA..."). Open sessions stay up. Undo with ``restore_host_key``."""
    private, public = _new_key_pair()
    if host.name == LOOPBACK:
        _write(SSHD_DIR / "active_host_key", private, 0o600)
        _write(SSHD_DIR / "active_host_key.pub", f"{public} training-runs-rotated\n".encode(), 0o644)
        os.kill(_loopback_listener(), signal.SIGHUP)  # sshd re-executes itself and reloads its keys
    else:
        _install_container_key(host, private, public)
    wait_for_host_key(host, public)
    return public


def restore_host_key(host: SSHHost) -> None:
    """Put ``host``'s original host key back (no-op when it is in place); returns once it is served."""
    if presented_host_key(host.host, host.port) == host.host_public_key:
        return
    if host.name == LOOPBACK:
        _write(SSHD_DIR / "active_host_key", (SSHD_DIR / "host_ed25519").read_bytes(), 0o600)
        _write(SSHD_DIR / "active_host_key.pub", (SSHD_DIR / "host_ed25519.pub").read_bytes(), 0o644)
        os.kill(_loopback_listener(), signal.SIGHUP)
    else:
        script = "cd /etc/ssh && cp -p original/ssh_host_ed25519_key original/ssh_host_ed25519_key.pub . && kill -HUP 1"
        result = _docker("exec", host.name, "sh", "-c", script)
        if result.returncode != 0:
            raise AssertionError(f"restoring the host key of {host.name} failed: {result.stderr}")
    wait_for_host_key(host, host.host_public_key)
