"""``python -m airflow_provider.compat.azureml`` prints the folder to put on ``PYTHONPATH``: a
standalone copy of the layer that any Python >= 3.9 imports (see :func:`offline_path`)."""

from airflow_provider.compat.azureml import offline_path

print(offline_path())
