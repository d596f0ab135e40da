"""What a job's supervisor does with the run's resources on a shared host (local machine, SSH host).

Standard library only, runnable as a plain file beside :mod:`job_runner` (which imports it only
when ``job.json`` asks for resources). Before the command starts, :class:`HostResourceSession`:

* reserves ``gpus`` specific devices of the host in the host's reservation ledger
  (:mod:`gpu_reservations`), waiting while too few are free: the supervisor shows the job
  ``queued`` with the reason until then, or until ``queue_timeout_seconds``; the devices go to the
  command as ``CUDA_VISIBLE_DEVICES`` (in ``nvidia-smi``'s PCI order);
* gives it ``cpus`` CPUs (the least used of the host's) and ``memory_gb`` through cgroups where the
  host allows, else CPU affinity and ``RLIMIT_AS`` (:mod:`resource_limits`).

Everything is released when the job ends; a reservation whose supervisor died is reclaimed by
the next job that asks (the ledger checks its owner's pid and start time).

``job.json``'s ``host_resources``: ``{"gpus": 2, "cpus": 4.0, "memory_bytes": ..., "devices":
["0", "1", "2"] or null (ask ``nvidia-smi -L``), "ledger": path or null, "queue_timeout_seconds": 3600,
"hide_gpus": true}`` (``hide_gpus``: the host declares its GPUs and the run asked for none, so it
gets ``CUDA_VISIBLE_DEVICES=""``).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractContextManager
    from typing import Any

try:
    from airflow_provider.runtime import gpu_reservations, resource_limits
except ImportError:  # a plain file beside the supervisor (or run by itself: ``hold``, see :func:`main`)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gpu_reservations  # type: ignore[no-redef]
    import resource_limits  # type: ignore[no-redef]

__all__ = ["HostResourceSession", "NodeHolders", "ResourcesUnavailable", "main"]

DEFAULT_QUEUE_TIMEOUT_SECONDS = 24 * 3600.0
NODE_GPUS_VARIABLE = "TRAINING_RUNS_NODE_GPUS"
"""Set for a multi-node run's launcher: each node's reserved GPUs, ``0,1;2,3`` (node 0 first)."""
_QUEUE_POLL_SECONDS = 1.0


def _gpus(count: int) -> str:
    return "1 GPU" if count == 1 else f"{count} GPUs"


class ResourcesUnavailable(Exception):
    """The run cannot get what it asked for here; the message says why and whether a retry helps.

    :param message: the reason.
    :param canceled: the job was canceled while it waited.
    """

    def __init__(self, message: str, canceled: bool = False) -> None:
        super().__init__(message)
        self.canceled = canceled


class HostResourceSession:
    """The run's share of this host, from reservation to release.

    :param job_dir: the job folder (the reservation's owner, with this process).
    :param request: ``job.json``'s ``host_resources``.
    """

    def __init__(self, job_dir: str, request: Mapping[str, Any]) -> None:
        self.job_dir = job_dir
        self.gpus = int(request.get("gpus") or 0)
        self.cpus = request.get("cpus")
        self.memory_bytes = request.get("memory_bytes")
        self.declared_devices = request.get("devices")
        self.hide_gpus = bool(request.get("hide_gpus"))
        self.queue_timeout = float(request.get("queue_timeout_seconds") or DEFAULT_QUEUE_TIMEOUT_SECONDS)
        self.ledger = gpu_reservations.ReservationLedger(request.get("ledger") or gpu_reservations.DEFAULT_LEDGER)
        self.owner = gpu_reservations.Owner.current(job_dir)
        self.devices: list[str] = []
        self.cpu_set: list[int] = []
        self.limits: resource_limits.ProcessLimits = resource_limits.ProcessLimits.none()
        self.waited_seconds = 0.0
        self.holders: NodeHolders | None = None
        self.node_devices: list[list[str]] | None = None
        """Per node of a multi-node run, the GPUs reserved there (this node first)."""

    def acquire_across(self, nodes: Mapping[str, Any], show_queued: Callable[[str], None],
                       stopped: Callable[[], bool]) -> None:
        """Reserve on this node and on the other nodes of a multi-node run (``job.json``'s
        ``node_reservations``: ``{"first_host", "nodes"}``, see :class:`NodeHolders`).

        :param nodes: the other nodes and how to reach them.
        :param show_queued: called with the reason while a node waits for its GPUs.
        :param stopped: True once the job is canceled.
        :raises ResourcesUnavailable: a node cannot give them, or the wait was canceled.
        """
        self.holders = NodeHolders(list(nodes["nodes"]))
        remote = self.holders.acquire(show_queued, stopped, str(nodes["first_host"]),
                                      lambda: self.acquire(show_queued, stopped))
        self.node_devices = [list(self.devices), *remote]

    def acquire(self, show_queued: Callable[[str], None], stopped: Callable[[], bool]) -> None:
        """Reserve the GPUs (waiting while too few are free) and prepare the CPU and memory limits.

        :param show_queued: called with the reason whenever it changes while the job waits.
        :param stopped: True once the job is canceled (the wait then ends).
        :raises ResourcesUnavailable: the host cannot give it, the wait timed out or was canceled.
        """
        try:
            if self.gpus:
                self._reserve_gpus(show_queued, stopped)
            if self.cpus:
                allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
                wanted = min(len(allowed), math.ceil(float(self.cpus))) if allowed else 0
                if wanted:
                    self.cpu_set = self.ledger.assign_cpus(self.owner, wanted, allowed)
            if self.cpus or self.memory_bytes:
                try:
                    self.limits = resource_limits.ProcessLimits.prepare(
                        os.path.basename(self.job_dir.rstrip("/")),
                        resource_limits.LimitRequest(cpus=float(self.cpus) if self.cpus else None,
                                                     memory_bytes=int(self.memory_bytes) if self.memory_bytes else None,
                                                     cpu_set=self.cpu_set or None))
                except ValueError as exc:
                    raise ResourcesUnavailable(f"{exc} (a retry cannot help)") from None
        except BaseException:
            self.release()
            raise

    def _reserve_gpus(self, show_queued: Callable[[str], None], stopped: Callable[[], bool]) -> None:
        devices = [str(d) for d in self.declared_devices] if self.declared_devices is not None else None
        if devices is None:
            devices = gpu_reservations.discover_gpus()
        if len(devices) < self.gpus:
            if self.declared_devices is not None:
                found, retry = f"declares GPUs {','.join(devices) or '(none)'}", "a retry cannot help"
            elif devices:
                found, retry = f"has {len(devices)} GPUs (nvidia-smi -L)", "a retry cannot help"
            else:
                found = "declares no GPUs and nvidia-smi -L lists none (or is missing, or failed)"
                retry = "a retry helps only if nvidia-smi failed for a passing reason"
            raise ResourcesUnavailable(
                f"resources.gpus={self.gpus}: this host {found}, so the run could never start here; ask for at most "
                f"{len(devices)}, declare the host's GPUs on the connection (gpus), or run on a host with more GPUs "
                f"({retry})")
        started = time.monotonic()
        shown = ""
        while True:
            if stopped():
                raise ResourcesUnavailable("the run was canceled while it waited for GPUs", canceled=True)
            try:
                granted = self.ledger.try_reserve_gpus(self.owner, self.gpus, devices)
            except ValueError as exc:
                raise ResourcesUnavailable(f"{exc} (a retry cannot help)") from None
            if granted is not None:
                self.devices = list(granted)
                self.waited_seconds = time.monotonic() - started
                return
            waited = time.monotonic() - started
            if waited >= self.queue_timeout:
                raise ResourcesUnavailable(
                    f"waited {waited:.0f}s (queue_timeout_seconds={self.queue_timeout:g}) for {_gpus(self.gpus)}: "
                    f"{self.ledger.waiting_reason(self.gpus, devices)}; a retry can help once the host's GPUs are "
                    "free, or raise the connection's queue timeout")
            reason = self.ledger.waiting_reason(self.gpus, devices)
            if reason != shown:
                show_queued(reason)
                shown = reason
            deadline = time.monotonic() + _QUEUE_POLL_SECONDS
            while time.monotonic() < deadline and not stopped():
                time.sleep(0.1)

    def command_environment(self, environment: Mapping[str, str]) -> dict[str, str]:
        """What the command's environment gains: the reserved devices, in ``nvidia-smi``'s order.

        :param environment: the command's environment so far (a run's own ``CUDA_DEVICE_ORDER`` wins).
        """
        if not self.gpus:  # on a host that shares its GPUs, a run that did not ask for one sees none
            return {"CUDA_VISIBLE_DEVICES": ""} if self.hide_gpus else {}
        added = {"CUDA_VISIBLE_DEVICES": ",".join(self.devices)}
        if self.node_devices is not None:  # each rank takes its node's (the rank launcher)
            added[NODE_GPUS_VARIABLE] = ";".join(",".join(devices) for devices in self.node_devices)
        if "CUDA_DEVICE_ORDER" not in environment:
            added["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # nvidia-smi's indices, which the ledger reserves
        return added

    def around_spawn(self) -> AbstractContextManager[Any]:
        """Wrap the command's spawn: it is born inside the limits."""
        return self.limits.around_spawn()

    def describe(self) -> str:
        """One line for the job's log: what the run was given here."""
        parts = []
        if not self.gpus and self.hide_gpus:
            parts.append("no GPU: this host gives its GPUs only to runs that ask for them (resources.gpus)")
        if self.gpus:
            waited = f" after waiting {self.waited_seconds:.0f}s" if self.waited_seconds >= 1 else ""
            parts.append(f"GPUs {','.join(self.devices)} reserved{waited} (CUDA_VISIBLE_DEVICES)")
        if self.node_devices is not None and self.holders is not None:
            parts.append("on the other nodes: " + ", ".join(  # (no zip(strict=): Python 3.9 runs this)
                f"{node['host']} GPUs {','.join(self.node_devices[position + 1])}"
                for position, node in enumerate(self.holders.nodes)))
        if self.cpus or self.memory_bytes:
            parts.append(self.limits.describe())
        return "; ".join(parts)

    def out_of_memory_message(self, killed_by_signal: int | None, log_tail: str) -> str | None:
        """The message of a run that hit its memory limit, else None.

        :param killed_by_signal: the signal that ended the command, if one did.
        :param log_tail: the end of the command's output.
        """
        if not self.memory_bytes or not self.limits.out_of_memory(killed_by_signal, log_tail):
            return None
        return self.limits.out_of_memory_message()

    def release(self) -> None:
        """Give everything back (never raises: the job's ending must still be recorded)."""
        if self.holders is not None:
            with contextlib.suppress(Exception):  # each node reclaims a holder that could not be stopped
                self.holders.release()
        with contextlib.suppress(Exception):  # a limit left behind must not lose the ending
            self.limits.remove()
        with contextlib.suppress(Exception):  # the next reserver reclaims a dead owner's entry
            self.ledger.release(self.owner)


# ---------------------------------------------------------------------- the other nodes of an MPI run
_QUEUED, _RESERVED, _FAILED = "queued ", "reserved ", "failed "


class NodeHolders:
    """GPU reservations on the other nodes of a multi-node run, taken by the supervisor on the first
    node before ``mpirun`` starts: one ``ssh <host> python3 host_resources.py hold ...`` per node (the
    way ``mpirun`` itself reaches the nodes). Each holder reserves on its node and keeps the
    reservation while its standard input is open: the supervisor closes it when the job ends, and a
    supervisor that dies closes it too (the holder then releases); a holder killed outright is a
    dead owner, reclaimed on its node by the next run that asks.

    :param nodes: per node ``{"host", "python", "script", "job_dir", "request"}`` (its
        ``host_resources``).
    """

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.nodes = nodes
        self.devices: list[list[str]] = [[] for _ in nodes]
        self._processes: list[Any] = []

    def acquire(self, show_queued: Callable[[str], None], stopped: Callable[[], bool], first_host: str,
                acquire_first: Callable[[], None]) -> list[list[str]]:
        """Reserve on every node, one after the other in the order of their host names (the first
        node's own reservation, ``acquire_first``, in its turn): two runs that want the same nodes
        never each hold a part and wait for the other's.

        :param show_queued: called with the reason while a node waits for its GPUs.
        :param stopped: True once the job is canceled.
        :param first_host: the first node's host name (where this supervisor runs).
        :param acquire_first: reserves the first node's share.
        :return: the devices of the other nodes, in order.
        :raises ResourcesUnavailable: a node cannot give them (or the wait was canceled).
        """
        order = sorted([(first_host, -1)] + [(node["host"], index) for index, node in enumerate(self.nodes)])
        try:
            for _, index in order:
                if index < 0:
                    acquire_first()
                else:
                    self._reserve_on(index, show_queued, stopped)
        except BaseException:
            self.release()
            raise
        return self.devices

    def _reserve_on(self, index: int, show_queued: Callable[[str], None], stopped: Callable[[], bool]) -> None:
        import json
        import queue
        import shlex
        import subprocess
        import threading

        node = self.nodes[index]
        host = node["host"]
        remote = shlex.join([node["python"], "-I", "-S", node["script"], "hold", node["job_dir"],
                             json.dumps(node["request"])])
        process = subprocess.Popen(["ssh", "-o", "BatchMode=yes", host, remote], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self._processes.append(process)
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert process.stdout is not None
            for raw in iter(process.stdout.readline, b""):
                lines.put(raw.decode(errors="replace").rstrip("\n"))
            lines.put("")  # the holder ended

        threading.Thread(target=read, daemon=True).start()
        said: list[str] = []
        while True:
            if stopped():
                raise ResourcesUnavailable("the run was canceled while it waited for GPUs", canceled=True)
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line.startswith(_RESERVED):
                self.devices[index] = [d for d in line[len(_RESERVED):].split(",") if d]
                return
            if line.startswith(_QUEUED):
                show_queued(f"node {host}: {line[len(_QUEUED):]}")
            elif line.startswith(_FAILED):
                raise ResourcesUnavailable(f"node {host}: {line[len(_FAILED):]}")
            elif line == "":
                raise ResourcesUnavailable(
                    f"node {host}: could not reserve its GPUs over ssh from the first node: "
                    f"{' | '.join(said[-5:]) or 'no output'} (the first node must reach the others with ssh, as "
                    "mpirun does; a retry helps only once it does)")
            else:
                said.append(line)

    def release(self, timeout: float = 10.0) -> None:
        """Close every holder's input (each releases its node's GPUs) and wait for them to end."""
        for process in self._processes:
            with contextlib.suppress(OSError):
                process.stdin.close()
        deadline = time.monotonic() + timeout
        for process in self._processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except Exception:  # a holder that does not end: its ssh connection goes, and the node reclaims
                process.kill()
                process.wait()
        self._processes = []


def _hold(job_dir: str, request_text: str) -> int:
    """Reserve this node's share for a run whose supervisor is on another node; keep it until standard
    input closes (see :class:`NodeHolders`)."""
    import json
    import signal
    import threading

    closed = threading.Event()

    def watch_input() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            closed.set()

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, lambda *_: closed.set())
    threading.Thread(target=watch_input, daemon=True).start()

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    session = HostResourceSession(job_dir, json.loads(request_text))
    try:
        session.acquire(lambda reason: say(_QUEUED + reason), closed.is_set)
    except ResourcesUnavailable as exc:
        say(_FAILED + str(exc))
        return 1
    except Exception as exc:
        say(f"{_FAILED}could not reserve on this node ({type(exc).__name__}: {exc}); check that the reservation file "
            "is writable here (a retry helps only once it is)")
        return 1
    try:
        say(_RESERVED + ",".join(session.devices))
        while not closed.wait(1.0):
            pass
    finally:
        session.release()
    return 0


def main(argv: list[str]) -> int:
    """``host_resources.py hold JOB_DIR REQUEST_JSON``: see :class:`NodeHolders`.

    :param argv: the command line.
    """
    if len(argv) != 4 or argv[1] != "hold":
        sys.stderr.write("usage: host_resources.py hold JOB_DIR REQUEST_JSON\n")
        return 2
    return _hold(argv[2], argv[3])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
