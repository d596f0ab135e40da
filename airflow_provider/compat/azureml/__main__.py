"""``python -m airflow_provider.compat.azureml`` prints the folder to put on ``PYTHONPATH``."""

from airflow_provider.compat.azureml import shim_path

print(shim_path())
