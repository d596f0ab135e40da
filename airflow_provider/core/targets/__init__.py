"""Compute targets by name: each name maps to a dotted class path imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

from airflow_provider.core.errors import TargetConfigurationError
from airflow_provider.core.targets.base import ComputeTarget

__all__ = ["ComputeTarget", "known_targets", "resolve_target", "target_from_spec"]

# name -> (module, class); their libraries (docker, paramiko) are dependencies of the provider
_REGISTRY: dict[str, tuple[str, str]] = {
    "local": ("airflow_provider.core.targets.local", "LocalTarget"),
    "docker": ("airflow_provider.core.targets.docker", "DockerTarget"),
    "ssh": ("airflow_provider.core.targets.ssh", "SSHTarget"),
    "mpi": ("airflow_provider.core.targets.mpi", "MPITarget"),
    "slurm": ("airflow_provider.core.targets.slurm", "SlurmTarget"),
}


def known_targets() -> list[str]:
    """Names :func:`resolve_target` accepts."""
    return sorted(_REGISTRY)


def _target_class(kind: str) -> type[ComputeTarget]:
    module_name, class_name = _REGISTRY[kind]
    module = importlib.import_module(module_name)
    target_class: type[ComputeTarget] = getattr(module, class_name)
    return target_class


def target_from_spec(spec: dict[str, Any]) -> ComputeTarget:
    """Rebuild a target from ``ComputeTarget.to_spec()`` output.

    :param spec: the serialised target, with its ``kind``.
    """
    kind = spec.get("kind")
    if kind not in _REGISTRY:
        raise TargetConfigurationError(f"unknown compute target kind {kind!r}; known: {', '.join(known_targets())}")
    return _target_class(str(kind)).from_spec(spec)


def resolve_target(target: str | ComputeTarget) -> ComputeTarget:
    """Return a target object for a name, or the object itself.

    :param target: a target name such as ``"local"``, or a :class:`ComputeTarget`.
    """
    if isinstance(target, ComputeTarget):
        return target
    if target not in _REGISTRY:
        raise TargetConfigurationError(
            f"ScriptRunConfig.compute_target: unknown compute target {target!r}. Known targets: "
            f"{', '.join(known_targets())}; other targets (docker, ssh, mpi) are Airflow connections "
            "used through SubmitTrainingRunOperator, or ComputeTarget objects passed directly.",
            "ScriptRunConfig.compute_target",
        )
    return _target_class(target)()
