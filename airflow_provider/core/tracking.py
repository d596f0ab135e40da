"""Run history in MLflow: experiments, runs found by key, detailed states, batched metrics, artifacts.

Tracking URI, in order: the caller's argument, ``MLFLOW_TRACKING_URI``, else the embedded default
``sqlite:///<state>/mlflow.db`` with artifacts in ``<state>/mlartifacts`` (see :mod:`paths`).
For a SQLite URI, experiments this module creates keep their artifacts beside the database file
instead of MLflow's ``./mlruns`` relative to whatever the current directory is.

A URI is checked when a :class:`Tracker` is made (a scheme MLflow supports; a SQLite database
in an existing folder, which MLflow would otherwise create), and a tracking server is probed once
before the first run is created (:meth:`Tracker.check_reachable`): a server that does not
answer fails in seconds with :class:`TrackingUnavailableError` instead of after MLflow's minutes
of HTTP retries.

MLflow's own errors never leave this module: :attr:`Tracker.client` is MLflow's client behind a
proxy that maps every failed call onto the error tree (:func:`tracking_error`), the original as
``__cause__``: a server that does not answer (refused, timeout, 5xx, ``TEMPORARILY_UNAVAILABLE``)
is :class:`TrackingUnavailableError` (retryable), a request MLflow refuses for what it holds
(``INVALID_PARAMETER_VALUE``, ``RESOURCE_DOES_NOT_EXIST``, ...) is :class:`TrackingRefusedError`.

MLflow imports are deferred to first use, so importing the core stays cheap.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from airflow_provider.core.bookkeeping import BookkeepingCache, read_bookkeeping, run_key_hash_pattern
from airflow_provider.core.errors import (
    ArtifactNotFoundError,
    ConfigurationError,
    TrackingError,
    TrackingRefusedError,
    TrackingUnavailableError,
    TrainingRunError,
)
from airflow_provider.core.paths import state_dir

if TYPE_CHECKING:
    from mlflow.entities import FileInfo, Metric, Run
    from mlflow.tracking import MlflowClient

__all__ = ["RunState", "Tags", "Tracker", "check_tracking_uri", "resolve_tracking_uri", "tracking_error"]

# MLflow's log_batch limits (mlflow.utils.validation): entities per call and request size.
_MAX_METRICS_PER_BATCH = 1000
_MAX_TAGS_PER_BATCH = 100
_MAX_BATCH_BYTES = 900_000
_MAX_TAG_VALUE = 8000
_MAX_PARAM_VALUE = 6000

TRACKING_PROBE_TIMEOUT_SECONDS = 5.0
"""How long the probe of a tracking server waits for an answer before the server counts as unreachable."""
# The schemes MLflow's tracking store registry knows (mlflow.tracking._tracking_service.utils), without
# importing MLflow; plugins add theirs through the ``mlflow.tracking_store`` entry point group.
_STORE_SCHEMES = ("", "file", "http", "https", "databricks", "databricks-uc", "uc")
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_PLUGIN_GROUP = "mlflow.tracking_store"


class RunState(str, enum.Enum):
    """The detailed state of a run, kept as tags beside MLflow's coarse status."""

    QUEUED = "Queued"
    PREPARING = "Preparing"
    STARTING = "Starting"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def is_terminal(self) -> bool:
        """Completed, Failed or Canceled."""
        return self in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELED)

    @property
    def mlflow_status(self) -> str:
        """The MLflow run status this state ends with."""
        return {RunState.COMPLETED: "FINISHED", RunState.FAILED: "FAILED",
                RunState.CANCELED: "KILLED"}.get(self, "RUNNING")


class Tags:
    """Names of the tags this provider writes (one place, never repeated as literals)."""

    STATE = "training.state"
    RUN_KEY = "training.run_key"
    BOOKKEEPING = "training.bookkeeping"
    """One JSON tag: run-key hash, job handle, relay offset, state times (:mod:`.bookkeeping`)."""
    TARGET = "training.target"
    SNAPSHOT_ID = "training.snapshot_id"
    SOURCE_DIRECTORY = "training.source_directory"
    COMMAND = "training.command"
    ENVIRONMENT_NAME = "training.environment.name"
    ENVIRONMENT_FINGERPRINT = "training.environment.fingerprint"
    ENVIRONMENT_DESCRIPTION = "training.environment.description"
    DISTRIBUTION = "training.distribution"
    ERROR = "training.error"
    QUEUE_REASON = "training.queue_reason"
    EXIT_CODE = "training.exit_code"
    RUN_NAME = "mlflow.runName"
    USER = "mlflow.user"
    SOURCE_NAME = "mlflow.source.name"
    SOURCE_TYPE = "mlflow.source.type"
    PARENT_RUN_ID = "mlflow.parentRunId"
    SWEEP_ROLE = "training.sweep.role"
    SWEEP_SETTINGS = "training.sweep.settings"
    SWEEP_SEED = "training.sweep.seed"
    SWEEP_TRIAL_INDEX = "training.sweep.trial_index"
    SWEEP_HYPERPARAMETERS = "training.sweep.hyperparameters"
    SWEEP_PRIMARY_METRIC = "training.sweep.primary_metric"
    SWEEP_GOAL = "training.sweep.goal"
    SWEEP_POLICY = "training.sweep.policy"
    SWEEP_TERMINATED = "training.sweep.terminated"
    SWEEP_STOPPED = "training.sweep.stopped"
    SWEEP_BEST_RUN_ID = "training.sweep.best_run_id"
    SWEEP_BEST_HYPERPARAMETERS = "training.sweep.best_hyperparameters"
    # Azure ML v1 compatibility (child runs, run.fail(), register_model)
    CHILD_KEY = "training.child_key"
    ROOT_RUN_ID = "training.root_run_id"
    FAIL_REQUESTED = "training.fail_requested"
    MODEL_ERRORS = "training.model_errors"
    AZUREML_COMPAT = "training.azureml_compat"
    WARNINGS = "training.warnings"


WARNINGS_ARTIFACT = "system_logs/warnings.log"
"""What the watcher skipped and why (refused events, files of ``./outputs`` it did not follow)."""

_REFUSAL_CODES = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "MALFORMED_REQUEST", "INVALID_STATE",
                            "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS"})


_UNAVAILABLE_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED",
                                 "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED"})
"""MLflow error codes of a server (or store) that failed for now: a retry may get through."""
_DENIAL_CODES = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED", "FEATURE_DISABLED", "NOT_IMPLEMENTED",
                           "ENDPOINT_NOT_FOUND"})
"""MLflow error codes that the same request gets again (like refusals, but never skipped by the relay)."""


_BUSY_SERVER_SIGNS = ("QueuePool limit of size", "database is locked", "could not obtain lock")
"""Texts of a tracking server's database being busy, which MLflow's server answers with BAD_REQUEST."""


def is_refusal(exc: BaseException) -> bool:
    """True when MLflow refused a write for what it holds (a bad name, path or value): the same
    write will be refused again, so it is skipped and noted, not retried. False for everything
    else (a server down, a busy store), which a retry may get through.

    :param exc: the exception a tracking call raised (a :class:`TrackingRefusedError` from
        :attr:`Tracker.client`, or MLflow's own exception from a client made elsewhere).
    """
    if isinstance(exc, TrackingRefusedError):
        return exc.error_code in _REFUSAL_CODES
    from mlflow.exceptions import MlflowException

    return (isinstance(exc, MlflowException) and exc.error_code in _REFUSAL_CODES
            and not any(sign in str(exc) for sign in _BUSY_SERVER_SIGNS))


def _library_errors() -> tuple[type[BaseException], ...]:
    """What MLflow's client lets out: its own exception, HTTP client errors, database errors, I/O errors."""
    import requests
    import urllib3.exceptions
    from mlflow.exceptions import MlflowException

    errors: tuple[type[BaseException], ...] = (MlflowException, requests.exceptions.RequestException,
                                               urllib3.exceptions.HTTPError, OSError)
    with contextlib.suppress(ImportError):
        import sqlalchemy.exc

        errors += (sqlalchemy.exc.SQLAlchemyError,)
    return errors


def tracking_error(exc: BaseException, tracking_uri: str, call: str) -> TrackingError:
    """The error of the tree for an exception MLflow's client raised (raise it ``from exc``).

    :param exc: what the client raised.
    :param tracking_uri: where the client went, for the message.
    :param call: the client method that failed, for the message.
    """
    from mlflow.exceptions import MlflowException

    message = f"MLflow at {_without_userinfo(tracking_uri)}: {call} failed: {exc}"
    if isinstance(exc, MlflowException):
        code = str(exc.error_code)
        if any(sign in str(exc) for sign in _BUSY_SERVER_SIGNS):  # a server sends its busy database as 400
            return TrackingUnavailableError(message)
        if code in _REFUSAL_CODES or code in _DENIAL_CODES:
            return TrackingRefusedError(message, code)
        if code in _UNAVAILABLE_CODES or int(exc.get_http_status_code()) >= 500:  # type: ignore[no-untyped-call]
            return TrackingUnavailableError(message)
        return TrackingError(message)
    import requests

    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError)):
        return TrackingUnavailableError(message)
    if isinstance(exc, FileNotFoundError):  # a local artifact store without the file
        return TrackingRefusedError(message, "RESOURCE_DOES_NOT_EXIST")
    status = _http_status(exc)
    if status >= 500:
        return TrackingUnavailableError(message)
    if status >= 400:  # an artifact server's answer
        return TrackingRefusedError(message, "RESOURCE_DOES_NOT_EXIST" if status == 404 else "BAD_REQUEST")
    return TrackingError(message)


def _without_userinfo(uri: str) -> str:
    """``uri`` for messages: a database URI's ``user:password@`` left out."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if "@" not in parts.netloc:
        return uri
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _http_status(exc: BaseException) -> int:
    """The HTTP status of a ``requests`` error with an answer, else 0."""
    response = getattr(exc, "response", None)
    return int(getattr(response, "status_code", 0) or 0)


_log = logging.getLogger(__name__)

TRACKING_RETRY_BUDGET_VARIABLE = "TRAINING_RUNS_TRACKING_RETRY_SECONDS"
DEFAULT_TRACKING_RETRY_SECONDS = 300.0
"""How long a call that failed for a transient reason (the server down or restarting, a connection cut
mid-answer, its database pool exhausted) is tried again, with backoff, before the error is raised.
MLflow's own HTTP retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``) come first, inside each try."""
_MAX_RETRY_DELAY_SECONDS = 30.0
_NOT_RETRIED = frozenset({"create_run", "create_experiment", "create_registered_model", "create_model_version"})
"""Calls that make something: a retry after an answer lost on the way back would make a second one."""


def tracking_retry_budget() -> float:
    """Seconds a transient tracking error is retried (``TRAINING_RUNS_TRACKING_RETRY_SECONDS``, default 300).

    :raises ConfigurationError: the variable is not a number >= 0.
    """
    raw = os.environ.get(TRACKING_RETRY_BUDGET_VARIABLE, "")
    if not raw:
        return DEFAULT_TRACKING_RETRY_SECONDS
    try:
        budget = float(raw)
    except ValueError:
        budget = -1.0
    if not budget >= 0:
        raise ConfigurationError(TRACKING_RETRY_BUDGET_VARIABLE, f"{raw!r} is not a number of seconds >= 0.",
                                 f"set it to e.g. {DEFAULT_TRACKING_RETRY_SECONDS:g}, or 0 to retry nothing.")
    return budget


class _TranslatingClient:
    """MLflow's client, whose every method raises only :class:`TrackingError` and its subclasses, and
    retries a transient failure (:class:`TrackingUnavailableError`) with backoff for
    :func:`tracking_retry_budget` seconds, each retry logged (calls that create something excepted).

    :param client: the MLflow client.
    :param tracking_uri: its tracking URI, for messages.
    """

    def __init__(self, client: MlflowClient, tracking_uri: str) -> None:
        self._client = client
        self._tracking_uri = tracking_uri

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute
        return self.translated(name, attribute)

    def translated(self, name: str, method: Any) -> Any:
        """``method`` raising only :class:`TrackingError` and retried like the client's own ``name``.

        :param name: the MLflow call it stands for (in messages, and whether it is retried).
        :param method: the callable.
        """
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            deadline: float | None = None
            delay = 1.0
            while True:
                try:
                    return method(*args, **kwargs)
                except TrainingRunError:
                    raise
                except _library_errors() as exc:
                    error = tracking_error(exc, self._tracking_uri, name)
                    if not isinstance(error, TrackingUnavailableError) or name in _NOT_RETRIED:
                        raise error from exc
                    now = time.monotonic()
                    if deadline is None:
                        budget = tracking_retry_budget()
                        deadline = now + budget
                    if now + delay > deadline:
                        raise error from exc
                    _log.warning("%s; trying again in %.0f s (%.0f s left of the retry budget, %s)", error, delay,
                                 deadline - now, TRACKING_RETRY_BUDGET_VARIABLE)
                    time.sleep(delay)
                    delay = min(delay * 2, _MAX_RETRY_DELAY_SECONDS)

        return call


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """Return the tracking URI to use (argument, ``MLFLOW_TRACKING_URI``, embedded default).

    :param explicit: a URI given by the caller.
    """
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{state_dir() / 'mlflow.db'}"


def check_tracking_uri(uri: str, field: str = "tracking_uri") -> None:
    """Refuse a tracking URI MLflow cannot use, before anything is sent to it.

    :param uri: the tracking URI.
    :param field: how the caller names where the URI came from, for the message.
    :raises ConfigurationError: for an unknown scheme, or a SQLite database in a folder that does not exist.
    """
    scheme = tracking_uri_scheme(uri)
    if scheme in _STORE_SCHEMES or scheme in _DATABASE_SCHEMES:
        if scheme == "sqlite":
            _check_sqlite_folder(uri, field)
        return
    plugins = _plugin_schemes()
    if scheme not in plugins:
        supported = sorted({*_STORE_SCHEMES, *_DATABASE_SCHEMES, *plugins} - {""})
        raise ConfigurationError(
            field, f"{uri!r} has the scheme {scheme!r}, which MLflow has no tracking store for.",
            f"use one of the schemes {', '.join(supported)} (database URIs may name a driver, e.g. "
            "postgresql+psycopg2://), or a local folder path.")


def tracking_uri_scheme(uri: str) -> str:
    """The scheme of a tracking URI as MLflow's store registry reads it (``""`` for a plain path,
    ``postgresql`` for ``postgresql+psycopg2``).

    :param uri: the tracking URI.
    """
    if uri in ("databricks", "databricks-uc", "uc"):
        return uri
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError:
        return uri.partition(":")[0].lower()
    if len(scheme) == 1:  # a Windows drive letter: a path
        return ""
    return scheme.partition("+")[0] if scheme.partition("+")[0] in _DATABASE_SCHEMES else scheme


def _plugin_schemes() -> tuple[str, ...]:
    from importlib.metadata import entry_points

    return tuple(entry.name for entry in entry_points(group=_PLUGIN_GROUP))


def _check_sqlite_folder(uri: str, field: str) -> None:
    path = uri.partition("://")[2].partition("?")[0]
    if not path.startswith("/"):
        return  # sqlite:// (in memory)
    database = path[1:]  # sqlite:///relative.db, sqlite:////absolute.db
    if not database or database == ":memory:":
        return
    folder = Path(database).parent
    if not folder.is_dir():
        raise ConfigurationError(
            field, f"the SQLite database {database!r} would be in the folder {str(folder)!r}, which does not exist.",
            "create the folder first, or fix the path (an absolute path takes four slashes: "
            "sqlite:////srv/mlflow/mlflow.db).")


def _uri_field(explicit: str | None) -> str:
    if explicit:
        return "Experiment.tracking_uri"
    return "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "tracking_uri"


def _probe_server(uri: str, timeout: float) -> None:
    """One GET of the server's ``/health`` with a short timeout; any HTTP answer counts as reachable."""
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout, allow_redirects=False, **_tls_options())
    except requests.exceptions.SSLError as exc:
        raise ConfigurationError(
            "tracking_uri", f"the TLS handshake with the MLflow tracking server at {uri} failed: {exc}.",
            "point MLFLOW_TRACKING_SERVER_CERT_PATH at the CA bundle that signed the server's certificate "
            "(or set MLFLOW_TRACKING_INSECURE_TLS=true to skip verification).") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise TrackingUnavailableError(
            f"The MLflow tracking server at {uri} is unreachable: it did not answer within {timeout:g}s "
            f"({type(exc).__name__}). No run was started. A retry may help if the server is down or restarting "
            "for a while; otherwise check the tracking URI and that the server is running.") from exc


def _tls_options() -> dict[str, Any]:
    """TLS settings as MLflow's own HTTP client takes them from its environment variables."""
    options: dict[str, Any] = {}
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        options["verify"] = False
    elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        options["verify"] = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    if os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        options["cert"] = os.environ["MLFLOW_TRACKING_CLIENT_CERT_PATH"]
    return options


def _sqlite_artifact_root(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri[len("sqlite:///"):])
    return database.parent / "mlartifacts"


@dataclass(frozen=True)
class MetricValue:
    """One metric value to log (the relay's unit of work)."""

    key: str
    value: float
    step: int
    timestamp_ms: int


class Tracker:
    """A small façade over :class:`mlflow.tracking.MlflowClient` for the run lifecycle.

    :param tracking_uri: the MLflow tracking URI; see :func:`resolve_tracking_uri`.
    """

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        check_tracking_uri(self.tracking_uri, _uri_field(tracking_uri))
        self._client: MlflowClient | None = None
        self._reachable = False

    def check_reachable(self) -> None:
        """Probe a tracking server once (a few seconds at most) before the first run is created.

        Local stores (SQLite, a folder) and schemes without a plain HTTP endpoint are not probed.

        :raises TrackingUnavailableError: the server did not answer (retryable).
        :raises ConfigurationError: the TLS handshake failed.
        """
        if self._reachable:
            return
        if tracking_uri_scheme(self.tracking_uri) in ("http", "https"):
            _probe_server(self.tracking_uri, TRACKING_PROBE_TIMEOUT_SECONDS)
        self._reachable = True

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, created on first use; its calls raise only :class:`TrackingError`
        and its subclasses (see :func:`tracking_error`)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            with _schema_lock(self.tracking_uri):  # the client opens the store: it creates or upgrades it
                copied = _create_private_database(self.tracking_uri)
                try:
                    client = MlflowClient(tracking_uri=self.tracking_uri)
                except Exception:
                    if not copied:
                        raise
                    _drop_copied_schema(self.tracking_uri)  # a bad cached schema: MLflow makes one itself
                    client = MlflowClient(tracking_uri=self.tracking_uri)
            self._client = cast("MlflowClient", _TranslatingClient(client, self.tracking_uri))
            _freeze_imported_objects()
        return self._client

    # ------------------------------------------------------------------ experiments and runs
    def experiment_id(self, name: str) -> str:
        """Return the id of experiment ``name``, creating it when missing.

        :param name: the experiment's name.
        :raises TrackingRefusedError: MLflow refused the name.
        :raises TrackingUnavailableError: the server did not answer.
        """
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        root = _sqlite_artifact_root(self.tracking_uri)
        location = None
        if root is not None:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:100] or "experiment"
            location = (root / f"{slug}-{int(time.time() * 1000)}").as_uri()
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except TrackingError:  # created concurrently by someone else?
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def find_run_by_key(self, experiment_id: str, run_key: str) -> Run | None:
        """The newest run of the experiment tagged with ``run_key``, or None.

        :param experiment_id: where to look.
        :param run_key: the run key (dag, task, logical run, map index).
        """
        key_hash = run_key_hash(run_key)
        runs = [run for filter_string in (f"tags.`{Tags.BOOKKEEPING}` LIKE '{run_key_hash_pattern(key_hash)}'",
                                          f"tags.`training.run_key_hash` = '{key_hash}'")  # an earlier version's
                for run in self.client.search_runs([experiment_id], filter_string=filter_string,
                                                   order_by=["attributes.start_time DESC"], max_results=10)
                if read_bookkeeping(run.data.tags).get("run_key_hash") == key_hash]
        if not runs:
            return None
        newest = max(runs, key=lambda run: run.info.start_time or 0)
        self._bookkeeping.seed(newest.info.run_id, read_bookkeeping(newest.data.tags))
        return newest

    def create_run(self, experiment_id: str, tags: dict[str, str], run_name: str | None = None) -> str:
        """Create a run with ``tags`` (state Queued) and return its id.

        :param experiment_id: the experiment to create it in.
        :param tags: the initial tags.
        :param run_name: MLflow's display name.
        """
        initial = dict(tags)
        bookkeeping: dict[str, Any] = {"state_times": {RunState.QUEUED.value: now_iso()}}
        if Tags.RUN_KEY in initial:
            bookkeeping["run_key_hash"] = run_key_hash(initial[Tags.RUN_KEY])
        initial[Tags.STATE] = RunState.QUEUED.value
        initial[Tags.BOOKKEEPING] = json.dumps(bookkeeping, sort_keys=True)
        run = self.client.create_run(experiment_id, tags=_clip_tags(initial), run_name=run_name)
        self._bookkeeping.seed(run.info.run_id, bookkeeping)
        return str(run.info.run_id)

    def bookkeeping_tags(self, run_id: str, changes: Mapping[str, Any]) -> dict[str, str]:
        """The bookkeeping tag with ``changes`` merged in (:mod:`.bookkeeping`), to write along with
        other tags or metrics; remembered once :meth:`set_tags` or :meth:`log_metrics` wrote it.

        :param run_id: the MLflow run id.
        :param changes: fields to set (``state_times`` entries are added to the recorded ones).
        """
        return self._bookkeeping.merged(run_id, changes)

    @property
    def _bookkeeping(self) -> BookkeepingCache:
        return BookkeepingCache(self.tracking_uri, lambda run_id: self.client.get_run(run_id).data.tags)

    def child_runs(self, experiment_id: str, parent_run_id: str) -> list[Run]:
        """Every run whose ``mlflow.parentRunId`` is ``parent_run_id``, oldest first.

        :param experiment_id: the experiment both live in.
        :param parent_run_id: the parent's run id.
        """
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{Tags.PARENT_RUN_ID}` = '{parent_run_id}'",
                order_by=["attributes.start_time ASC"], max_results=1000, page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        """Log run parameters (each may be logged again only with the same value).

        :param run_id: the MLflow run id.
        :param params: name -> value (clipped to MLflow's value length).
        """
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM_VALUE]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100], synchronous=True)

    def get_run(self, run_id: str) -> Run:
        """Fetch a run (what it records of itself is remembered for the next bookkeeping write).

        :param run_id: the MLflow run id.
        """
        run = self.client.get_run(run_id)
        self._bookkeeping.seed(run_id, read_bookkeeping(run.data.tags))
        return run

    def download_artifact(self, run_id: str, name: str, folder: str) -> str:
        """Download the artifact ``name`` of a run into ``folder``; return its local path.

        :param run_id: the MLflow run id.
        :param name: the artifact's path in the run.
        :param folder: an existing local folder.
        :raises ArtifactNotFoundError: the run has no such artifact (a :class:`FileNotFoundError`).
        :raises TrackingUnavailableError: the server did not answer.
        """
        try:
            return str(self.client.download_artifacts(run_id, name, folder))
        except TrackingRefusedError as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise ArtifactNotFoundError(f"run {run_id} has no artifact {name!r}: {exc.__cause__}") from exc.__cause__

    # ------------------------------------------------------------------ writes
    def set_state(self, run_id: str, state: RunState, extra_tags: dict[str, str] | None = None,
                  job: Mapping[str, Any] | None = None, passed: Mapping[RunState, str] | None = None) -> None:
        """Record the detailed state (with its time), the job's handle and any extra tags in one call.

        :param run_id: the MLflow run id.
        :param state: the state entered now.
        :param extra_tags: more tags to set in the same call.
        :param job: the launched job's handle (``JobHandle.to_dict()``), recorded with the state.
        :param passed: states gone through on the way, with when they were entered.
        """
        times = {earlier.value: when for earlier, when in (passed or {}).items()}
        changes: dict[str, Any] = {"state_times": {**times, state.value: now_iso()}}
        if job is not None:
            changes["job"] = dict(job)
        tags = {Tags.STATE: state.value, **self.bookkeeping_tags(run_id, changes)}
        tags.update(extra_tags or {})
        self.set_tags(run_id, tags)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set several tags, batched under MLflow's limits.

        :param run_id: the MLflow run id.
        :param tags: tag name -> value (clipped to MLflow's value length).
        """
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in _clip_tags(tags).items()]
        for start in range(0, len(items), _MAX_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=items[start : start + _MAX_TAGS_PER_BATCH], synchronous=True)
        self._bookkeeping.written(run_id, tags)

    def log_metrics(self, run_id: str, metrics: Sequence[MetricValue],
                    tags: dict[str, str] | None = None) -> None:
        """Log metrics with ``log_batch`` in chunks under MLflow's count and size limits.

        ``tags`` are written with the last chunk (the relay puts its offset there).

        :param run_id: the MLflow run id.
        :param metrics: the values, in order.
        :param tags: tags written after all metrics.
        """
        from mlflow.entities import Metric, RunTag

        tag_items = [RunTag(k, v) for k, v in _clip_tags(tags or {}).items()]
        chunk: list[Metric] = []
        size = 0
        for metric in metrics:
            cost = len(metric.key) + 80
            if len(chunk) >= _MAX_METRICS_PER_BATCH - len(tag_items) or size + cost > _MAX_BATCH_BYTES:
                self.client.log_batch(run_id, metrics=chunk, synchronous=True)
                chunk, size = [], 0
            chunk.append(Metric(metric.key, metric.value, metric.timestamp_ms, metric.step))
            size += cost
        if chunk or tag_items:
            self.client.log_batch(run_id, metrics=chunk, tags=tag_items, synchronous=True)
        self._bookkeeping.written(run_id, tags or {})

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder's contents as run artifacts.

        :param run_id: the MLflow run id.
        :param local_path: a file or folder here.
        :param artifact_path: the folder inside the run's artifacts (None: the root).
        """
        path = Path(local_path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Upload ``text`` as the artifact ``artifact_file``.

        :param run_id: the MLflow run id.
        :param text: the content.
        :param artifact_file: its path inside the run's artifacts.
        """
        self.client.log_text(run_id, text, artifact_file)

    def log_inputs(self, run_id: str, datasets: list[Any]) -> None:
        """Record the run's data inputs (MLflow ``DatasetInput`` entities: lineage).

        :param run_id: the MLflow run id.
        :param datasets: the inputs.
        """
        self.client.log_inputs(run_id, datasets=datasets)

    def end(self, run_id: str, state: RunState, error: str | None = None) -> None:
        """End a run that its watcher will not finalize: MLflow's status, then the detailed state
        with ``error`` (the state last, as :meth:`RunWatcher.finalize` does).

        :param run_id: the MLflow run id.
        :param state: a terminal state.
        :param error: the run's error message, if any.
        """
        self.terminate(run_id, state)
        self.set_state(run_id, state, {Tags.ERROR: error} if error else None)

    def terminate(self, run_id: str, state: RunState) -> None:
        """End the MLflow run with the status of ``state``.

        The watcher owns a submitted run's final status: a script that used ``mlflow`` directly
        has MLflow's ``atexit`` hook mark the run FINISHED when it exits, even when it then fails,
        so the status is always written.

        :param run_id: the MLflow run id.
        :param state: a terminal state.
        """
        self.client.set_terminated(run_id, state.mlflow_status)

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        """All values of one metric, ordered by step then time.

        :param run_id: the MLflow run id.
        :param key: the metric's name.
        """
        history = self.client.get_metric_history(run_id, key)
        return sorted(history, key=lambda m: (m.step, m.timestamp))

    def list_artifacts(self, run_id: str, path: str | None = None, artifact_uri: str | None = None) -> list[str]:
        """Every artifact file path below ``path`` (recursively).

        :param run_id: the MLflow run id.
        :param path: a folder inside the run's artifacts (None: the root).
        :param artifact_uri: the run's artifact URI when the caller has read the run already: the
            listing then goes straight to the artifact repository, without fetching the run again.
        """
        if artifact_uri is None:
            listing = self.client.list_artifacts
        else:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            repository = get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri)
            translating = cast("_TranslatingClient", self.client)
            listing = translating.translated("list_artifacts",
                                             lambda _run_id, folder: repository.list_artifacts(folder))
        return self._list_below(listing, run_id, path)

    def _list_below(self, listing: Callable[[str, str | None], list[FileInfo]], run_id: str,
                    path: str | None) -> list[str]:
        files: list[str] = []
        for info in listing(run_id, path):
            if info.is_dir:
                files.extend(self._list_below(listing, run_id, info.path))
            else:
                files.append(info.path)
        return files


_frozen = False


def _create_private_database(tracking_uri: str) -> bool:
    """Create a missing SQLite store's file readable by its owner only: run history is nobody else's
    to read, whatever the umask. Call it under :func:`_schema_lock`.

    The file is a copy of the empty schema MLflow made once for its version
    (:mod:`~airflow_provider.core.schema_cache`) when it can be; else an empty file, which SQLite
    takes as a new database and MLflow fills with its schema (migration by migration: seconds).

    :return: True when the store is such a copy, made by this call.
    """
    database = _sqlite_database(tracking_uri)
    if database is None or not database.parent.is_dir() or database.exists():
        return False
    from airflow_provider.core.schema_cache import create_from_cached_schema

    if create_from_cached_schema(database):
        return True
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return False


def _drop_copied_schema(tracking_uri: str) -> None:
    """MLflow refused a store copied from the cached schema: forget that schema, and empty the store
    (this call made it: it holds nothing yet) so that MLflow makes its schema itself."""
    from airflow_provider.core.schema_cache import forget_cached_schema

    forget_cached_schema()
    database = _sqlite_database(tracking_uri)
    assert database is not None
    os.truncate(database, 0)


def _sqlite_database(tracking_uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI, or None for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///"):].split("?", 1)[0])


@contextlib.contextmanager
def _schema_lock(tracking_uri: str) -> Iterator[None]:
    """Let MLflow create or upgrade a SQLite store's schema in one process at a time: without the
    lock, runs started at once against a new store race to create its tables and all but one fail
    (``table _alembic_tmp_... already exists``). A server store manages its own schema."""
    database = _sqlite_database(tracking_uri)
    if database is None:
        yield
        return
    from filelock import FileLock

    if not database.parent.is_dir():
        yield
        return
    with FileLock(str(database.with_name(database.name + ".schema.lock"))):
        yield


def _freeze_imported_objects() -> None:
    """Move the objects MLflow's import created out of the garbage collector's sight, once.

    With MLflow and SQLAlchemy loaded a process tracks ~350,000 objects, and every full
    collection walks them all (~0.2 s): a quarter of the relay's time went there (benchmarks/).
    They live as long as the process anyway.
    """
    global _frozen
    if not _frozen:
        import gc

        gc.freeze()
        _frozen = True


def run_key_hash(run_key: str) -> str:
    """The searchable form of a run key (any characters, any length).

    :param run_key: the run key.
    """
    import hashlib

    return hashlib.sha256(run_key.encode()).hexdigest()[:40]


def _clip_tags(tags: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:_MAX_TAG_VALUE] for k, v in tags.items()}


def now_iso() -> str:
    """The current time as a run's state times record it (ISO 8601, UTC, milliseconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")

