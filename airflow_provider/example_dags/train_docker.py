"""Train the same small model inside a container of a Docker daemon.

Needs an Airflow connection ``training_docker_default`` of type ``training_docker`` (host: the
daemon URL, e.g. ``unix:///var/run/docker.sock``; extra ``image``: any image with Python 3, as
this example's script uses only the standard library). Example::

    AIRFLOW_CONN_TRAINING_DOCKER_DEFAULT='{"conn_type": "training_docker",
        "host": "unix:///var/run/docker.sock", "extra": {"image": "training-runs/python:3.11"}}'
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider.operators import SubmitTrainingRunOperator

SOURCE = Path(__file__).parent / "train_docker_src"

with DAG(
    dag_id="train_docker",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["training", "example", "docker"],
    doc_md=__doc__,
) as dag:
    SubmitTrainingRunOperator(
        task_id="train",
        source_directory=str(SOURCE),
        script="train.py",
        arguments=["--epochs", 20],
        compute_target="training_docker_default",
        experiment_name="train_docker",
        max_run_duration_seconds=600,
    )
