"""The "MLflow run" extra link: opens the task's run in the MLflow UI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator

    from airflow_provider.core.submit import Experiment

__all__ = ["MLflowRunLink", "link_run", "mlflow_run_url"]


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


def link_run(ti: Any, experiment: Experiment, run_id: str, what: str, log: Any) -> str | None:
    """Give the task's "MLflow run" link the address of ``run_id`` (its XCom) and log that address.

    :param ti: the task instance.
    :param experiment: the run's experiment.
    :param run_id: the run (a sweep's parent run, for a sweep's task).
    :param what: how the log line names it (``"MLflow run"``, ``"MLflow sweep run"``).
    :param log: the task's logger.
    :return: the address, or None for a store without a UI (a local store).
    """
    url = mlflow_run_url(experiment.tracking_uri, experiment.id, run_id)
    ti.xcom_push(key=MLflowRunLink().xcom_key, value=url or "")  # "": no UI for a local store
    if url:
        log.info("%s: %s", what, url)
    return url
