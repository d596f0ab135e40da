"""Runs tracked on a real MLflow tracking server on 127.0.0.1 (``mlflow server``)."""

from __future__ import annotations

from pathlib import Path

import httpx
from mlflow.tracking import MlflowClient

from airflow_provider.core import Experiment, ScriptRunConfig
from airflow_provider.links import mlflow_run_url
from tests.helpers import write_script


def test_a_run_lands_on_the_tracking_server(mlflow_server: str, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os
        import mlflow
        from airflow_provider.core import Run
        run = Run.get_context()
        for i in range(50):
            run.log("loss", 1.0 / (i + 1))
        os.makedirs("outputs", exist_ok=True)
        open("outputs/model.txt", "w").write("model")
        mlflow.log_metric("direct_to_server", 7.0)  # the script reaches the server itself
    """)
    experiment = Experiment("server-runs", tracking_uri=mlflow_server)
    run = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    details = run.wait_for_completion()
    assert details["status"] == "Completed"
    client = MlflowClient(mlflow_server)
    remote = client.get_run(run.id)
    assert remote.info.status == "FINISHED"
    assert len(client.get_metric_history(run.id, "loss")) == 50
    assert remote.data.metrics["direct_to_server"] == 7.0
    assert remote.info.artifact_uri.startswith("mlflow-artifacts:")
    assert {a.path for a in client.list_artifacts(run.id, "outputs")} == {"outputs/model.txt"}
    assert "system_logs/driver.log" in details["logFiles"]
    url = mlflow_run_url(mlflow_server, experiment.id, run.id)
    assert url == f"{mlflow_server}/#/experiments/{experiment.id}/runs/{run.id}"
    assert httpx.get(url.split("#")[0]).status_code == 200  # the UI answers at that address


def test_a_failed_run_is_fully_recorded_on_the_server(mlflow_server: str, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os
        os.makedirs("logs", exist_ok=True)
        open("logs/debug.txt", "w").write("debug")
        raise SystemExit("diverged")
    """)
    experiment = Experiment("server-failures", tracking_uri=mlflow_server)
    run = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "diverged" in details["error"]["logTail"]
    assert "logs/debug.txt" in details["logFiles"]
    assert MlflowClient(mlflow_server).get_run(run.id).info.status == "FAILED"
