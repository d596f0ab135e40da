"""Watches one submitted run: streams its log, relays its events, finalizes it on any ending.

A watcher holds nothing that is not also on the target or in MLflow, so any process can start
one for a run (``wait_for_completion``, a retried Airflow task, a trigger) and carry on where the
last one stopped. Finalizing happens on success, failure, timeout, cancel and loss alike: the
driver log, ``./outputs`` and ``./logs`` reach MLflow, then the MLflow status is set and the
job's folder on the target is removed.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from airflow_provider.core.azureml_compat import azureml_module_hint
from airflow_provider.core.background import BackgroundCall
from airflow_provider.core.collect import is_plain_file, uploadable_files
from airflow_provider.core.data.bindings import is_binding_name, recordable_uri
from airflow_provider.core.data.outputs import OUTPUTS_DIR, DeclaredOutput, upload_output
from airflow_provider.core.errors import ConfigurationError, TargetError, TrackingError, TrackingUnavailableError
from airflow_provider.core.live_logs import LiveLogUploader
from airflow_provider.core.relay import EventRelay
from airflow_provider.core.run_definition import DEFINITION_TAG, read_run_definition
from airflow_provider.core.targets.base import ComputeTarget, JobHandle, JobStatus
from airflow_provider.core.tracking import RunState, Tags, Tracker, is_refusal, now_iso
from airflow_provider.runtime import job_runner

__all__ = ["MonitorFactory", "OutputSink", "RunMonitor", "RunWatcher", "final_state"]

log = logging.getLogger(__name__)

OutputSink = Callable[[str], None]
"""Receives the run's output one line at a time (without the newline)."""


class RunMonitor(Protocol):
    """Looks at a run's relayed metrics and may ask to stop it (a sweep's early termination)."""

    def check(self) -> str | None:
        """The reason to stop the run now, or None."""

    @property
    def metric(self) -> str:
        """The metric it watches: it is consulted when values of it are relayed."""


MonitorFactory = Callable[[Tracker, str, str, dict[str, str]], RunMonitor | None]
"""Makes a run's monitor from its tracker, run id, experiment id and tags (None: not monitored)."""

DRIVER_LOG_ARTIFACT = "system_logs/driver.log"
_LOG_TAIL_BYTES = 4096
_LOG_TAIL_LINES = 40


def final_state(status: JobStatus) -> tuple[RunState, str]:
    """The terminal state and error message for how a job ended.

    :param status: the job's final status.
    """
    if status.succeeded:
        return RunState.COMPLETED, ""
    if status.reason == job_runner.REASON_CANCELED:
        return RunState.CANCELED, status.message or "the run was canceled"
    if status.state == "lost":
        return RunState.FAILED, f"the job was lost: {status.message}"
    if status.state == "not_found":
        return RunState.FAILED, "the job's folder is gone from the target"
    return RunState.FAILED, status.message or f"the command exited with code {status.exit_code}"


class RunWatcher:
    """Drives one run from Running to its terminal state.

    :param tracker: where the run lives.
    :param target: where the job runs.
    :param handle: the job.
    :param run_id: the MLflow run id.
    :param output: where the run's output lines go live (None: nowhere).
    :param upload_interval: seconds between uploads of the driver log and ``./logs`` while running.
    :param log_offset: where in the driver log output starts (what an earlier watcher already showed).
    :param live_tracking: relay events and upload logs while the run goes on; False only polls and
        streams output (MLflow is then written by whoever finalizes).
    :param monitor: consulted when values of its metric are relayed (and every ``monitor_interval``
        seconds); a reason it returns stops the job, and the run ends Canceled with that reason.
    :param termination_reason: the reason an earlier watcher stopped the job for, if any.
    :param run_tags: the run's tags as read under its lock (None: the relay reads them when it starts).
    """

    max_step_failures: int = 6
    """Consecutive failed steps before watching may give up (also :attr:`max_failure_seconds`)."""
    max_failure_seconds: float = 300.0
    """How long steps failing because the tracking server does not answer (restarting: the job goes
    on meanwhile) are retried before watching gives up; a restart under load takes a minute."""
    monitor_interval: float = 2.0
    """Seconds between consultations of the monitor when no event was relayed."""
    finalizing_shown_after: float = 1.0
    """Seconds of collecting results after which the run shows the state Finalizing (a quicker
    finalize records only when it began, with the terminal state)."""

    def __init__(self, tracker: Tracker, target: ComputeTarget, handle: JobHandle, run_id: str,
                 output: OutputSink | None = None, upload_interval: float = 15.0, log_offset: int = 0,
                 live_tracking: bool = True, monitor: RunMonitor | None = None,
                 termination_reason: str | None = None, run_tags: Mapping[str, str] | None = None,
                 declared_outputs: Sequence[DeclaredOutput] | None = None) -> None:
        self.tracker = tracker
        self._run_tags = run_tags
        self.declared_outputs = None if declared_outputs is None else tuple(declared_outputs)
        """The outputs the run was submitted with (:attr:`ScriptRun.outputs`); None: unknown here."""
        self._cleanup: BackgroundCall | None = None
        self.monitor = monitor
        self.termination_reason = termination_reason
        self._stop_sent = termination_reason is None  # a reason read back from the run: send the stop again
        self._last_monitor_check = time.monotonic()
        self.target = target
        self.handle = handle
        self.run_id = run_id
        self.output = output
        self.upload_interval = upload_interval
        self.live_tracking = live_tracking
        self._relay: EventRelay | None = None
        self.log_offset = log_offset
        self.line_offset = log_offset
        """Where the output not yet shown starts: past the last complete line sent to the sink (a
        watcher that takes over from this one starts here, so a line cut in two is shown whole)."""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial_line = ""
        self._last_upload = time.monotonic()
        self._live_logs = LiveLogUploader(tracker, run_id)
        self._failing_rank = ""
        self._queue_reason: str | None = None

    # ------------------------------------------------------------------ one step
    def step(self) -> JobStatus:
        """Poll once: relay new events, stream new output, upload logs when due.

        :return: the job's status after this step.
        """
        status = self.target.poll(self.handle)
        self._note_queue(status)
        if self.live_tracking:
            self.relay.pump()
        if (self.monitor is not None or self.termination_reason is not None) and status.state == "running" and (
                (self.monitor is not None and self.live_tracking and self.monitor.metric in self.relay.last_metric_keys)
                or time.monotonic() - self._last_monitor_check >= self.monitor_interval):
            # Also on a timer: a script may log with mlflow directly, which relays no event.
            self._consult_monitor()
        if self.output is not None:  # nobody to show it to: finalize reads the log once, at the end
            self.stream_output()
        if (self.live_tracking and status.state == "running"
                and time.monotonic() - self._last_upload >= self.upload_interval):
            self._upload_logs()
        return status

    def _note_queue(self, status: JobStatus) -> None:
        """A job waiting in the target's scheduler shows the run Queued, with the scheduler's reason
        (in the run's tags and the output), and Running again once it starts."""
        reason = status.message or "waiting for resources" if status.state == "queued" else None
        if reason == self._queue_reason:
            return
        if reason is not None:
            if self.live_tracking:
                self.tracker.set_state(self.run_id, RunState.QUEUED, {Tags.QUEUE_REASON: reason})
            if self.output is not None:
                self.output(f"[queued] {reason}")
        elif self._queue_reason is not None and status.state == "running":
            if self.live_tracking:
                self.tracker.set_state(self.run_id, RunState.RUNNING, {Tags.QUEUE_REASON: ""})
            if self.output is not None:
                self.output("[running]")
        self._queue_reason = reason

    def terminate(self, reason: str) -> None:
        """Stop the job for ``reason`` (recorded at once); the run ends Canceled with it as its error.

        A stop that fails (a dropped connection) is asked for again at every step until it is sent.

        :param reason: why, e.g. the early termination policy's verdict.
        """
        log.info("Run %s: %s; stopping it", self.run_id, reason)
        if self.termination_reason is None:
            self.tracker.set_tags(self.run_id, {Tags.SWEEP_TERMINATED: reason})
        self.termination_reason = reason
        self._stop_sent = False
        self.target.cancel(self.handle, wait=False)
        self._stop_sent = True

    def _consult_monitor(self) -> None:
        self._last_monitor_check = time.monotonic()
        if self.termination_reason is not None:
            if not self._stop_sent:
                self.terminate(self.termination_reason)
            return
        reason = self.monitor.check() if self.monitor is not None else None
        if reason is not None:
            self.terminate(reason)

    @property
    def relay(self) -> EventRelay:
        """The event relay (created on first use: it reads the run's offset from MLflow)."""
        if self._relay is None:
            self._relay = EventRelay(self.tracker, self.target, self.handle, self.run_id, self._run_tags)
        return self._relay

    def stream_output(self, final: bool = False) -> int:
        """Send complete new lines of the driver log to the output sink.

        :param final: also flush a last line that has no newline.
        :return: how many bytes were read.
        """
        total = 0
        while True:
            chunk = self.target.read(self.handle, "driver", self.log_offset)
            if not chunk:
                break
            last_newline = chunk.rfind(b"\n")
            if last_newline >= 0:
                self.line_offset = self.log_offset + last_newline + 1
            self.log_offset += len(chunk)
            total += len(chunk)
            text = self._partial_line + self._decoder.decode(chunk)
            lines = text.split("\n")
            self._partial_line = lines.pop()
            if self.output is not None:
                for line in lines:
                    self.output(line)
        if final:
            text = self._partial_line + self._decoder.decode(b"", final=True)
            self._partial_line = ""
            if text and self.output is not None:
                self.output(text)
            self.line_offset = self.log_offset
        return total

    def watch(self, poll_interval: float = 1.0, timeout: float | None = None) -> JobStatus:
        """Step until the job ends, polling quickly at first, then every ``poll_interval`` seconds.

        :param poll_interval: the longest pause between two polls.
        :param timeout: stop watching after this many seconds, the job still running (None: never).
        :return: the final status, or the last one (``running``) when ``timeout`` came first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # A target whose wait ends with the job is asked less often: output still streams every
        # fraction of a second, and the ending is seen at once.
        pause = min(poll_interval, 0.25) if self.target.wakes_on_end else 0.005
        failures: list[str] = []
        failing_since = 0.0
        while True:
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            self.target.wait(self.handle, pause)
            try:
                status = self.step()
            except Exception as exc:  # a daemon restarting, a dropped connection, a busy store
                failures.append(f"{type(exc).__name__}: {exc}")
                failing_since = failing_since or time.monotonic()
                outage = isinstance(exc, TrackingUnavailableError)  # the job goes on: be patient
                if len(failures) > self.max_step_failures and (
                        not outage or time.monotonic() - failing_since >= self.max_failure_seconds):
                    raise TargetError(
                        f"watching run {self.run_id} failed {len(failures)} times in a row (last: {failures[-1]}); "
                        "the job may still be running: wait for the run again, or retry the task, to reattach"
                    ) from exc
                log.warning("Watching run %s: %s; trying again (%d of %d)", self.run_id, failures[-1],
                            len(failures), self.max_step_failures)
                time.sleep(min(15.0, 0.5 * 2 ** len(failures)))
                continue
            failures.clear()
            failing_since = 0.0
            if not status.active or (deadline is not None and time.monotonic() >= deadline):
                return status
            pause = min(poll_interval, pause * 1.5)

    # ------------------------------------------------------------------ the end
    def finalize(self, status: JobStatus, cleanup_in_background: bool = False) -> RunState:
        """Collect everything, record the terminal state, clean up the target.

        Safe to repeat: if collecting fails, the run stays Finalizing and the job folder stays on
        the target, so the next watcher (a new ``wait_for_completion``, a retried task) collects
        again. The detailed state is written last, after MLflow's status, so a watcher that sees a
        terminal state knows everything before it happened.

        :param status: how the job ended.
        :param cleanup_in_background: clean up the target in a thread of its own once the state is
            recorded, so the caller can read the run meanwhile; then call :meth:`wait_for_cleanup`.
        :return: the terminal state recorded.
        :raises TrackingError: when the results could not be collected (nothing was lost).
        """
        state, error = final_state(status)
        began = now_iso()
        showing = _FinalizingState(self.tracker, self.run_id, self.finalizing_shown_after)
        problems: list[str] = []
        try:
            problems = self._collect()
            if not problems:  # after ./outputs is uploaded: models to register, run.fail(), open child runs
                try:
                    state, error = self.relay.finish(state, error)
                except Exception as exc:
                    log.exception("Finalizing run %s: finishing its child runs and models failed", self.run_id)
                    problems.append(f"{type(exc).__name__}: {exc}")
                self._log_argument_params()
        finally:
            showing.stop()
        if problems:
            if not showing.shown:  # the run shows it is stuck collecting, not still running
                with contextlib.suppress(Exception):
                    self.tracker.set_state(self.run_id, RunState.FINALIZING)
            raise TrackingError(
                f"collecting the results of run {self.run_id} failed ({'; '.join(problems)}); its job folder is "
                "kept on the target: wait for the run again, or resubmit with the same run key, to collect them"
            )
        if self.termination_reason and state is RunState.CANCELED:
            error = self.termination_reason
        elif self.termination_reason:  # it ended by itself before the stop reached it
            with contextlib.suppress(Exception):  # already removed by an earlier finalize
                self.tracker.client.delete_tag(self.run_id, Tags.SWEEP_TERMINATED)
        if state is RunState.FAILED:
            with contextlib.suppress(Exception):  # a hint is a courtesy, never a reason to fail finalizing
                error = azureml_module_hint(error, self.log_tail())
        if self._failing_rank and state is RunState.FAILED:
            error = f"{error}; {self._failing_rank}"
        tags: dict[str, str] = {}
        if status.exit_code is not None:
            tags[Tags.EXIT_CODE] = str(status.exit_code)
        if error:
            # The message only: the log tail is the script's raw output, which may print secrets,
            # and tags are no place for those. get_details() reads the tail from the driver log.
            tags[Tags.ERROR] = error
        self.tracker.terminate(self.run_id, state)
        # one call: the ending's tags come with the state (and when finalizing began)
        self.tracker.set_state(self.run_id, state, tags, passed={RunState.FINALIZING: began})
        if cleanup_in_background:
            self._cleanup = BackgroundCall(f"cleanup-{self.run_id}", lambda: self.target.cleanup(self.handle))
        else:
            self.target.cleanup(self.handle)
        return state

    def _log_argument_params(self) -> None:
        """Log the run's arguments as params (:mod:`~airflow_provider.core.argument_params`), those
        the run does not have yet, on every ending: at the end, not at submit, as MLflow never
        changes a param and a script logging its own (``mlflow.log_params(vars(args))``, autolog)
        would fail on a value spelled differently (``1e-3`` and ``0.001``). The script's params and a
        trial's hyperparameters win. A failure is noted in the run's warnings, never its outcome."""
        # Imported here: they import the hyperdrive package, which imports this module.
        from airflow_provider.core.argument_params import argument_params
        from airflow_provider.core.hyperdrive.sweep import ROLE_PARENT

        try:
            run = self.tracker.get_run(self.run_id)
            tags = run.data.tags
            if tags.get(Tags.SWEEP_ROLE) == ROLE_PARENT:  # no job of its own: its arguments are its trials'
                return
            arguments = self._recorded_arguments(tags)
            if not arguments:
                return
            missing = {k: v for k, v in argument_params(arguments).items() if k not in run.data.params}
            if missing:
                try:
                    self.tracker.log_params(self.run_id, missing)
                except Exception as exc:
                    if not is_refusal(exc):
                        raise
                    self._log_params_one_by_one(missing)
        except Exception as exc:
            log.debug("Run %s: logging its arguments as params failed", self.run_id, exc_info=True)
            with contextlib.suppress(Exception):
                self.relay.warnings.add(f"the arguments were not logged as params: {type(exc).__name__}: {exc}"[:500])
                self.relay.warnings.flush()

    def _log_params_one_by_one(self, params: Mapping[str, str]) -> None:
        """After MLflow refused a batch: each param on its own, those it refuses noted in the warnings."""
        refused = []
        for name, value in params.items():
            try:
                self.tracker.log_params(self.run_id, {name: value})
            except Exception as exc:
                if not is_refusal(exc):
                    raise
                refused.append(name)
        if refused:
            self.relay.warnings.add(f"MLflow refused the argument params {', '.join(refused)}"[:500])
            self.relay.warnings.flush()

    def _recorded_arguments(self, tags: Mapping[str, str]) -> list[object]:
        """The arguments of the run's definition (:mod:`~airflow_provider.core.run_definition`: the
        tag, or the artifact it names); none for a run submitted before definitions were recorded.

        :param tags: the run's tags.
        :raises ValueError: the definition is not one (the script rewrote the tag).
        """
        definition = read_run_definition(self.tracker, self.run_id, tags)
        arguments = definition.get("arguments") if definition is not None else None
        if arguments is None:
            return []
        if not isinstance(arguments, list):
            raise ValueError(f"{DEFINITION_TAG}: its arguments are not a list")
        return arguments

    def wait_for_cleanup(self) -> None:
        """Wait for a cleanup :meth:`finalize` left running in the background (if any).

        :raises TargetError: the cleanup failed (the run's results are recorded all the same).
        """
        if self._cleanup is not None:
            cleanup, self._cleanup = self._cleanup, None
            cleanup.result()

    def _collect(self) -> list[str]:
        """Relay the last events, show the last output, upload logs and outputs; the problems met."""
        problems: list[str] = []
        for action in (self.relay.pump, lambda: self.stream_output(final=True), self._upload_final):
            try:
                action()
            except Exception as exc:
                log.exception("Finalizing run %s: %s failed", self.run_id, getattr(action, "__name__", action))
                problems.append(f"{type(exc).__name__}: {exc}")
        return problems

    def log_tail(self) -> str:
        """The last lines of the driver log."""
        start = max(0, self.log_offset - _LOG_TAIL_BYTES)
        data = self.target.read(self.handle, "driver", start, _LOG_TAIL_BYTES)
        lines = data.decode("utf-8", errors="replace").splitlines()
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def _upload_logs(self) -> None:
        """Upload the driver log, and what the files of ``./logs`` gained, while the run goes on
        (:mod:`~airflow_provider.core.live_logs`)."""
        self._last_upload = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix="watch-") as scratch:
                self._upload_driver_log(Path(scratch))
                grown = self.target.read_grown(self.handle, f"{job_runner.WORK_DIR}/logs", self._live_logs.sent,
                                               Path(scratch))
                self._live_logs.upload(grown)  # what each file gained: live/logs/<file>/<part>
        except Exception:
            log.warning("Interim upload of run %s logs failed", self.run_id, exc_info=True)

    def _upload_rank_logs(self, scratch: Path) -> None:
        """A distributed run's ``rank_<N>.log`` files go to ``system_logs/``; the first rank that
        failed is remembered for the run's error."""
        ranks = self.target.fetch(self.handle, job_runner.RANKS_DIR, scratch)
        if ranks is None or not ranks.is_dir() or ranks.is_symlink():
            return
        for log_file in sorted(ranks.glob("rank_*.log")):
            if is_plain_file(log_file):
                self._upload_file(log_file, "system_logs", f"system_logs/{log_file.name}")
        endings = []
        for exit_file in ranks.glob("rank_*.exit"):
            with contextlib.suppress(ValueError, OSError):
                if is_plain_file(exit_file):
                    endings.append(json.loads(exit_file.read_text()))
        failed = sorted((e for e in endings if isinstance(e, dict) and e.get("exit_code")),
                        key=lambda e: e.get("ended_at", 0))
        if failed:
            first = failed[0]  # its log's tail is the run's log tail (get_details), never in a tag
            self._failing_rank = (f"rank {first.get('rank')} failed first (exit code {first['exit_code']}; its log: "
                                  f"system_logs/rank_{first.get('rank')}.log)")

    def _upload_driver_log(self, scratch: Path) -> None:
        driver = self.target.fetch(self.handle, job_runner.DRIVER_LOG, scratch)
        if driver is None:
            return
        if not is_plain_file(driver):
            self.relay.warnings.add(f"{job_runner.DRIVER_LOG} was replaced by a link or special file; not uploaded")
            return
        self.tracker.log_artifact(self.run_id, driver, "system_logs")

    def _upload_final(self) -> None:
        with tempfile.TemporaryDirectory(prefix="finalize-") as scratch:
            self._upload_driver_log(Path(scratch))
            self._upload_rank_logs(Path(scratch))
            for name in ("outputs", "logs"):
                folder = self.target.fetch(self.handle, f"{job_runner.WORK_DIR}/{name}", Path(scratch))
                if folder is None or not (folder.is_dir() or folder.is_symlink()):
                    continue
                files, notes = uploadable_files(folder, name)
                for note in notes:
                    self.relay.warnings.add(note)
                for path, relative in files:
                    self._upload_file(path, Path(name, relative).parent.as_posix(), f"{name}/{relative}")
            self._upload_declared_outputs(Path(scratch))
        self.relay.warnings.flush()

    def _upload_declared_outputs(self, scratch: Path) -> None:
        """Copy each declared ``upload`` output to its URI (whatever the run's ending) and record its
        digest; an output that cannot be copied as configured goes to the run's artifacts instead
        (``outputs_not_copied/<name>/``), so nothing the script wrote is lost. Where an output goes
        comes from the run's description, never from its tags (its script can rewrite those)."""
        if self.declared_outputs is None:
            self._keep_undeclared_outputs(scratch)
            return
        for output in self.declared_outputs:
            if output.mode != "upload":
                continue
            relative = f"{job_runner.WORK_DIR}/{OUTPUTS_DIR}/{output.name}"
            folder = self.target.fetch(self.handle, relative, scratch / "declared" / output.name)
            notes: list[str] = []
            try:
                uploaded = upload_output(output, folder, self.run_id, notes)
            except ConfigurationError as exc:
                self._keep_in_artifacts(folder, output.name, f"output {output.name!r} was not copied to {output.uri}: "
                                                             f"{exc}")
                continue
            for note in notes:
                self.relay.warnings.add(note)
            shown = recordable_uri(uploaded.uri)
            self.tracker.set_tags(self.run_id, {f"training.data.output.{output.name}.uri": shown,
                                                f"training.data.output.{output.name}.digest": uploaded.digest})
            manifest = {"uri": shown, "digest": uploaded.digest, "files": uploaded.files}
            self.tracker.log_text(self.run_id, json.dumps(manifest, indent=1), f"data/outputs/{output.name}.json")

    def _keep_undeclared_outputs(self, scratch: Path) -> None:
        """This process was given the run without its outputs (rebuilt from its id alone): whatever
        the job wrote for an output goes to the run's artifacts, as nothing says where else."""
        outputs = self.target.fetch(self.handle, f"{job_runner.WORK_DIR}/{OUTPUTS_DIR}", scratch / "undeclared")
        if outputs is None or outputs.is_symlink() or not outputs.is_dir():
            return
        for folder in sorted(outputs.iterdir()):
            if is_binding_name(folder.name) and folder.is_dir() and not folder.is_symlink():
                self._keep_in_artifacts(folder, folder.name, f"output {folder.name!r} was not copied to its URI: this "
                                        "process was given the run by its id alone, without the outputs it was "
                                        "submitted with (the run's tags are a record its script can rewrite, never "
                                        "where data goes)")

    def _keep_in_artifacts(self, folder: Path | None, name: str, why: str) -> None:
        """Upload an output's files to ``outputs_not_copied/<name>/`` and say why; its digest tag is
        emptied (the tag is the run's record that the output reached its URI)."""
        self.relay.warnings.add(f"{why}; its files are in the run's artifacts under outputs_not_copied/{name}/")
        self.tracker.set_tags(self.run_id, {f"training.data.output.{name}.digest": ""})
        if folder is not None and folder.is_dir():
            files, _ = uploadable_files(folder, name)
            for path, key in files:
                self._upload_file(path, Path("outputs_not_copied", name, key).parent.as_posix(), key)

    def _upload_file(self, path: Path, folder: str, label: str) -> None:
        """Upload one file (readable: :func:`uploadable_files` checked); one MLflow refuses is noted
        and skipped, so a single bad file never keeps the run from its final state."""
        try:
            self.tracker.log_artifact(self.run_id, path, folder)
        except Exception as exc:
            if not is_refusal(exc):
                raise  # the tracking store is down, busy or full: finalizing is retried as a whole
            self.relay.warnings.add(f"{label} was not uploaded: {type(exc).__name__}: {exc}"[:500])


class _FinalizingState:
    """Shows the state Finalizing once collecting a run's results has taken ``after`` seconds (from
    a timer thread); :meth:`stop` before the terminal state is written.

    :param tracker: where the run lives.
    :param run_id: the MLflow run id.
    :param after: seconds of collecting before the state is shown.
    """

    def __init__(self, tracker: Tracker, run_id: str, after: float) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.shown = False
        self._timer = threading.Timer(after, self._show)
        self._timer.daemon = True
        self._timer.start()

    def _show(self) -> None:
        try:
            self.tracker.set_state(self.run_id, RunState.FINALIZING)
            self.shown = True
        except Exception as exc:  # a courtesy: the terminal state is written by the watcher all the same
            log.warning("Run %s: showing the state Finalizing failed: %s", self.run_id, exc)

    def stop(self) -> None:
        """Cancel the timer, or wait for the state it is writing (so it never comes after the end)."""
        self._timer.cancel()
        self._timer.join()

