"""MLflow tracking hook: the tracking server a run's history goes to.

Connection type ``mlflow``: host holds the tracking URI (``http://mlflow:5000``); login/password
give basic auth; a token (password field with no login, or extra ``token``) gives bearer auth.
Without a connection, runs use ``MLFLOW_TRACKING_URI`` or the embedded store under
``$AIRFLOW_HOME/training_runs``.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook

from airflow_provider.core.tracking import resolve_tracking_uri

__all__ = ["MLflowTrackingHook"]


class MLflowTrackingHook(BaseHook):
    """Resolve the MLflow tracking URI and credentials for a run.

    :param tracking_conn_id: an ``mlflow`` connection; None for the default store.
    """

    conn_name_attr: ClassVar[str] = "tracking_conn_id"
    default_conn_name: ClassVar[str] = "mlflow_default"
    conn_type: ClassVar[str] = "mlflow"
    hook_name: ClassVar[str] = "MLflow tracking server"

    def __init__(self, tracking_conn_id: str | None = None) -> None:
        super().__init__()
        self.tracking_conn_id = tracking_conn_id

    @cached_property
    def _connection(self) -> Any:
        return self.get_connection(self.tracking_conn_id) if self.tracking_conn_id else None

    def get_tracking_uri(self) -> str:
        """The tracking URI: the connection's host (with scheme and port), else the defaults."""
        connection = self._connection
        if connection is None:
            return resolve_tracking_uri(None)
        host = str(connection.host or "")
        if "://" not in host:
            host = f"{connection.schema or 'http'}://{host}"
        parts = urlsplit(host)
        if connection.port and parts.port is None:
            parts = parts._replace(netloc=f"{parts.netloc}:{connection.port}")
        return urlunsplit(parts)

    def get_credentials(self) -> dict[str, str]:
        """MLflow's credential variables for this connection (secret: never logged or recorded)."""
        connection = self._connection
        if connection is None:
            return {}
        token = connection.extra_dejson.get("token")
        if connection.login and connection.password:
            return {"MLFLOW_TRACKING_USERNAME": connection.login, "MLFLOW_TRACKING_PASSWORD": connection.password}
        if token or connection.password:
            return {"MLFLOW_TRACKING_TOKEN": str(token or connection.password)}
        return {}

    def configure_process(self) -> str:
        """Put the credentials in this process's environment (MLflow reads them there).

        :return: the tracking URI.
        """
        os.environ.update(self.get_credentials())
        return self.get_tracking_uri()
