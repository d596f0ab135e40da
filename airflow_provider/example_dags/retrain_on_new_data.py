"""Data-aware retraining: a new data partition lands, the model is retrained from all of them, and
the model written to its output folder is registered in MLflow.

Two DAGs share the asset of the data folder (``TRAINING_EXAMPLE_DATA``, default
``$AIRFLOW_HOME/training_example/churn``):

- ``prepare_churn_data`` writes that day's partition (``<ds>.csv``) and, succeeding, emits an event
  of the asset (it is the task's outlet);
- ``retrain_on_new_data`` is scheduled on the asset: its training run gets the folder as the input
  ``train`` (copied to the target, cached: a second run on the same host sends only the new
  partition), writes ``model.json`` to the output ``model`` (a folder per run under
  ``TRAINING_EXAMPLE_MODELS``, copied there when the run ends, even if it fails), and a second task
  registers that folder as a version of the model ``churn-from-data``.

MLflow records the input (source, digest, size, file count) and the output's URI and digest.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, task

from airflow_provider.core import Input, Output
from airflow_provider.core.data.lineage_names import asset_uri
from airflow_provider.operators import SubmitTrainingRunOperator

HOME = Path(os.environ.get("AIRFLOW_HOME", str(Path.home() / "airflow")))
DATA = Path(os.environ.get("TRAINING_EXAMPLE_DATA", str(HOME / "training_example" / "churn")))
MODELS = Path(os.environ.get("TRAINING_EXAMPLE_MODELS", str(HOME / "training_example" / "models")))
SOURCE = Path(__file__).parent / "retrain_on_new_data_src"
MODEL_NAME = "churn-from-data"
CHURN_DATA = Asset(uri=asset_uri(str(DATA)))  # named by its URI: the training task's inlet is the same asset

with DAG(
    dag_id="prepare_churn_data",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["training", "example", "data"],
    doc_md=__doc__,
):

    @task(outlets=[CHURN_DATA])
    def write_partition(ds: str | None = None, params: dict[str, Any] | None = None) -> str:
        """Write the day's partition of churn data (generated: 5 features and a label)."""
        import numpy as np

        rows = int((params or {}).get("rows", 500))
        rng = np.random.default_rng(abs(hash(ds)) % 2**32)
        features = rng.normal(size=(rows, 5))
        labels = (features @ np.array([1.5, -2.0, 0.7, 0.0, 3.0]) + rng.normal(scale=0.5, size=rows) > 0)
        DATA.mkdir(parents=True, exist_ok=True)
        path = DATA / f"{ds}.csv"
        np.savetxt(path, np.column_stack([features, labels]), delimiter=",", header="f1,f2,f3,f4,f5,label",
                   comments="", fmt="%.6f")
        return str(path)

    write_partition()

with DAG(
    dag_id="retrain_on_new_data",
    schedule=[CHURN_DATA],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["training", "example", "data"],
    doc_md=__doc__,
):
    train = SubmitTrainingRunOperator(
        task_id="train",
        source_directory=str(SOURCE),
        script="train.py",
        arguments=["--data", "${{inputs.train}}", "--model-dir", "${{outputs.model}}"],
        inputs={"train": Input(str(DATA))},
        outputs={"model": Output(str(MODELS / "{run_id}"))},
        experiment_name="retrain_on_new_data",
    )

    @task
    def register_model(result: dict[str, Any]) -> dict[str, str]:
        """Register the run's model output as a new version of ``churn-from-data``."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        from airflow_provider.core.tracking import resolve_tracking_uri

        client = MlflowClient(resolve_tracking_uri())
        with contextlib.suppress(MlflowException):  # it exists already
            client.create_registered_model(MODEL_NAME)
        model_uri = result["outputs"]["model"]
        version = client.create_model_version(MODEL_NAME, source=model_uri, run_id=result["run_id"])
        return {"model": MODEL_NAME, "version": str(version.version), "source": model_uri}

    register_model(train.output)
