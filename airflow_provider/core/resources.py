"""``Resources``: what a run asks its compute target for (GPUs, CPUs, memory, nodes, a partition).

One small object for every target. Each target says which fields it honours
(:attr:`~airflow_provider.core.targets.base.ComputeTarget.supported_resources`); a run that asks a
target for something it cannot give is refused before any compute is used, naming the field,
instead of running without it.

==============  ====================================================================================
field           meaning
==============  ====================================================================================
gpus            GPUs for the run (per node on clusters)
gpu_type        a GPU model the run needs (Slurm's ``--gres=gpu:<type>:<n>``)
cpus            CPUs per task (Slurm's ``--cpus-per-task``; a container's CPU quota)
memory_gb       memory per node in GiB (Slurm's ``--mem``; a container's memory limit)
shm_size_gb     shared memory in GiB (``/dev/shm`` of a container; PyTorch data loaders need it)
nodes           nodes of a cluster allocation (else the distributed configuration's ``node_count``)
tasks_per_node  processes per node (else the distributed configuration's ``process_count_per_node``)
partition       a Slurm partition (overrides the connection's default)
==============  ====================================================================================
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from airflow_provider.core.errors import ConfigurationError

__all__ = ["Resources"]

_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")


@dataclass(frozen=True)
class Resources:
    """What a run asks its compute target for; every field is optional (``None``: the target's default).

    :param gpus: GPUs for the run (per node on a cluster).
    :param gpu_type: a GPU model (e.g. ``"a100"``), where the target can choose one.
    :param cpus: CPUs per task (fractions allowed on containers).
    :param memory_gb: memory per node, in GiB.
    :param shm_size_gb: shared memory (``/dev/shm``), in GiB.
    :param nodes: nodes of the allocation.
    :param tasks_per_node: processes per node.
    :param partition: a Slurm partition.
    """

    gpus: int | None = None
    gpu_type: str | None = None
    cpus: float | None = None
    memory_gb: float | None = None
    shm_size_gb: float | None = None
    nodes: int | None = None
    tasks_per_node: int | None = None
    partition: str | None = None

    def validate(self, field: str = "resources") -> Resources:
        """Check every field; return this object.

        :param field: how the caller names this object in messages (``ScriptRunConfig.resources``).
        :raises ConfigurationError: naming the first bad field and the fix.
        """
        for name in ("gpus", "nodes", "tasks_per_node"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "gpus" else 1):
                low = "0 or more" if name == "gpus" else "1 or more"
                raise ConfigurationError(f"{field}.{name}", f"must be a whole number, {low}; got {value!r}.",
                                         f"write e.g. {name}={2 if name != 'gpus' else 1}, or leave it None.")
        for name in ("cpus", "memory_gb", "shm_size_gb"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"{field}.{name}", f"must be a positive number, got {value!r}.",
                                         f"write e.g. {name}=4, or leave it None for the target's default.")
        for name in ("gpu_type", "partition"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _NAME.match(value)):
                raise ConfigurationError(f"{field}.{name}",
                                         f"must be a name (letters, digits, _ . : -), got {value!r}.",
                                         f"write e.g. {name}={'a100' if name == 'gpu_type' else 'gpu'!r}.")
        if self.gpu_type is not None and not self.gpus:
            raise ConfigurationError(f"{field}.gpu_type", f"is {self.gpu_type!r} but no GPUs are asked for.",
                                     "set gpus too (e.g. gpus=1), or remove gpu_type.")
        return self

    def requested(self) -> list[str]:
        """The names of the fields that are set (what a target must honour)."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def to_dict(self) -> dict[str, Any]:
        """The set fields, as plain JSON types."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Resources:
        """Rebuild from :meth:`to_dict` output (or an operator's templated dict).

        :param data: the fields by name.
        :raises ConfigurationError: an unknown field.
        """
        data = {name: value for name, value in (data or {}).items() if value not in (None, "")}
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigurationError(f"resources.{unknown[0]}", "is not a resource.",
                                     f"use only {', '.join(sorted(known))}.")
        for name, value in data.items():  # a templated field renders numbers as text
            if isinstance(value, str) and "int" in str(known[name]):
                data[name] = int(value) if value.strip().isdigit() else value
            elif isinstance(value, str) and "float" in str(known[name]):
                with contextlib.suppress(ValueError):  # validate() names it
                    data[name] = float(value)
        return cls(**data)
