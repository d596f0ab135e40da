"""``azureml.core`` of the Azure ML v1 compatibility layer: ``Run`` and nothing else.

Other names a v1 *training script* might import raise :class:`NotImplementedError` saying what
to use instead.
"""

from airflow_provider.compat.azureml.run import Run, unsupported_name

__all__ = ["Run"]


def __getattr__(name: str) -> object:
    raise unsupported_name("azureml.core", name)
