"""``TrainingRunTrigger``: watches a detached training run from the triggerer.

It streams the run's output into the task log and relays its metrics to MLflow as they come
(the same :class:`RunWatcher` step the worker uses, run in a thread so the event loop never
blocks), and fires once the job has ended; ``execute_complete`` on a worker then finalizes the
run. When a user marks the deferred task failed or success (or clears it), Airflow calls
``on_kill``: the job's whole process tree is stopped and the run ends Canceled.

When the job ends soon after the trigger started, a trigger run by Airflow's triggerer holds its
event until :data:`MINIMUM_SECONDS_BEFORE_EVENT` have passed since it started, because of a race in
Airflow's scheduler (apache/airflow #66374, #67287, #71580, #72716). The worker that deferred
exits, and its executor reports that exit as a *success* event for the same try. When the
scheduler takes in that event only after the trigger's event has moved the task instance on
(queued, or running again to resume), Airflow 3.3 takes it for a task that died under it and fails
it ("finished with state success, but the task instance's state attribute is queued"). Airflow
3.3.2 forgives such an event only while the task instance is still scheduled (or queued and still
held by the same executor). Nothing a trigger can read says the event was taken in: the task
instance is DEFERRED from the moment the worker defers to the moment this trigger fires, whether
the scheduler has seen the worker's exit or not (taking the event in writes nothing for a deferred
task instance), so the trigger can only wait a time. A task whose run lasts longer than its
``defer_after_seconds`` plus this wait never waits: the wait is over before the run ends.

Under ``dag.test()`` (``airflow dags test``) there is no race to wait for: the task ran in the
same process, which has returned before the trigger starts, and no executor reports anything.
Such a trigger is not run by a triggerer (``trigger_id`` is unset: the triggerer sets it) and
fires as soon as the job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider.core.errors import TrackingUnavailableError
from airflow_provider.redaction import Redactor, register_with_airflow

if TYPE_CHECKING:
    from airflow_provider.core.script_run import ScriptRun
    from airflow_provider.core.watcher import RunWatcher

__all__ = ["TrainingRunTrigger"]

OUTPUT_PREFIX = "[run] "
MINIMUM_SECONDS_BEFORE_EVENT = 10.0
"""Seconds a trigger run by a triggerer waits, from its start, before firing (see above)."""


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
            failing_since = 0.0
            while True:
                try:
                    status = await asyncio.to_thread(watcher.step)
                except TrackingUnavailableError as exc:  # the tracking server restarting: the job goes on
                    failing_since = failing_since or time.monotonic()
                    if time.monotonic() - failing_since >= watcher.max_failure_seconds:
                        raise
                    self.log.warning("Watching training run %s: %s; trying again", self.reference.get("run_id"),
                                     self._redact(f"{type(exc).__name__}: {exc}"))
                    await asyncio.sleep(min(15.0, max(pause, 1.0) * 2))
                    pause = min(self.poll_interval, pause * 2)
                    continue
                failing_since = 0.0
                self.log_offset = watcher.line_offset  # a line cut in two is shown whole, by the worker
                if not status.active:
                    await asyncio.sleep(self._seconds_to_hold_event(time.monotonic() - started))
                    yield self._event("ended")
                    return
                await asyncio.sleep(pause)
                pause = min(self.poll_interval, pause * 2)
        except Exception as exc:
            message = self._redact(f"{type(exc).__name__}: {exc}")
            self.log.error("Watching training run %s failed: %s", self.reference.get("run_id"), message,
                           exc_info=True)  # the traceback is masked by Airflow (the values are registered)
            yield self._event("error", message)

    def _seconds_to_hold_event(self, seconds_since_start: float) -> float:
        """How long to wait before firing: what is left of :data:`MINIMUM_SECONDS_BEFORE_EVENT`
        when a triggerer runs this trigger (the scheduler race, see the module's docstring), else 0.

        :param seconds_since_start: how long this trigger has been running.
        """
        if self.trigger_id is None:  # not a triggerer's: dag.test() runs it in line, with no executor
            return 0.0
        hold = max(0.0, MINIMUM_SECONDS_BEFORE_EVENT - seconds_since_start)
        if hold:
            self.log.info("The run has ended; the event waits %.1f s more (an Airflow scheduler race)", hold)
        return hold

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
        finalize_in_background(script_run, {**self._credentials(), **_output_credentials(script_run)})


def _output_credentials(script_run: Any) -> dict[str, str]:
    """What the detached finalizer needs to copy the run's outputs: the connections they name,
    resolved here (the triggerer reads Airflow connections; the finalizer does not)."""
    from airflow_provider.core.data.credentials import resolved_for_environment
    from airflow_provider.core.data.locations import parse_location
    from airflow_provider.hooks.data_connections import register_data_connections

    try:
        outputs = script_run.outputs or ()  # as submitted (the run's reference), never the run's tags
        register_data_connections()
        return resolved_for_environment({output.connection: parse_location(output.uri, "outputs").scheme
                                         for output in outputs if output.connection})
    except Exception:  # the run's state and logs are finalized all the same; only the copy may lack them
        logging.getLogger(__name__).warning("Reading the output connections of run %s failed", script_run.id,
                                            exc_info=True)
        return {}
