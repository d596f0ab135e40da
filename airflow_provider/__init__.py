"""Airflow provider for training runs: local, Docker, SSH and MPI targets, run history in MLflow.

This module must stay free of Airflow and MLflow imports: training scripts import
``airflow_provider.core`` through it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

DISTRIBUTION_NAME = "airflow-provider-training-runs"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow (the ``apache_airflow_provider`` entry point)."""
    return {
        "package-name": DISTRIBUTION_NAME,
        "name": "Training Runs",
        "description": "Submit machine-learning training runs to local, Docker, SSH and MPI "
        "compute targets, with run history in MLflow.",
        "versions": [__version__],
    }
