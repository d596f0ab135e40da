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
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractContextManager
    from typing import Any

try:
    from airflow_provider.runtime import gpu_reservations, resource_limits
except ImportError:  # a plain file beside the supervisor
    import gpu_reservations  # type: ignore[no-redef]
    import resource_limits  # type: ignore[no-redef]

__all__ = ["HostResourceSession", "ResourcesUnavailable"]

DEFAULT_QUEUE_TIMEOUT_SECONDS = 24 * 3600.0
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
        with contextlib.suppress(Exception):  # a limit left behind must not lose the ending
            self.limits.remove()
        with contextlib.suppress(Exception):  # the next reserver reclaims a dead owner's entry
            self.ledger.release(self.owner)
