"""How a shared host (this machine, an SSH host) gives runs its GPUs, CPUs and memory.

A host declares its GPUs on its connection (``gpus: [0, 1, 2, 3]``) or lets the job's supervisor
ask ``nvidia-smi -L``. A run that asks for ``Resources(gpus=2)`` gets two specific devices, reserved
in the host's reservation file for the run's lifetime (the runs of every Airflow worker and user
that reach the host share that file), as ``CUDA_VISIBLE_DEVICES``; while too few are free the run
waits ``Queued`` with the reason, up to ``queue_timeout_seconds``. On a host that declares its
GPUs, a run that asks for none gets ``CUDA_VISIBLE_DEVICES=""``: it cannot use another run's.
``cpus`` and ``memory_gb`` are limits of the run's whole process tree: cgroups where the host lets
the supervisor create them (typically as root), else CPU affinity and ``RLIMIT_AS`` per process (see
:mod:`airflow_provider.runtime.resource_limits`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.resources import Resources

__all__ = ["DEFAULT_QUEUE_TIMEOUT_SECONDS", "HOST_RESOURCE_FIELDS", "HostSharing"]

HOST_RESOURCE_FIELDS = frozenset({"gpus", "cpus", "memory_gb"})
"""The :class:`Resources` fields a shared host honours."""
DEFAULT_QUEUE_TIMEOUT_SECONDS = 24 * 3600.0
_DEVICE = re.compile(r"(\d{1,3}|(GPU|MIG)-[0-9A-Za-z/-]{1,80})\Z")
_MIN_MEMORY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class HostSharing:
    """A shared host's GPUs and where its reservations are kept.

    :param gpus: the host's GPU devices (indices as ``nvidia-smi`` numbers them, or ``GPU-...``
        UUIDs); None asks ``nvidia-smi -L`` on the host when a run needs GPUs.
    :param reservations_file: the host's reservation file (default
        ``/var/tmp/training-runs/reservations.json``: one per host, shared by its users).
    :param queue_timeout_seconds: how long a run waits for GPUs before it fails (a retry can help).
    """

    gpus: tuple[str, ...] | None = None
    reservations_file: str | None = None
    queue_timeout_seconds: float = DEFAULT_QUEUE_TIMEOUT_SECONDS

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any], field: str) -> HostSharing:
        """Read ``gpus``, ``reservations_file`` and ``queue_timeout_seconds`` of a connection's extra.

        :param extra: the extra fields (values may be text, as a form saves them).
        :param field: how messages name the extra (``connection 'gpu1' extra``).
        :raises ConfigurationError: a malformed field, named with the fix.
        """
        gpus = _devices(extra.get("gpus"), f"{field}.gpus")
        reservations = extra.get("reservations_file") or None
        if reservations is not None and (not isinstance(reservations, str) or not reservations.startswith("/")):
            raise ConfigurationError(f"{field}.reservations_file", f"must be an absolute path, got {reservations!r}.",
                                     "write e.g. /var/tmp/training-runs/reservations.json (the same for every "
                                     "connection to this host).")
        timeout = extra.get("queue_timeout_seconds")
        if timeout in (None, ""):
            timeout = DEFAULT_QUEUE_TIMEOUT_SECONDS
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            timeout = math.nan
        if not math.isfinite(timeout) or timeout <= 0:
            given = extra.get("queue_timeout_seconds")
            raise ConfigurationError(f"{field}.queue_timeout_seconds",
                                     f"must be a positive number of seconds, got {given!r}.",
                                     f"write e.g. 3600 (default {DEFAULT_QUEUE_TIMEOUT_SECONDS:g}).")
        return cls(gpus, reservations, timeout)

    def to_spec(self) -> dict[str, Any]:
        """Plain data for :meth:`from_spec` (a target rebuilt in another process)."""
        return {"gpus": list(self.gpus) if self.gpus is not None else None,
                "reservations_file": self.reservations_file, "queue_timeout_seconds": self.queue_timeout_seconds}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> HostSharing:
        """Rebuild from :meth:`to_spec` output (None: the defaults).

        :param spec: the serialised settings.
        """
        if not spec:
            return cls()
        gpus = spec.get("gpus")
        return cls(tuple(gpus) if gpus is not None else None, spec.get("reservations_file"),
                   float(spec.get("queue_timeout_seconds") or DEFAULT_QUEUE_TIMEOUT_SECONDS))

    def check(self, resources: Resources | None, host: str, field: str = "ScriptRunConfig.resources",
              discovered: tuple[str, ...] | None = None) -> None:
        """Refuse, before any compute is used, what this host can never give.

        :param resources: what the run asks for.
        :param host: how messages name the host.
        :param field: how messages name the resources.
        :param discovered: the GPUs ``nvidia-smi -L`` lists there, for a host that declares none.
        :raises ConfigurationError: more GPUs than the host has, or too little memory to start.
        """
        if resources is None:
            return
        devices = self.gpus if self.gpus is not None else discovered
        if resources.gpus and devices is not None and resources.gpus > len(devices):
            count = "1 GPU" if resources.gpus == 1 else f"{resources.gpus} GPUs"
            has = (f"declares {len(devices)} ({', '.join(devices) or 'none'})" if self.gpus is not None
                   else f"has {len(devices)}: nvidia-smi -L lists {', '.join(devices)}" if devices
                   else "has none: its connection declares none and nvidia-smi -L lists none")
            raise ConfigurationError(f"{field}.gpus", f"asks for {count}; {host} {has}.",
                                     f"ask for at most {len(devices)}, declare the host's GPUs on its connection "
                                     "(gpus), or run on a host with more GPUs.")
        if resources.memory_gb is not None and resources.memory_gb * 1024 ** 3 < _MIN_MEMORY_BYTES:
            raise ConfigurationError(f"{field}.memory_gb", f"is {resources.memory_gb:g} GiB: too little for Python "
                                     "to start.", "ask for at least 0.0625 (64 MiB).")

    def job_json(self, resources: Resources | None) -> dict[str, Any]:
        """``job.json``'s ``host_resources`` for a run (empty when it asks for none of them).

        :param resources: what the run asks for.
        """
        if resources is None or not (resources.gpus or resources.cpus or resources.memory_gb):
            if self.gpus:  # a host that shares its GPUs: a run that did not ask for one must not use one
                return {"host_resources": {"gpus": 0, "hide_gpus": True}}
            return {}
        request: dict[str, Any] = {
            "gpus": resources.gpus or 0, "cpus": resources.cpus,
            "memory_bytes": int(resources.memory_gb * 1024 ** 3) if resources.memory_gb else None,
            "devices": list(self.gpus) if self.gpus is not None else None,
            "ledger": self.reservations_file, "queue_timeout_seconds": self.queue_timeout_seconds,
            "hide_gpus": bool(self.gpus) and not resources.gpus,
        }
        return {"host_resources": request}


def _devices(value: object, field: str) -> tuple[str, ...] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                value = json.loads(text)
            except ValueError:
                raise ConfigurationError(field, f"is not a JSON list: {value!r}.",
                                         'write e.g. [0, 1, 2, 3] or "0,1,2,3".') from None
        else:
            value = [part.strip() for part in text.split(",") if part.strip()] if text.lower() != "none" else []
    if isinstance(value, int) and not isinstance(value, bool):
        value = list(range(value)) if value >= 0 else value
    if not isinstance(value, (list, tuple)):
        raise ConfigurationError(field, f"must list the host's GPUs, got {value!r}.",
                                 'write e.g. [0, 1, 2, 3], "0,1,2,3", or [] for none.')
    devices: list[str] = []
    for device in value:
        text = str(device).strip() if not isinstance(device, bool) else ""
        if not _DEVICE.match(text):
            raise ConfigurationError(field, f"{device!r} is not a GPU index or UUID.",
                                     "list indices as nvidia-smi -L numbers them (0, 1, ...) or GPU-... UUIDs.")
        if text in devices:
            raise ConfigurationError(field, f"lists {text} twice.", "list each GPU once.")
        devices.append(text)
    return tuple(devices)
