"""A run's history as MLflow holds it (Azure ML v1's ``Run`` reads): details, metrics, files,
the snapshot it ran. Reads only: nothing here drives a job."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider.core.bookkeeping import read_bookkeeping
from airflow_provider.core.data.outputs import OUTPUTS_TAG
from airflow_provider.core.data.run_data import INPUTS_TAG
from airflow_provider.core.errors import ArtifactNotFoundError, ConfigurationError, TrackingError
from airflow_provider.core.run_definition import DEFINITION_TAG, read_run_definition
from airflow_provider.core.snapshot import SnapshotStore
from airflow_provider.core.tracking import RunState, Tags, Tracker
from airflow_provider.core.watcher import DRIVER_LOG_ARTIFACT

if TYPE_CHECKING:
    from airflow_provider.core.submit import Experiment

__all__ = ["RunHistory"]


SYSTEM_METRICS_PREFIX = "system/"
"""MLflow's prefix of system metrics (sampled by the job's supervisor, not logged by the script)."""


class RunHistory:
    """What any run's handle can read back from MLflow (:class:`~airflow_provider.core.script_run.ScriptRun`
    adds status and control).

    :param experiment: the run's experiment.
    :param run_id: the MLflow run id.
    """

    def __init__(self, experiment: Experiment, run_id: str) -> None:
        self.experiment = experiment
        self.id = run_id
        self._definition: dict[str, Any] | None = None  # read once: a definition never changes

    @property
    def tracker(self) -> Tracker:
        """The experiment's tracker."""
        return self.experiment.tracker

    def get_details(self) -> dict[str, Any]:
        """Status, times, target, snapshot, environment, git properties, error, log files, with
        Azure ML v1's keys (``runId``, ``target``, ``status``, ``startTimeUtc``, ``endTimeUtc``,
        ``properties``, ``inputDatasets``, ``outputDatasets``, ``logFiles``, ``submittedBy``,
        ``runDefinition``): the shape is documented in ``docs/run-details.md``."""
        run = self.tracker.get_run(self.id)
        tags = run.data.tags
        details: dict[str, Any] = {
            "runId": self.id,
            "displayName": run.info.run_name,
            "submittedBy": tags.get(Tags.USER),
            "runDefinition": self._run_definition(tags),
            "inputDatasets": _bindings(tags.get(INPUTS_TAG)),
            "outputDatasets": _bindings(tags.get(OUTPUTS_TAG)),
            "tags": {k: v for k, v in tags.items() if not k.startswith(("mlflow.", "training."))},
            "parameters": dict(run.data.params),
            "experimentId": run.info.experiment_id,
            "status": tags.get(Tags.STATE, RunState.QUEUED.value),
            "mlflowStatus": run.info.status,
            "startTimeUtc": _iso(run.info.start_time),
            "endTimeUtc": _iso(run.info.end_time),
            "target": tags.get(Tags.TARGET),
            "command": tags.get(Tags.COMMAND),
            "snapshotId": tags.get(Tags.SNAPSHOT_ID),
            "environment": {
                "name": tags.get(Tags.ENVIRONMENT_NAME),
                "fingerprint": tags.get(Tags.ENVIRONMENT_FINGERPRINT),
                "description": tags.get(Tags.ENVIRONMENT_DESCRIPTION),
            },
            "properties": {k: v for k, v in tags.items() if k.startswith("mlflow.source.git.")
                           or k == "training.git.dirty"},
            "stateTimes": read_bookkeeping(tags).get("state_times", {}),
            "artifactUri": run.info.artifact_uri,
            "logFiles": [*self.tracker.list_artifacts(self.id, "system_logs", run.info.artifact_uri),
                         *self.tracker.list_artifacts(self.id, "logs", run.info.artifact_uri)],
        }
        if Tags.EXIT_CODE in tags:
            details["exitCode"] = int(tags[Tags.EXIT_CODE])
        if Tags.ERROR in tags:
            failing_rank = re.search(r"system_logs/rank_\d+\.log", tags[Tags.ERROR])
            log = failing_rank.group(0) if failing_rank else DRIVER_LOG_ARTIFACT
            details["error"] = {"message": tags[Tags.ERROR], "logTail": self._log_tail(log)}
        return details

    def _run_definition(self, tags: dict[str, str]) -> dict[str, Any]:
        """What the run was asked to do (:mod:`~airflow_provider.core.run_definition`); for a run
        submitted before it was recorded, what its tags tell."""
        fallback = {"command": tags.get(Tags.COMMAND), "target": tags.get(Tags.TARGET)}
        try:
            if self._definition is None:  # read once: a definition never changes
                self._definition = read_run_definition(self.tracker, self.id, tags)
        except (ValueError, TrackingError) as exc:  # rewritten by the script, or its artifact not there (yet)
            return {**fallback, "unreadable": f"{DEFINITION_TAG}: {type(exc).__name__}: {exc}"[:300]}
        definition = self._definition
        if definition is None:
            return fallback
        return dict(definition)

    def get_metrics(self, include_system: bool = False) -> dict[str, float | list[float]]:
        """Every metric the run logged: one value, or the list of values of a series (ordered by step).

        :param include_system: also the system metrics its target sampled (``system/...``; as in Azure
            ML, they are left out by default).
        """
        run = self.tracker.get_run(self.id)
        metrics: dict[str, float | list[float]] = {}
        for key in sorted(run.data.metrics):
            if key.startswith(SYSTEM_METRICS_PREFIX) and not include_system:
                continue
            values = [m.value for m in self.tracker.metric_history(self.id, key)]
            metrics[key] = values[0] if len(values) == 1 else values
        return metrics

    def get_file_names(self) -> list[str]:
        """Every artifact path of the run."""
        return self.tracker.list_artifacts(self.id)

    def download_file(self, name: str, output_file_path: str | os.PathLike[str] | None = None) -> Path:
        """Download the artifact ``name`` (e.g. ``"outputs/model.pkl"``).

        :param name: the artifact's path in the run.
        :param output_file_path: where to write it; default its base name in the current folder.
        :raises ArtifactNotFoundError: the run has no such artifact (a :class:`FileNotFoundError`).
        """
        destination = Path(output_file_path or Path(name).name)
        if destination.is_dir():
            destination = destination / Path(name).name
        with tempfile.TemporaryDirectory(prefix="download-") as scratch:
            try:
                local = self.tracker.download_artifact(self.id, name, scratch)
            except ArtifactNotFoundError as exc:
                raise ArtifactNotFoundError(
                    f"run {self.id} has no artifact {name!r}; it has: {self.get_file_names()}"
                ) from exc.__cause__
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(local, destination)
        return destination

    def restore_snapshot(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Rebuild the exact source tree the run was submitted with.

        :param path: the folder to write it to; default ``./snapshot_<run id>``.
        """
        snapshot_id = self.tracker.get_run(self.id).data.tags.get(Tags.SNAPSHOT_ID)
        if not snapshot_id:
            raise ConfigurationError("ScriptRun.restore_snapshot", f"run {self.id} has no snapshot.", "")
        return SnapshotStore().restore(snapshot_id, Path(path or f"snapshot_{self.id}"))

    def _log_tail(self, artifact: str = DRIVER_LOG_ARTIFACT, lines: int = 40) -> str:
        with tempfile.TemporaryDirectory(prefix="driver-log-") as scratch:
            try:
                local = self.tracker.download_artifact(self.id, artifact, scratch)
            except TrackingError:  # no driver log (the run never started), or none to read now: no tail
                return ""
            with open(local, "rb") as stream:
                stream.seek(max(0, os.path.getsize(local) - 8192))
                text = stream.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _bindings(recorded: str | None) -> list[dict[str, Any]]:
    """A run's inputs or outputs as its tag records them: name, URI, mode (never credentials)."""
    if not recorded:
        return []
    try:
        bindings = json.loads(recorded)
    except ValueError:
        return []
    return [{"name": name, "uri": value.get("uri"), "mode": value.get("mode"), "connection": value.get("connection")}
            for name, value in sorted(bindings.items()) if isinstance(value, dict)]


def _iso(milliseconds: int | None) -> str | None:
    if not milliseconds:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
