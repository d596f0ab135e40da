"""Compute targets by name: each name maps to a dotted class path imported on first use."""

from __future__ import annotations

import importlib

from airflow_provider.core.errors import TargetError
from airflow_provider.core.targets.base import ComputeTarget

__all__ = ["ComputeTarget", "known_targets", "resolve_target"]

# name -> (module, class, install hint)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "local": ("airflow_provider.core.targets.local", "LocalTarget", ""),
}


def known_targets() -> list[str]:
    """Names :func:`resolve_target` accepts."""
    return sorted(_REGISTRY)


def resolve_target(target: str | ComputeTarget) -> ComputeTarget:
    """Return a target object for a name, or the object itself.

    :param target: a target name such as ``"local"``, or a :class:`ComputeTarget`.
    """
    if isinstance(target, ComputeTarget):
        return target
    if target not in _REGISTRY:
        raise TargetError(
            f"ScriptRunConfig.compute_target: unknown compute target {target!r}. Known targets: "
            f"{', '.join(known_targets())}; other targets (docker, ssh, mpi) are Airflow connections "
            "used through SubmitTrainingRunOperator, or ComputeTarget objects passed directly."
        )
    module_name, class_name, hint = _REGISTRY[target]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"compute target {target!r} needs an extra package: {hint or exc}") from exc
    instance: ComputeTarget = getattr(module, class_name)()
    return instance
