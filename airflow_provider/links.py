"""The "MLflow run" extra link: opens the task's run in the MLflow UI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator

__all__ = ["MLflowRunLink", "mlflow_run_url"]


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI address of a run, or None when the tracking URI is not a server.

    :param tracking_uri: the MLflow tracking URI.
    :param experiment_id: the run's experiment id.
    :param run_id: the run id.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


class MLflowRunLink(BaseOperatorLink):
    """Link from a SubmitTrainingRunOperator task to its MLflow run (stored in XCom by the task)."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key=self.xcom_key)
        return str(value) if value else ""
