"""A hyperparameter sweep with one Airflow task per trial (dynamic task mapping).

``plan`` creates the sweep's parent run in MLflow and returns the grid's trials; ``trial`` is
``SubmitTrainingRunOperator`` mapped over them (each is a child run; its watcher applies the
median stopping policy by reading its siblings' metrics from MLflow; a stopped trial's task ends
skipped); ``best`` records the best trial on the parent run and returns it.
Run it with ``airflow dags test sweep_mapped``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider.core.hyperdrive import GridParameterSampling, MedianStoppingPolicy, choice
from airflow_provider.operators import (
    PlanHyperparameterSweepOperator,
    SelectBestTrialOperator,
    SubmitTrainingRunOperator,
)

SOURCE = Path(__file__).parent / "train_local_src"

with DAG(
    dag_id="sweep_mapped",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=4,
    tags=["training", "sweep", "example"],
    doc_md=__doc__,
) as dag:
    plan = PlanHyperparameterSweepOperator(
        task_id="plan",
        experiment_name="sweep_mapped",
        hyperparameter_sampling=GridParameterSampling(
            {"--learning-rate": choice(0.001, 0.05, 0.5), "--epochs": choice(10, 25)}),
        primary_metric_name="accuracy",
        primary_metric_goal="MAXIMIZE",
        policy=MedianStoppingPolicy(evaluation_interval=1, delay_evaluation=5),
    )
    trials = SubmitTrainingRunOperator.partial(
        task_id="trial",
        source_directory=str(SOURCE),
        script="train.py",
        arguments=["--epochs", 20],
        compute_target="local",
        poll_interval=0.5,
        max_run_duration_seconds=600,
    ).expand(sweep_trial=plan.output)
    best = SelectBestTrialOperator(task_id="best", sweep_trials=plan.output)
    trials >> best
