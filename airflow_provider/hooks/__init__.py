"""Airflow hooks: an Airflow connection -> a configured core compute target or MLflow tracking."""

from airflow_provider.hooks.compute import (
    ComputeHook,
    DockerComputeHook,
    LocalComputeHook,
    MPIComputeHook,
    SlurmComputeHook,
    SSHComputeHook,
    compute_hook_for,
)
from airflow_provider.hooks.mlflow import MLflowTrackingHook

__all__ = [
    "ComputeHook",
    "DockerComputeHook",
    "LocalComputeHook",
    "MLflowTrackingHook",
    "MPIComputeHook",
    "SSHComputeHook",
    "SlurmComputeHook",
    "compute_hook_for",
]
