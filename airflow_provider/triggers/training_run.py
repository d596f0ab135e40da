"""``TrainingRunTrigger``: watches a detached training run from the triggerer.

It streams the run's output into the task log and relays its metrics to MLflow as they come
(the same :class:`RunWatcher` step the worker uses, run in a thread so the event loop never
blocks), and fires once the job has ended; ``execute_complete`` on a worker then finalizes the
run. When a user marks the deferred task failed or success (or clears it), Airflow calls
``on_kill``: the job's whole process tree is stopped and the run ends Canceled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider.redaction import Redactor, register_with_airflow

if TYPE_CHECKING:
    from airflow_provider.core.script_run import ScriptRun
    from airflow_provider.core.watcher import RunWatcher

__all__ = ["TrainingRunTrigger"]

OUTPUT_PREFIX = "[run] "
MINIMUM_SECONDS_BEFORE_EVENT = 10.0


class TrainingRunTrigger(BaseTrigger):
    """Watch one submitted run until its job ends.

    :param reference: the run (``RunReference.to_dict()``).
    :param poll_interval: the longest pause between polls, in seconds.
    :param log_offset: bytes of output already shown.
    :param secrets: values masked in what the trigger logs (the task's secret variables and tracking
        credentials). Airflow stores a trigger's arguments encrypted with its Fernet key, as it does
        connection passwords.
    """

    def __init__(self, reference: dict[str, Any], poll_interval: float = 5.0, log_offset: int = 0,
                 secrets: list[str] | None = None) -> None:
        super().__init__()
        self.reference = reference
        self.poll_interval = poll_interval
        self.log_offset = log_offset
        self.secrets = list(secrets or [])
        self._redact = Redactor(self.secrets)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider.triggers.training_run.TrainingRunTrigger",
            {"reference": self.reference, "poll_interval": self.poll_interval, "log_offset": self.log_offset,
             "secrets": self.secrets},
        )

    def _script_run(self) -> ScriptRun:
        # Imported here, in a worker thread: the triggerer imports this module on its event loop.
        from airflow_provider.run_reference import RunReference

        return RunReference.from_dict(self.reference).script_run(configure_credentials=False)

    def _credentials(self) -> dict[str, str]:
        from airflow_provider.hooks.mlflow import MLflowTrackingHook

        return MLflowTrackingHook(self.reference.get("tracking_conn_id")).get_credentials()

    def _output(self, line: str) -> None:
        self.log.info("%s%s", OUTPUT_PREFIX, self._redact(line))

    def _event(self, status: str, message: str = "") -> TriggerEvent:
        return TriggerEvent({"status": status, "reference": self.reference, "log_offset": self.log_offset,
                             "message": message})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            with contextlib.suppress(Exception):  # the triggerer's masker: tracebacks are masked too
                register_with_airflow(self.secrets)
            script_run = await asyncio.to_thread(self._script_run)
            # The triggerer is shared by many tasks and MLflow takes credentials from the process
            # environment: with a credentialed tracking server, metrics are relayed when the task
            # resumes on a worker; this trigger then only streams the output and watches the job.
            live = not await asyncio.to_thread(self._credentials)
            watcher: RunWatcher = await asyncio.to_thread(script_run.watcher, self._output, self.log_offset, live)
            pause = min(0.2, self.poll_interval)
            started = time.monotonic()
            while True:
                status = await asyncio.to_thread(watcher.step)
                self.log_offset = watcher.log_offset
                if status.state != "running":
                    # Airflow 3.3 fails a task whose trigger fires before the scheduler has taken in
                    # the executor's event for the deferral, which can come seconds late ("finished
                    # with state success, but the task instance's state attribute is queued").
                    await asyncio.sleep(max(0.0, MINIMUM_SECONDS_BEFORE_EVENT - (time.monotonic() - started)))
                    yield self._event("ended")
                    return
                await asyncio.sleep(pause)
                pause = min(self.poll_interval, pause * 2)
        except Exception as exc:
            message = self._redact(f"{type(exc).__name__}: {exc}")
            self.log.error("Watching training run %s failed: %s", self.reference.get("run_id"), message,
                           exc_info=True)  # the traceback is masked by Airflow (the values are registered)
            yield self._event("error", message)

    async def on_kill(self) -> None:
        """The user marked the deferred task failed/success or cleared it: stop the job.

        The job is asked to stop at once; a detached finalizer records the run's outputs, logs and
        Canceled state, so neither the triggerer's bound on ``on_kill`` nor a busy tracking store
        can leave the job running or the run open.
        """
        self.log.info("Task killed while deferred: canceling training run %s", self.reference.get("run_id"))
        # One thread does it all: the triggerer may cancel on_kill itself (it did, in tests), and a
        # cancelled await does not stop a function already running in a thread.
        await asyncio.to_thread(self._stop_job_and_finalize_in_background)

    def _stop_job_and_finalize_in_background(self) -> None:
        from airflow_provider.core.finalizer import finalize_in_background

        script_run = self._script_run()
        script_run.cancel(wait=False)
        finalize_in_background(script_run, self._credentials())
