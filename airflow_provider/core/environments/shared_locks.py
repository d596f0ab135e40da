"""Locks shared by every machine that submits to one MLflow tracking server.

A lock is cached on the machine that resolved it (``<state>/locks/``). With several Airflow workers
(CeleryExecutor), a retraining run lands on any of them: without sharing, each worker would resolve
the same specification on its own day and get its own packages. So when runs are tracked on a
shared server (``http(s)://``, or a PostgreSQL/MySQL/SQL Server database), every lock resolved
from an index is also published there, and a worker that has none of its own takes the published
one before resolving anything: the same specification gets the same packages on every worker
until someone asks for a refresh.

Each published lock is a run of the experiment :data:`EXPERIMENT` (visible in the MLflow UI):
tags :data:`KEY_TAG` (the lock's cache key: requirements, target platform, install mode) and
:data:`REQUESTED_TAG` (what was asked for, for refreshes), the lock as the artifact ``lock.json``.
The newest live run of a key wins; ``Environment.refresh_lock()`` deletes the runs of what it
refreshes (MLflow keeps them restorable). Locks naming files of one machine (a wheel built there,
a local channel) are never published.

Submitting code sets the store for what it prepares (:func:`sharing_locks`); locking code asks
:func:`current` (a context variable, so concurrent submissions in one process never mix stores).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["EXPERIMENT", "KEY_TAG", "REQUESTED_TAG", "SharedLocks", "current", "requested_id", "shared_locks_for",
           "sharing_locks"]

log = logging.getLogger(__name__)

EXPERIMENT = "training-runs: environment locks"
"""The MLflow experiment holding the published locks."""
KEY_TAG = "training.lock.key"
REQUESTED_TAG = "training.lock.requested"
_KIND_TAG = "training.lock.kind"
_ARTIFACT = "lock.json"
_SHARED_SCHEMES = ("http", "https", "postgresql", "mysql", "mssql", "databricks")
_current: contextvars.ContextVar[SharedLocks | None] = contextvars.ContextVar("training_runs_shared_locks",
                                                                              default=None)


def requested_id(kind: str, requested: Any) -> str:
    """The id of what was asked for (requirement lines, a conda specification): refreshes find by it.

    :param kind: ``"pip"`` or ``"conda"``.
    :param requested: JSON-serialisable: the requirement lines, or the specification's payload.
    """
    return hashlib.sha256(json.dumps({"kind": kind, "requested": requested}, sort_keys=True).encode()).hexdigest()


class SharedLocks:
    """The locks published on one tracking server.

    :param tracking_uri: the server's tracking URI.
    """

    def __init__(self, tracking_uri: str) -> None:
        from airflow_provider.core.tracking import Tracker

        self.tracking_uri = tracking_uri
        self._tracker = Tracker(tracking_uri)

    def get(self, key: str) -> dict[str, Any] | None:
        """The newest published lock of ``key`` (its JSON), or None.

        :param key: the lock's cache key.
        """
        experiment = self._tracker.client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            return None
        runs = self._tracker.client.search_runs([experiment.experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                                                order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            return None
        with tempfile.TemporaryDirectory(prefix="shared-lock-") as scratch:
            try:
                path = self._tracker.client.download_artifacts(runs[0].info.run_id, _ARTIFACT, scratch)
                data = json.loads(Path(path).read_text())
            except Exception as exc:  # a half-published lock (its artifact not written yet): resolve
                log.warning("The shared lock %s of run %s cannot be read (%s); resolving instead", key,
                            runs[0].info.run_id, exc)
                return None
        return data if isinstance(data, dict) else None

    def put(self, key: str, requested: str, kind: str, data: dict[str, Any], summary: str) -> None:
        """Publish a lock (a new run; readers take the newest).

        :param key: the lock's cache key.
        :param requested: :func:`requested_id` of what was asked for.
        :param kind: ``"pip"`` or ``"conda"``.
        :param data: the lock's JSON.
        :param summary: a line for the run's name in the MLflow UI.
        """
        experiment_id = self._tracker.experiment_id(EXPERIMENT)
        run = self._tracker.client.create_run(experiment_id, tags={KEY_TAG: key, REQUESTED_TAG: requested,
                                                                   _KIND_TAG: kind},
                                              run_name=summary[:200])
        run_id = run.info.run_id
        self._tracker.client.log_text(run_id, json.dumps(data, indent=1, sort_keys=True), _ARTIFACT)
        self._tracker.client.set_terminated(run_id, "FINISHED")

    def retire(self, requested: str) -> int:
        """Delete the published locks of what was asked for (the next build resolves anew).

        :param requested: :func:`requested_id` of the requirements or specification.
        :return: how many were deleted.
        """
        experiment = self._tracker.client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            return 0
        runs = self._tracker.client.search_runs([experiment.experiment_id],
                                                filter_string=f"tags.`{REQUESTED_TAG}` = '{requested}'",
                                                max_results=1000)
        for run in runs:
            self._tracker.client.delete_run(run.info.run_id)
        return len(runs)


def shared_locks_for(tracking_uri: str | None) -> SharedLocks | None:
    """The shared locks of a tracking URI; None for a store of this machine alone (SQLite, a folder).

    :param tracking_uri: the tracking URI (None: ``MLFLOW_TRACKING_URI`` or the embedded store).
    """
    from airflow_provider.core.tracking import resolve_tracking_uri, tracking_uri_scheme

    uri = resolve_tracking_uri(tracking_uri)
    return SharedLocks(uri) if tracking_uri_scheme(uri) in _SHARED_SCHEMES else None


def current() -> SharedLocks | None:
    """The shared locks of what is being prepared now (set by :func:`sharing_locks`), if any."""
    return _current.get()


@contextlib.contextmanager
def sharing_locks(store: SharedLocks | None) -> Iterator[None]:
    """Use ``store`` for the locks resolved or looked up inside the block (in this context).

    :param store: the shared locks, or None for this machine's cache alone.
    """
    token = _current.set(store)
    try:
        yield
    finally:
        _current.reset(token)
