"""The Airflow-free core: submit training runs to compute targets, with run history in MLflow.

``from airflow_provider.core import ScriptRunConfig, Environment, Experiment, Run`` works as
Azure ML v1's ``azureml.core`` did. Names are imported on first use, so a training script that
only needs ``Run`` imports neither MLflow nor Airflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider.core.config import ScriptRunConfig
    from airflow_provider.core.data.bindings import Input, Output
    from airflow_provider.core.distributed import (
        MpiConfiguration,
        PyTorchConfiguration,
        TensorflowConfiguration,
    )
    from airflow_provider.core.environments.conda_spec import CondaDependencies
    from airflow_provider.core.environments.spec import Environment
    from airflow_provider.core.errors import (
        ConfigurationError,
        EnvironmentBuildError,
        RunCanceledError,
        RunFailedError,
        TargetError,
        TrackingError,
        TrainingRunError,
    )
    from airflow_provider.core.resources import Resources
    from airflow_provider.core.script_run import ScriptRun
    from airflow_provider.core.submit import Experiment
    from airflow_provider.core.tracking import RunState
    from airflow_provider.runtime.run_context import Run

__all__ = [
    "CondaDependencies",
    "ConfigurationError",
    "Environment",
    "EnvironmentBuildError",
    "Experiment",
    "Input",
    "MpiConfiguration",
    "Output",
    "PyTorchConfiguration",
    "Resources",
    "Run",
    "RunCanceledError",
    "RunFailedError",
    "RunState",
    "ScriptRun",
    "ScriptRunConfig",
    "TargetError",
    "TensorflowConfiguration",
    "TrackingError",
    "TrainingRunError",
]

_WHERE = {
    "ScriptRunConfig": "config",
    "Resources": "resources",
    "Input": "airflow_provider.core.data.bindings",
    "Output": "airflow_provider.core.data.bindings",
    "Environment": "airflow_provider.core.environments.spec",
    "CondaDependencies": "airflow_provider.core.environments.conda_spec",
    "Experiment": "submit",
    "ScriptRun": "script_run",
    "Run": "run_context",
    "RunState": "tracking",
    "MpiConfiguration": "distributed",
    "PyTorchConfiguration": "distributed",
    "TensorflowConfiguration": "distributed",
    "ConfigurationError": "errors",
    "EnvironmentBuildError": "errors",
    "RunCanceledError": "errors",
    "RunFailedError": "errors",
    "TargetError": "errors",
    "TrackingError": "errors",
    "TrainingRunError": "errors",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_provider.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module if "." in module else f"airflow_provider.core.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
