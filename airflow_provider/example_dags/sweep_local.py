"""A hyperparameter sweep in one task: random search with early termination, trials on the local target.

Six trials of the logistic regression in ``train_local_src``, two at a time; the Bandit policy stops
a trial whose accuracy falls more than 10 % behind the best trial's after its fifth epoch. The
sweep is a parent run in MLflow with one child run per trial; the task returns the best trial.
Run it with ``airflow dags test sweep_local``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider.core.hyperdrive import BanditPolicy, RandomParameterSampling, choice, loguniform
from airflow_provider.operators import HyperparameterSweepOperator

SOURCE = Path(__file__).parent / "train_local_src"

with DAG(
    dag_id="sweep_local",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["training", "sweep", "example"],
    doc_md=__doc__,
) as dag:
    HyperparameterSweepOperator(
        task_id="sweep",
        source_directory=str(SOURCE),
        script="train.py",
        arguments=["--epochs", 20],
        compute_target="local",
        experiment_name="sweep_local",
        hyperparameter_sampling=RandomParameterSampling(
            {"--learning-rate": loguniform(-7, 0), "--samples": choice(500, 2000)}, seed=7),
        primary_metric_name="accuracy",
        primary_metric_goal="MAXIMIZE",
        max_total_runs=6,
        max_concurrent_runs=2,
        max_duration_minutes=30,
        policy=BanditPolicy(slack_factor=0.1, evaluation_interval=1, delay_evaluation=5),
    )
