"""Train a small real model on the local target; its run history lands in MLflow.

With no MLflow connection the run goes to the embedded store under ``$AIRFLOW_HOME/training_runs``.
Run it with ``airflow dags test train_local``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider.operators import SubmitTrainingRunOperator

SOURCE = Path(__file__).parent / "train_local_src"

with DAG(
    dag_id="train_local",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["training", "example"],
    doc_md=__doc__,
) as dag:
    SubmitTrainingRunOperator(
        task_id="train",
        source_directory=str(SOURCE),
        script="train.py",
        arguments=["--epochs", 30, "--learning-rate", 0.5],
        compute_target="local",
        experiment_name="train_local",
        tags={"airflow.logical_date": "{{ logical_date | ds }}"},
        max_run_duration_seconds=600,
    )
