"""``azureml.core.run`` of the Azure ML v1 compatibility layer."""

from airflow_provider.compat.azureml.run import Run, unsupported_name

__all__ = ["Run"]


def __getattr__(name: str) -> object:
    raise unsupported_name("azureml.core.run", name)
