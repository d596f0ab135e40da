"""Child runs and model registration asked for by a run's events (Azure ML v1 compatibility).

The relay calls these on the watcher's side, where MLflow is. Both are idempotent, because the
relay may replay events after a crash (see :mod:`relay`): a child run is found again by its root
run and key (the tags ``training.root_run_id`` and ``training.child_key``) before one is created,
and a model version is found again by its run and source before one is registered.
"""

from __future__ import annotations

import logging
import posixpath

from airflow_provider.core.errors import TrackingRefusedError
from airflow_provider.core.tracking import RunState, Tags, Tracker
from airflow_provider.runtime.events import ChildRunEvent, EndRunEvent, ModelEvent

__all__ = ["ChildRuns", "artifact_exists", "register_model"]

log = logging.getLogger(__name__)

_STATUS = {"Completed": RunState.COMPLETED, "Failed": RunState.FAILED, "Canceled": RunState.CANCELED}


class ChildRuns:
    """The child runs of one run: MLflow runs tagged ``mlflow.parentRunId``, found by key.

    :param tracker: where the runs live.
    :param run_id: the MLflow id of the (root) run whose script created them.
    """

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self._ids: dict[str, str] = {}
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        """The experiment of the run (its children live there too)."""
        if self._experiment_id is None:
            self._experiment_id = str(self.tracker.get_run(self.run_id).info.experiment_id)
        return self._experiment_id

    def run_id_of(self, key: str) -> str | None:
        """The MLflow run id of the child ``key``, or None when no such child was created.

        :param key: the child's key.
        """
        if key not in self._ids:
            found = self._find(key)
            if found is None:
                return None
            self._ids[key] = found
        return self._ids[key]

    def create(self, event: ChildRunEvent) -> str | None:
        """Create the child run of ``event`` unless it exists (a replayed event); return its id.

        :param event: the event; a child nested in an unknown child is dropped (None).
        """
        existing = self.run_id_of(event.child)
        if existing is not None:
            return existing
        parent = self.run_id if not event.parent else self.run_id_of(event.parent)
        if parent is None or not _valid_key(event.child):
            return None
        run = self.tracker.client.create_run(
            self.experiment_id, run_name=event.name or event.child,
            tags={Tags.PARENT_RUN_ID: parent, Tags.CHILD_KEY: event.child, Tags.ROOT_RUN_ID: self.run_id,
                  Tags.STATE: RunState.RUNNING.value},
        )
        self._ids[event.child] = str(run.info.run_id)
        return self._ids[event.child]

    def end(self, event: EndRunEvent) -> None:
        """End the child run of ``event`` with its status, if it is still running.

        :param event: the event (a child's ``complete()`` or ``fail()``).
        """
        run_id = self.run_id_of(event.child)
        if run_id is None:
            return
        self._end(run_id, _STATUS.get(event.status, RunState.FAILED), event.details or None)

    def end_open(self, state: RunState) -> int:
        """End every child (at any depth) still running with the run's own final state.

        :param state: the run's terminal state.
        :return: how many children were ended.
        """
        ended = 0
        parents = [self.run_id]
        while parents:
            parent = parents.pop()
            for child in self.tracker.child_runs(self.experiment_id, parent):
                parents.append(child.info.run_id)
                if child.info.status == "RUNNING":
                    self._end(child.info.run_id, state)
                    ended += 1
        return ended

    def _end(self, run_id: str, state: RunState, error: str | None = None) -> None:
        if self.tracker.get_run(run_id).info.status != "RUNNING":
            return  # a replayed end: the first one decided
        self.tracker.end(run_id, state, error)

    def _find(self, key: str) -> str | None:
        if not _valid_key(key):
            return None
        runs = self.tracker.client.search_runs(
            [self.experiment_id], max_results=1,
            filter_string=f"tags.`{Tags.ROOT_RUN_ID}` = '{self.run_id}' and tags.`{Tags.CHILD_KEY}` = '{key}'",
        )
        return str(runs[0].info.run_id) if runs else None


def artifact_exists(tracker: Tracker, run_id: str, path: str) -> bool:
    """True when the run has the artifact file or folder ``path``.

    :param tracker: where the run lives.
    :param run_id: the MLflow run id.
    :param path: the artifact's path inside the run.
    """
    folder = posixpath.dirname(path.rstrip("/")) or None
    return any(info.path == path.rstrip("/") for info in tracker.client.list_artifacts(run_id, folder))


def register_model(tracker: Tracker, run_id: str, event: ModelEvent) -> str:
    """Register the run's artifact ``event.path`` as a version of the model ``event.name``.

    A version registered before from the same run and source is returned instead (replay).

    :param tracker: where the run lives.
    :param run_id: the MLflow run id whose artifact it is.
    :param event: the registration asked for.
    :return: the model version.
    """
    client = tracker.client
    source = f"{tracker.get_run(run_id).info.artifact_uri}/{event.path.rstrip('/')}"
    try:
        client.create_registered_model(event.name)
    except TrackingRefusedError as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    for version in client.search_model_versions(f"name = '{event.name}' and run_id = '{run_id}'"):
        if version.source == source:
            return str(version.version)
    created = client.create_model_version(event.name, source, run_id=run_id, tags=event.tags or None,
                                          description=event.description or None)
    log.info("Registered model %s version %s from run %s (%s)", event.name, created.version, run_id, event.path)
    return str(created.version)


def _valid_key(key: str) -> bool:
    return bool(key) and len(key) <= 200 and all(c.isalnum() or c in "_-." for c in key)
