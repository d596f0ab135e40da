"""A run's :class:`~airflow_provider.core.resources.Resources` on the Docker target.

The run's own ask wins over the connection's defaults (``cpus``, ``mem_limit``, ``shm_size``,
``gpus``): GPUs as a device request (``docker run --gpus N``), CPUs as a CPU quota, memory as a
hard limit with no swap beyond it (so a script past it is killed at the limit, and the run says
so, naming the limit and where it was set), shared memory as ``/dev/shm``'s size. GPUs need the
daemon's NVIDIA runtime: a run asking for them on a daemon without one is refused before anything
is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.resources import Resources

__all__ = ["LABEL_MEMORY_LIMIT", "check_gpu_runtime", "container_limits", "memory_limit_source",
           "out_of_memory_message"]

LABEL_MEMORY_LIMIT = "training.memory_limit_from"
"""Container label: what set the container's memory limit, for the out-of-memory message."""

_GIB = 1 << 30


def container_limits(resources: Resources | None) -> dict[str, Any]:
    """``containers.create`` options for the run's resources (none for fields it leaves unset).

    :param resources: what the run asks for.
    """
    if resources is None:
        return {}
    options: dict[str, Any] = {}
    if resources.cpus is not None:
        options["nano_cpus"] = round(resources.cpus * 1e9)
    if resources.memory_gb is not None:
        options["mem_limit"] = options["memswap_limit"] = int(resources.memory_gb * _GIB)
    if resources.shm_size_gb is not None:
        options["shm_size"] = int(resources.shm_size_gb * _GIB)
    if resources.gpus is not None:  # 0: none, whatever the connection gives
        options["device_requests"] = [{"count": resources.gpus, "capabilities": [["gpu"]]}] if resources.gpus else []
    return options


def memory_limit_source(resources: Resources | None, run_options: Mapping[str, Any]) -> str:
    """Where the container's memory limit comes from, as the out-of-memory message names it.

    :param resources: the run's resources.
    :param run_options: the connection's run options.
    """
    if resources is not None and resources.memory_gb is not None:
        return "resources.memory_gb"
    if run_options.get("mem_limit"):
        return "the connection's mem_limit"
    return ""


def out_of_memory_message(attrs: Mapping[str, Any]) -> str:
    """Why an OOM-killed container ended, with its limit and what set it.

    :param attrs: the container's inspection.
    """
    limit = int((attrs.get("HostConfig") or {}).get("Memory") or 0)
    source = ((attrs.get("Config") or {}).get("Labels") or {}).get(LABEL_MEMORY_LIMIT) or ""
    if not limit:
        return ("the container ran out of memory and was killed (OOMKilled; no memory limit was set: the daemon's "
                "host ran out); ask for less, or run where there is more (resources.memory_gb)")
    shown = f"{limit / _GIB:g} GiB"
    where = f", set by {source}" if source else ""
    return (f"the container ran out of memory and was killed (OOMKilled at its memory limit of {shown}{where}); "
            f"raise {source or 'the limit'} or use less memory")


def check_gpu_runtime(info: Mapping[str, Any], where: str, field: str) -> None:
    """Refuse GPUs on a daemon without the NVIDIA runtime, before any container is created.

    :param info: the daemon's ``docker info``.
    :param where: the daemon, for the message.
    :param field: the field that asks for GPUs.
    :raises ConfigurationError: the daemon has no NVIDIA runtime.
    """
    runtimes = sorted(info.get("Runtimes") or {})
    if "nvidia" in runtimes:
        return
    raise ConfigurationError(
        field, f"asks for GPUs, but the Docker daemon at {where} has no GPU runtime (its runtimes: "
        f"{', '.join(runtimes) or 'none'}).",
        "install the NVIDIA Container Toolkit on the daemon's host and register it (nvidia-ctk runtime configure "
        "--runtime=docker, then restart dockerd), or run on a daemon with GPUs, or ask for none.")
