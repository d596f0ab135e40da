"""Daily retraining with a champion/challenger gate in the MLflow model registry.

Every day a challenger is trained on that day's data. Its model is registered as a new version of
``churn-classifier``; the alias ``champion`` moves to it only when its accuracy beats the current
champion's (the first version becomes champion at once). The decision is returned as XCom and
tagged on the challenger's MLflow run.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider.operators import SubmitTrainingRunOperator

SOURCE = Path(__file__).parent / "train_local_src"
MODEL_NAME = "churn-classifier"
CHAMPION = "champion"
METRIC = "accuracy"

with DAG(
    dag_id="scheduled_retraining",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["training", "example"],
    doc_md=__doc__,
) as dag:
    train_challenger = SubmitTrainingRunOperator(
        task_id="train_challenger",
        source_directory=str(SOURCE),
        script="train.py",
        arguments=["--epochs", "{{ params.epochs }}", "--seed", "{{ ds_nodash }}",
                   "--learning-rate", "{{ params.learning_rate }}"],
        experiment_name="scheduled_retraining",
        params={"epochs": 25, "learning_rate": 0.5},
    )

    @task
    def promote_if_better(result: dict[str, Any]) -> dict[str, Any]:
        """Register the challenger's model and move the champion alias to it if it is better."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        from airflow_provider.core.tracking import resolve_tracking_uri

        client = MlflowClient(resolve_tracking_uri())
        with contextlib.suppress(MlflowException):  # it exists already
            client.create_registered_model(MODEL_NAME)
        version = client.create_model_version(
            MODEL_NAME, source=f"{result['artifact_uri']}/outputs", run_id=result["run_id"]
        )
        challenger_score = float(result["metrics"][METRIC])
        try:
            champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
            champion_score = float(client.get_run(champion.run_id).data.metrics[METRIC])
        except MlflowException:
            champion, champion_score = None, float("-inf")
        promoted = champion is None or challenger_score > champion_score
        if promoted:
            client.set_registered_model_alias(MODEL_NAME, CHAMPION, version.version)
        client.set_tag(result["run_id"], "retraining.decision", "promoted" if promoted else "kept champion")
        return {
            "model": MODEL_NAME,
            "challenger_version": str(version.version),
            "challenger_score": challenger_score,
            "champion_version": str(version.version if promoted else champion.version),
            "previous_champion_score": None if champion is None else champion_score,
            "promoted": promoted,
        }

    promote_if_better(train_challenger.output)
