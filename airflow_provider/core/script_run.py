"""A submitted run's handle (Azure ML v1's ``ScriptRun``): status, waiting, canceling.

The job is driven by a :class:`~airflow_provider.core.watcher.RunWatcher`; this handle starts one
while someone waits (or asks for the status while nobody else is watching), under the run's lock,
so one run is never finalized twice. What a run recorded is read through :class:`RunHistory`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider.core.data.outputs import DeclaredOutput
from airflow_provider.core.errors import RunFailedError
from airflow_provider.core.paths import state_dir
from airflow_provider.core.run_history import RunHistory
from airflow_provider.core.targets.base import ComputeTarget, JobHandle, JobStatus
from airflow_provider.core.tracking import RunState, Tags
from airflow_provider.core.watcher import MonitorFactory, OutputSink, RunWatcher
from airflow_provider.runtime import job_runner

if TYPE_CHECKING:
    from mlflow.entities import Run

    from airflow_provider.core.submit import Experiment

__all__ = ["ScriptRun"]


class ScriptRun(RunHistory):
    """A submitted run (Azure ML v1's ``ScriptRun``): status, details, metrics, files, control.

    :param experiment: the run's experiment.
    :param run_id: the MLflow run id.
    :param target: the target its job runs on (None when the run was already over).
    :param handle: its job (None when the run was already over).
    :param monitor_factory: makes the monitor every watcher of this run consults (a sweep's trial
        gets its early termination policy from the caller that knows it is one); None for none.
    :param outputs: the outputs the run was submitted with, which its watchers copy to their URIs;
        None when this process does not know them (a run rebuilt from its id alone): its watchers
        then keep the outputs' files in the run's artifacts, never copying them where the run's
        tags say (the script can rewrite those).
    """

    def __init__(self, experiment: Experiment, run_id: str, target: ComputeTarget | None,
                 handle: JobHandle | None, monitor_factory: MonitorFactory | None = None,
                 outputs: Sequence[DeclaredOutput] | None = None) -> None:
        super().__init__(experiment, run_id)
        self.target = target
        self.handle = handle
        self.monitor_factory = monitor_factory
        self.outputs: tuple[DeclaredOutput, ...] | None = None if outputs is None else tuple(outputs)
        self.log_upload_interval = 15.0
        """Seconds between uploads of the driver log and ``./logs`` while the run goes on."""

    def __repr__(self) -> str:
        return f"ScriptRun(id={self.id!r}, experiment={self.experiment.name!r})"

    # ------------------------------------------------------------------ status
    def get_status(self) -> str:
        """The detailed state (``Running``, ``Completed``, ...); advances the run one step when
        no other watcher is driving it."""
        state = self._state()
        if not state.is_terminal and self.handle is not None:
            lock = self._lock()
            try:
                lock.acquire(timeout=0)
            except TimeoutError:
                return state.value
            try:
                run = self.tracker.get_run(self.id)
                if not _state_of(run).is_terminal:
                    watcher = self.watcher(None, run=run)
                    status = watcher.step()
                    if not status.active:
                        watcher.finalize(status)
            finally:
                lock.release()
            state = self._state()
        return state.value

    def wait_for_completion(self, show_output: bool = False, raise_on_error: bool = True,
                            output: OutputSink | None = None, poll_interval: float = 1.0,
                            log_offset: int = 0) -> dict[str, Any]:
        """Watch the run to its end, finalize it, and return its details.

        :param show_output: print the run's output here as it comes.
        :param raise_on_error: raise :class:`RunFailedError` when it ends Failed or Canceled.
        :param output: a callable receiving each output line (instead of printing).
        :param poll_interval: the longest pause between polls of the target.
        :param log_offset: skip this many bytes of output (already shown by an earlier watcher).

        A handle without its job (a run found by its id, on a target this process does not reach)
        waits until the run's own watcher (its Airflow task, or a background watcher) has ended it.
        """
        sink = output or (print if show_output else None)
        watcher = None
        if self.handle is not None:
            with self._lock():
                run = self.tracker.get_run(self.id)
                if not _state_of(run).is_terminal:
                    watcher = self.watcher(sink, log_offset, run=run)
                    watcher.finalize(watcher.watch(poll_interval), cleanup_in_background=True)
        else:  # a run found by its id whose job this process cannot reach: its own watcher ends it
            while not self._state().is_terminal:
                time.sleep(max(poll_interval, 2.0))
        try:
            details = self.get_details()
        finally:
            if watcher is not None:
                watcher.wait_for_cleanup()
        if raise_on_error and details["status"] != RunState.COMPLETED.value:
            error = details.get("error") or {}
            raise RunFailedError.for_status(self.id, details["status"], error.get("message", "unknown error"),
                                            error.get("logTail", ""))
        return details

    def watch_for(self, seconds: float, output: OutputSink | None = None, poll_interval: float = 1.0,
                  log_offset: int = 0) -> int | None:
        """Watch the run for up to ``seconds``, like :meth:`wait_for_completion`, then hand it over.

        A run that ends meanwhile is finalized here. One still going is left to another watcher (a
        trigger) that continues from the returned offset: what was shown is not shown again, and a
        line the script has not finished printing is shown whole, by the next watcher.

        :param seconds: the longest watch; 0 or less hands over at once.
        :param output: a callable receiving each output line.
        :param poll_interval: the longest pause between polls of the target.
        :param log_offset: skip this many bytes of output (already shown by an earlier watcher).
        :return: None when the run is over, else the offset the next watcher starts from.
        """
        if self.handle is None:
            return None
        if seconds <= 0:
            return log_offset
        started = time.monotonic()
        lock = self._lock()
        try:
            lock.acquire(timeout=seconds)
        except TimeoutError:
            return log_offset  # another watcher drives the run (and shows its output)
        try:
            run = self.tracker.get_run(self.id)
            if _state_of(run).is_terminal:
                return None
            watcher = self.watcher(output, log_offset, run=run)
            status = watcher.watch(poll_interval, timeout=max(0.0, seconds - (time.monotonic() - started)))
            if status.active:
                return watcher.line_offset
            watcher.finalize(status)
            return None
        finally:
            lock.release()

    def finalize_once(self, watcher: RunWatcher, status: JobStatus) -> None:
        """Finalize with ``watcher`` under the run's lock, unless someone else (a detached finalizer
        after a task kill) already has.

        :param watcher: this run's watcher.
        :param status: how the job ended.
        """
        with self._lock():
            if not self._state().is_terminal:
                watcher.finalize(status)

    def cancel(self, wait: bool = True) -> None:
        """Stop the run's whole process tree (SIGTERM, grace, SIGKILL); it ends Canceled.

        :param wait: wait for the job to end and finalize the run here, unless another watcher
            (maybe this process's own ``wait_for_completion``) is driving it and will do so.
            False only asks the job's supervisor to stop it.
        """
        if self.handle is None or self.target is None:
            return
        self.target.cancel(self.handle, wait=wait)  # first, and without MLflow: stopping must not wait on it
        if not wait:
            return
        lock = self._lock()
        try:
            lock.acquire(timeout=0)
        except TimeoutError:
            return  # the watcher holding the lock sees the job end and finalizes it
        try:
            run = self.tracker.get_run(self.id)
            if not _state_of(run).is_terminal:
                watcher = self.watcher(None, run=run)
                watcher.finalize(self._ending_after_cancel())
        finally:
            lock.release()

    # ------------------------------------------------------------------ internals
    def _ending_after_cancel(self, seconds: float = 30.0) -> JobStatus:
        """The job's ending once the target shows it; a target that still shows the job active after
        ``seconds`` (its state lags the cancel) gives a Canceled ending that says so, never a
        failure read from a job that merely looked alive."""
        assert self.target is not None and self.handle is not None
        deadline = time.monotonic() + seconds
        status = self.target.poll(self.handle)
        while status.active and time.monotonic() < deadline:
            time.sleep(0.5)
            status = self.target.poll(self.handle)
        if status.active:
            return JobStatus("ended", None, None, job_runner.REASON_CANCELED,
                             f"the run was canceled; {self.target.kind} still showed the job {status.state} "
                             f"{seconds:g} s later")
        return status

    def _state(self) -> RunState:
        return _state_of(self.tracker.get_run(self.id))

    def watcher(self, output: OutputSink | None, log_offset: int = 0, live_tracking: bool = True,
                run: Run | None = None) -> RunWatcher:
        """A watcher for this run (for callers that drive it themselves, like a trigger).

        :param output: where output lines go.
        :param log_offset: where in the driver log output starts.
        :param live_tracking: relay metrics and upload logs while the run goes on.
        :param run: the run as just read under the run's lock (None: read it now).
        """
        assert self.target is not None and self.handle is not None
        if run is None:
            run = self.tracker.get_run(self.id)
        monitor = None
        if self.monitor_factory is not None:
            monitor = self.monitor_factory(self.tracker, self.id, run.info.experiment_id, run.data.tags)
        return RunWatcher(self.tracker, self.target, self.handle, self.id, output,
                          upload_interval=self.log_upload_interval, log_offset=log_offset,
                          live_tracking=live_tracking, monitor=monitor,
                          termination_reason=run.data.tags.get(Tags.SWEEP_TERMINATED), run_tags=run.data.tags,
                          declared_outputs=self.outputs)

    def _lock(self) -> Any:
        from filelock import FileLock

        folder = state_dir() / "locks"
        folder.mkdir(exist_ok=True)
        return FileLock(str(folder / f"{self.id}.lock"))




def _state_of(run: Run) -> RunState:
    return RunState(run.data.tags.get(Tags.STATE, RunState.QUEUED.value))
