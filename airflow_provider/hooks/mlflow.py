"""MLflow tracking hook: the tracking server a run's history goes to.

Connection type ``mlflow``: host holds the tracking URI (``http://mlflow:5000``); login/password
give basic auth; a token (password field with no login, or extra ``token``) gives bearer auth.
Without a connection, runs use ``MLFLOW_TRACKING_URI`` or the embedded store under
``$AIRFLOW_HOME/training_runs``. A connection id that does not exist is a
:class:`~airflow_provider.core.errors.ConfigurationError` (the operators fail the task at once,
without retries).

A store on the worker's own disk (the embedded SQLite store, any ``sqlite:`` or ``file:`` URI) is
refused when Airflow's executor runs tasks on several machines (anything but the
``LocalExecutor``): a retry landing on another worker would not find its run there and would run
the script a second time. ``TRAINING_RUNS_SINGLE_MACHINE=1`` says every worker shares this machine.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.tracking import check_tracking_uri, resolve_tracking_uri, tracking_uri_scheme

__all__ = ["MLflowTrackingHook"]


_ONE_MACHINE_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})
"""Executors that run every task on the scheduler's machine."""


QUIET_MLFLOW = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
"""What keeps MLflow's progress bars (stderr: red ``ERROR - Downloading artifacts: 0%|...`` lines in
a task log) and its "View run" line per ended run out of task logs; a value set already is kept."""


def quiet_mlflow_output() -> None:
    """Keep MLflow's progress bars and "View run" lines out of this process's output (the task's
    log): the task logs the run's address itself."""
    for name, value in QUIET_MLFLOW.items():
        os.environ.setdefault(name, value)


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
        quiet_mlflow_output()

    @cached_property
    def _connection(self) -> Any:
        if not self.tracking_conn_id:
            return None
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return self.get_connection(self.tracking_conn_id)
        except AirflowNotFoundException as exc:  # a retry cannot make it appear: a configuration error
            raise ConfigurationError(
                "tracking_conn_id", f"no Airflow connection {self.tracking_conn_id!r} exists.",
                f"create an {self.conn_type!r} connection with that id (host: the tracking server's URL), or leave "
                "tracking_conn_id unset to use MLFLOW_TRACKING_URI or the embedded store.") from exc

    def get_tracking_uri(self) -> str:
        """The tracking URI: the connection's host (with scheme and port), else the defaults.

        :raises ConfigurationError: the connection does not exist, or its URI is one MLflow cannot use.
        """
        connection = self._connection
        if connection is None:
            return resolve_tracking_uri(None)
        host = str(connection.host or "")
        if "://" not in host:
            host = f"{connection.schema or 'http'}://{host}"
        parts = urlsplit(host)
        if connection.port and parts.port is None:
            parts = parts._replace(netloc=f"{parts.netloc}:{connection.port}")
        uri = urlunsplit(parts)
        check_tracking_uri(uri, f"tracking_conn_id {self.tracking_conn_id!r} (its host)")
        return uri

    def check_shared_by_every_worker(self, uri: str) -> None:
        """Refuse a store on this machine's disk when the executor spreads tasks over machines.

        :param uri: the tracking URI tasks would use.
        :raises ConfigurationError: the store is local to this worker and the executor is not
            the ``LocalExecutor`` (and ``TRAINING_RUNS_SINGLE_MACHINE`` is not set).
        """
        if tracking_uri_scheme(uri) not in ("sqlite", "file", ""):
            return
        if os.environ.get("TRAINING_RUNS_SINGLE_MACHINE", "").lower() in ("1", "true", "yes"):
            return
        from airflow.configuration import conf

        executor = str(conf.get("core", "executor", fallback="LocalExecutor"))
        kinds = {entry.split(":")[-1].strip().rsplit(".", 1)[-1] for entry in executor.split(",") if entry.strip()}
        if kinds <= _ONE_MACHINE_EXECUTORS:
            return
        source = f"connection {self.tracking_conn_id!r}" if self.tracking_conn_id else (
            "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the embedded store")
        raise ConfigurationError(
            "tracking_conn_id",
            f"the tracking store ({source}: {uri}) is on this worker's disk, but Airflow's executor "
            f"({executor}) runs tasks on several machines: a retry on another worker would not find the run "
            "and would run the script again, and the run history would be split over the workers.",
            "set tracking_conn_id to an 'mlflow' connection of a tracking server every worker reaches (or "
            "MLFLOW_TRACKING_URI=http://... on every worker); if every worker runs on this one machine, set "
            "TRAINING_RUNS_SINGLE_MACHINE=1.")

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

    def test_connection(self) -> tuple[bool, str]:
        """Reach the tracking store with the connection's credentials (the connection form's Test
        button), without changing this process's environment.

        :return: whether it worked, and what answered or what to fix.
        """
        from airflow_provider.hooks.connection_test import connection_test_result
        from airflow_provider.hooks.tracking_reachability import tracking_reachability

        def reach() -> str:
            uri = self.get_tracking_uri()
            self.check_shared_by_every_worker(uri)
            return tracking_reachability(uri, self.get_credentials())

        return connection_test_result(reach)

    def configure_process(self) -> str:
        """Put the credentials in this process's environment (MLflow reads them there), after
        checking the store is one every worker reaches (:meth:`check_shared_by_every_worker`).

        :return: the tracking URI.
        """
        uri = self.get_tracking_uri()
        self.check_shared_by_every_worker(uri)
        os.environ.update(self.get_credentials())
        return uri
