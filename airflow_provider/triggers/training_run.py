"""``TrainingRunTrigger``: watches a detached training run from the triggerer.

It streams the run's output into the task log and relays its metrics to MLflow as they come
(the same :class:`RunWatcher` step the worker uses, run in a thread so the event loop never
blocks), and fires once the job has ended; ``execute_complete`` on a worker then finalizes the
run. When a user marks the deferred task failed or success (or clears it), Airflow calls
``on_kill``: the job's whole process tree is stopped and the run ends Canceled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider.core.submit import Experiment, ScriptRun
from airflow_provider.core.targets.base import JobHandle
from airflow_provider.core.watcher import RunWatcher

__all__ = ["TrainingRunTrigger"]

OUTPUT_PREFIX = "[run] "


class TrainingRunTrigger(BaseTrigger):
    """Watch one submitted run until its job ends.

    :param run_id: the MLflow run id.
    :param experiment_name: the run's experiment.
    :param tracking_uri: the MLflow tracking URI.
    :param tracking_conn_id: the ``mlflow`` connection (for credentials), if any.
    :param compute_target: ``"local"`` or the compute connection id.
    :param handle: the job handle (``JobHandle.to_dict()``).
    :param poll_interval: seconds between polls.
    :param log_offset: bytes of output already shown.
    """

    def __init__(self, run_id: str, experiment_name: str, tracking_uri: str, tracking_conn_id: str | None,
                 compute_target: str, handle: dict[str, Any], poll_interval: float = 5.0,
                 log_offset: int = 0) -> None:
        super().__init__()
        self.run_id = run_id
        self.experiment_name = experiment_name
        self.tracking_uri = tracking_uri
        self.tracking_conn_id = tracking_conn_id
        self.compute_target = compute_target
        self.handle = handle
        self.poll_interval = poll_interval
        self.log_offset = log_offset

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider.triggers.training_run.TrainingRunTrigger",
            {
                "run_id": self.run_id,
                "experiment_name": self.experiment_name,
                "tracking_uri": self.tracking_uri,
                "tracking_conn_id": self.tracking_conn_id,
                "compute_target": self.compute_target,
                "handle": self.handle,
                "poll_interval": self.poll_interval,
                "log_offset": self.log_offset,
            },
        )

    def _script_run(self) -> ScriptRun:
        from airflow_provider.hooks.compute import compute_hook_for
        from airflow_provider.hooks.mlflow import MLflowTrackingHook

        MLflowTrackingHook(self.tracking_conn_id).configure_process()
        target = compute_hook_for(self.compute_target).get_target()
        experiment = Experiment(self.experiment_name, tracking_uri=self.tracking_uri)
        return ScriptRun(experiment, self.run_id, target, JobHandle.from_dict(self.handle))

    def _output(self, line: str) -> None:
        self.log.info("%s%s", OUTPUT_PREFIX, line)

    def _event(self, status: str, watcher: RunWatcher | None, message: str = "") -> TriggerEvent:
        return TriggerEvent({
            "status": status,
            "run_id": self.run_id,
            "handle": self.handle,
            "log_offset": watcher.log_offset if watcher is not None else self.log_offset,
            "message": message,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watcher: RunWatcher | None = None
        try:
            run = await asyncio.to_thread(self._script_run)
            watcher = await asyncio.to_thread(run.watcher, self._output, self.log_offset)
            pause = min(0.2, self.poll_interval)
            while True:
                status = await asyncio.to_thread(watcher.step)
                self.log_offset = watcher.log_offset
                if status.state != "running":
                    yield self._event("ended", watcher)
                    return
                await asyncio.sleep(pause)
                pause = min(self.poll_interval, pause * 2)
        except Exception as exc:
            self.log.exception("Watching training run %s failed", self.run_id)
            yield self._event("error", watcher, f"{type(exc).__name__}: {exc}")

    async def on_kill(self) -> None:
        """The user marked the deferred task failed/success or cleared it: stop the job."""
        self.log.info("Task killed while deferred: canceling training run %s", self.run_id)
        run = await asyncio.to_thread(self._script_run)
        await asyncio.to_thread(run.cancel)
