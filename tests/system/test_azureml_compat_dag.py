"""An unchanged Azure ML v1 script submitted by ``SubmitTrainingRunOperator(azureml_compat=True)``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from airflow_provider.core.tracking import resolve_tracking_uri

EXAMPLES = Path(__file__).resolve().parent.parent / "azureml_v1_examples"

DAG_FILE = '''
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider.operators import SubmitTrainingRunOperator

with DAG("azureml_v1_dag", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SubmitTrainingRunOperator(
        task_id="train", source_directory={source!r}, script="train.py", azureml_compat=True,
        arguments=["--kernel", "linear", "--penalty", 2, "--data-folder", "$DATA_ROOT/{{{{ ds }}}}",
                   "--run-ref", "$AZUREML_RUN_ID"],
        environment_variables={{"DATA_ROOT": "/mnt/data"}},
        secret_environment_variables={{"API_TOKEN": "tok-123"}},
        experiment_name="azureml-v1-dag",
    )
'''


def test_the_operator_runs_a_v1_script_unchanged(run_dag: Callable[..., dict[str, Any]], isolated_state: Path,
                                                 tmp_path: Path) -> None:
    source = tmp_path / "hyperparameters"
    shutil.copytree(EXAMPLES / "hyperparameters", source)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "azureml_v1_dag.py").write_text(DAG_FILE.format(source=str(source)))
    outcome = run_dag("azureml_v1_dag", dags_folder=dags, logical_date="2026-03-05T00:00:00+00:00")
    assert outcome["state"] == "success", outcome["output"][-3000:]
    result = outcome["xcom"]["train"]
    assert result["status"] == "Completed" and result["metrics"]["Penalty"] == 2.0
    client = MlflowClient(resolve_tracking_uri())
    run = client.get_run(result["run_id"])
    assert run.data.tags["Kernel type"] == "linear"
    local = client.download_artifacts(result["run_id"], "outputs/args.json", str(tmp_path))
    seen = json.loads(Path(local).read_text())
    assert seen["data_folder"] == "/mnt/data/2026-03-05" and seen["run_ref"] == result["run_id"]
    assert seen["secret"] is True
