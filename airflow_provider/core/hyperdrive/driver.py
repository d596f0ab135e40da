"""Drives a sweep to its end from one process: launch trials up to the concurrency limit, watch them
all from one loop (streaming output, relaying metrics, applying the policy), finalize each as it
ends, launch the next, record the best.

A driver that dies leaves nothing it cannot pick up: a new driver for the same parent run skips
finished trials, reattaches to running ones (by their run keys) and continues with the rest.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider.core.bookkeeping import job_record
from airflow_provider.core.config import ScriptRunConfig
from airflow_provider.core.errors import TargetError, TrackingUnavailableError
from airflow_provider.core.hyperdrive.early_termination import TrialMonitor
from airflow_provider.core.hyperdrive.sampling import Hyperparameters, TrialSampler
from airflow_provider.core.hyperdrive.settings import trial_run_config
from airflow_provider.core.hyperdrive.sweep import Sweep, draw_trial
from airflow_provider.core.submit import StagedRun
from airflow_provider.core.targets import resolve_target
from airflow_provider.core.tracking import RunState, Tags
from airflow_provider.core.watcher import OutputSink

if TYPE_CHECKING:
    from airflow_provider.core.script_run import ScriptRun
    from airflow_provider.core.targets.base import JobStatus
    from airflow_provider.core.watcher import RunWatcher

__all__ = ["SweepDriver", "prefixed"]

log = logging.getLogger(__name__)


@dataclass
class PendingTrial:
    """A trial staged (or reattached) and waiting for a free slot.

    :param index: the trial's index.
    :param hyperparameters: its sampled values.
    :param staged: its staged job, or the running (or finished) run it was reattached to.
    """

    index: int
    hyperparameters: Hyperparameters
    staged: StagedRun | ScriptRun


@dataclass
class ActiveTrial:
    """A trial being watched by the driver.

    :param index: the trial's index.
    :param hyperparameters: its sampled values.
    :param run: its run.
    :param watcher: the watcher that streams, relays and applies the policy.
    :param failures: its consecutive failed polls.
    :param failing_since: when the first of them failed (0: none).
    :param retry_at: no poll before this time (backing off after a failure).
    """

    index: int
    hyperparameters: Hyperparameters
    run: ScriptRun
    watcher: RunWatcher
    failures: list[str] = field(default_factory=list)
    failing_since: float = 0.0
    retry_at: float = 0.0


class SweepDriver:
    """Runs the trials of one sweep.

    :param sweep: the sweep (its parent run exists).
    :param run_config: what each trial runs before its hyperparameters are applied.
    :param output: receives every trial's output lines, prefixed ``[trial N]``.
    :param tags: extra tags for every trial.
    :param secret_variables: variables for every trial's process, never written to MLflow.
    :param poll_interval: seconds between two rounds of polling the running trials.
    """

    max_step_failures = 6
    """Consecutive failed polls of one trial before the sweep may give up (a retry resumes it)."""
    max_failure_seconds = 300.0
    """How long a trial's polls may keep failing because the tracking server does not answer (restarting)
    before the sweep gives up."""
    wind_down_seconds = 120.0
    """How long :meth:`wind_down` waits for the stopped trials to end before leaving them to end alone."""

    def __init__(self, sweep: Sweep, run_config: ScriptRunConfig, output: OutputSink | None = None,
                 tags: dict[str, str] | None = None, secret_variables: dict[str, str] | None = None,
                 poll_interval: float = 0.02) -> None:
        self.sweep = sweep
        # One target object for every trial: an SSH target keeps its connection, a local one its supervisors.
        self.run_config = dataclasses.replace(run_config, compute_target=resolve_target(run_config.compute_target))
        self.output = output
        self.tags = dict(tags or {})
        self.secret_variables = secret_variables
        self.poll_interval = poll_interval
        self.active: dict[int, ActiveTrial] = {}
        self.stopped: str | None = None
        """Why the sweep stopped launching trials early (its time limit, a cancel)."""
        settings = sweep.settings
        self._sampler: TrialSampler = settings.sampling.sampler(sweep.seed, settings.primary_metric_goal)
        self._total = settings.max_total_runs
        self._next_index = 0
        self._finished: set[int] = set()
        self._parent_name: str | None = None
        self._staged: collections.deque[PendingTrial] = collections.deque()
        self._stage_depth = 0 if settings.sampling.adaptive else min(2, settings.max_concurrent_runs)
        """Trials kept staged ahead: two slots that free at once both start at once."""
        self._existing = sweep.trials()
        self._to_reattach: list[int] = []
        self.aborted = False
        """Set by :meth:`abort`: the loop returns at once, collecting nothing more."""
        remaining = None if settings.max_duration_minutes is None else \
            settings.max_duration_minutes * 60 - sweep.elapsed_seconds()
        self._deadline = None if remaining is None else time.monotonic() + remaining
        self._parent_checked_at = time.monotonic()
        self.parent_check_interval = 5.0
        """Seconds between reads of the parent's state: a sweep canceled from another process (its
        parent run ended, e.g. by ``training-runs cancel``) stops its trials."""
        self._take_stock_of_earlier_trials()

    # ------------------------------------------------------------------ the loop
    def launch_ready(self, stage_ahead: bool = True) -> None:
        """Launch trials until the concurrency limit, the trial budget or the time limit is reached.

        :param stage_ahead: then stage the next trial, so the next free slot is filled at once
            (not for adaptive sampling, which must learn from the trials running now first).
        """
        self._check_deadline()
        while self._to_reattach:  # running when an earlier driver died: watched again before anything new
            index = self._to_reattach.pop(0)
            self._start(self._stage(index, json.loads(self._existing[index].data.tags[Tags.SWEEP_HYPERPARAMETERS])))
        while self.stopped is None and len(self.active) < self.sweep.settings.max_concurrent_runs:
            if not self._staged:
                staged = self._stage_next()
                if staged is None:
                    break
                self._staged.append(staged)
            self._start(self._staged.popleft())
        if stage_ahead:
            self._stage_ahead()

    def run(self) -> RunState:
        """Run the sweep to its end; return the parent's terminal state.

        When watching fails (a target that stays unreachable), the running trials go on by
        themselves and the parent stays Running: running the sweep again (a task retry) resumes it.
        """
        try:
            while not self.aborted:
                self.launch_ready()
                if not self.active or self.aborted:
                    break
                self.step()
                if self.active:
                    time.sleep(self.poll_interval)
        except BaseException:
            self._discard_staged("the sweep's driver stopped", start_reattached=False)
            raise
        if self.aborted:
            return self.sweep.state()
        if self._staged:  # the sweep stopped before they could start
            self._discard_staged(self.stopped or "the sweep ended")
        return self.sweep.finish(stopped=self.stopped)

    def step(self) -> None:
        """Poll every running trial once; fill freed slots, then finalize the trials that ended."""
        ended: list[tuple[ActiveTrial, JobStatus]] = []
        for index, trial in list(self.active.items()):
            if time.monotonic() < trial.retry_at:
                continue
            try:
                status = trial.watcher.step()
            except Exception as exc:  # a restarting daemon, a dropped connection: try again next round
                trial.failures.append(f"{type(exc).__name__}: {exc}")
                trial.failing_since = trial.failing_since or time.monotonic()
                outage = isinstance(exc, TrackingUnavailableError)  # the trial goes on: be patient
                if len(trial.failures) > self.max_step_failures and (
                        not outage or time.monotonic() - trial.failing_since >= self.max_failure_seconds):
                    raise TargetError(
                        f"watching trial {index} (run {trial.run.id}) failed {len(trial.failures)} times in a row "
                        f"(last: {trial.failures[-1]}); retry the sweep to reattach to its trials") from exc
                log.warning("Watching trial %d: %s; trying again", index, trial.failures[-1])
                trial.retry_at = time.monotonic() + min(15.0, 0.5 * 2 ** len(trial.failures))
                continue
            trial.failures.clear()
            trial.failing_since = 0.0
            if not status.active:
                del self.active[index]
                ended.append((trial, status))
        if not ended:
            self._check_deadline()
            return
        adaptive = self.sweep.settings.sampling.adaptive
        if not adaptive:
            self.launch_ready(stage_ahead=False)  # the staged trial starts before the ended ones are collected
        for trial, status in ended:
            if self.aborted:
                return
            trial.run.finalize_once(trial.watcher, status)  # a detached finalizer may be at it too
            self._record(trial.index, trial.hyperparameters, trial.run.id)
        if adaptive:
            self.launch_ready()  # after learning from the trials that just ended
        else:
            self._stage_ahead()

    def abort(self, reason: str) -> None:
        """Stop at once from another thread or a signal handler (a task kill): ask every running
        trial's job to stop, discard the staged ones, and make :meth:`run` return without collecting
        anything more (detached finalizers do that).

        :param reason: why.
        """
        self.aborted = True
        self.stopped = reason
        for trial in list(self.active.values()):
            trial.run.cancel(wait=False)
        self._discard_staged(reason, start_reattached=False)

    def stop(self, reason: str) -> None:
        """Launch no more trials and stop the running ones (they end Canceled with ``reason``).

        :param reason: why the sweep stops.
        """
        self.stopped = reason
        if self._staged:
            self._discard_staged(reason)
        for trial in self.active.values():
            if trial.watcher.termination_reason is None:
                trial.watcher.terminate(reason)

    def wind_down(self, error: BaseException) -> None:
        """After ``error`` ended the sweep early: discard the staged trials and stop the running
        ones; wait (up to :attr:`wind_down_seconds`) for them to end Canceled, unless ``error`` is an
        interrupt such as a task kill (then only ask them to stop). Never raises.

        :param error: what ended the sweep.
        """
        reason = f"the sweep ended early: {type(error).__name__}: {error}"[:500]
        try:
            if not isinstance(error, Exception):
                self.abort(reason)
                return
            self.stop(reason)
            deadline = time.monotonic() + self.wind_down_seconds
            while self.active and time.monotonic() < deadline:
                self.step()
                time.sleep(self.poll_interval)
        except Exception as exc:  # the trials end by themselves; the sweep's end is recorded anyway
            log.warning("Stopping the trials of sweep %s: %s", self.sweep.parent_run_id, exc)

    # ------------------------------------------------------------------ internals
    def _check_deadline(self) -> None:
        if self.stopped is None and self._deadline is not None and time.monotonic() >= self._deadline:
            self.stop(f"the sweep's max_duration_minutes ({self.sweep.settings.max_duration_minutes:g}) was reached")
        if self.stopped is None and time.monotonic() - self._parent_checked_at >= self.parent_check_interval:
            self._parent_checked_at = time.monotonic()
            try:
                ended = self.sweep.state().is_terminal
            except Exception:  # the tracking store did not answer: read it again next time
                log.warning("Reading sweep %s's state failed", self.sweep.parent_run_id, exc_info=True)
                return
            if ended:
                self.stop("the sweep was canceled")

    def _stage_next(self) -> PendingTrial | None:
        while self._next_index < self._total:
            index = self._next_index
            self._next_index += 1
            if index in self._finished or index in self.active:
                continue
            previous = self._existing.get(index)
            if previous is not None:
                values: Hyperparameters | None = json.loads(previous.data.tags[Tags.SWEEP_HYPERPARAMETERS])
            else:
                values = draw_trial(self._sampler, self.sweep.settings.sampling, index)
            if values is None:  # a grid smaller than max_total_runs
                self._total = index
                return None
            return self._stage(index, values)
        return None

    def _stage(self, index: int, values: Hyperparameters) -> PendingTrial:
        """Stage trial ``index`` (or reattach to it, by its run key)."""
        plan = self.sweep.plan(index, values)
        if self._parent_name is None:
            self._parent_name = self.sweep.parent().info.run_name or self.sweep.parent_run_id
        staged = self.sweep.experiment.stage(
            trial_run_config(self.run_config, values), {**self.tags, **plan.tags()},
            run_key=self.sweep.trial_key(index), run_name=f"{self._parent_name}_{index}",
            secret_variables=self.secret_variables, params=plan.params(),
        )
        return PendingTrial(index, values, staged)

    def _stage_ahead(self) -> None:
        self._check_deadline()
        while self.stopped is None and len(self._staged) < self._stage_depth:
            staged = self._stage_next()
            if staged is None:
                return
            self._staged.append(staged)

    def _start(self, pending: PendingTrial) -> None:
        run = pending.staged.launch() if isinstance(pending.staged, StagedRun) else pending.staged
        if run.handle is None:  # it had already completed (a resumed sweep)
            self._record(pending.index, pending.hyperparameters, run.id)
            return
        output = self.output
        sink: OutputSink | None = None if output is None else prefixed(output, f"[trial {pending.index}] ")
        run.monitor_factory = TrialMonitor.from_tags  # its watcher applies the sweep's policy
        self.active[pending.index] = ActiveTrial(pending.index, pending.hyperparameters, run, run.watcher(sink))
        log.info("Trial %d started as run %s with %s", pending.index, run.id, pending.hyperparameters)

    def _discard_staged(self, reason: str, start_reattached: bool = True) -> None:
        while self._staged:
            pending = self._staged.popleft()
            if isinstance(pending.staged, StagedRun):
                pending.staged.discard(f"never started: {reason}")
            elif start_reattached:  # a reattached trial: it runs on, so watch it to its end
                self._start(pending)

    def _record(self, index: int, values: Hyperparameters, run_id: str) -> None:
        self._finished.add(index)
        if not self.sweep.settings.sampling.adaptive:
            return  # only an adaptive sampler learns from results: no MLflow reads between two trials
        result = self.sweep.result(self.sweep.tracker.get_run(run_id))
        completed = result.status == RunState.COMPLETED.value
        self._sampler.observe(index, values, result.best_primary_metric if completed else None)

    def _take_stock_of_earlier_trials(self) -> None:
        """What earlier drivers of this sweep left: finished trials are kept (never run again),
        running ones are watched again, and trials that never ran, or were stopped by a task kill
        rather than by the sweep, run again under their run keys (the newest run of a key is the
        trial's)."""
        tracker = self.sweep.tracker
        target = self.run_config.compute_target
        assert not isinstance(target, str)
        for index, child in sorted(self._existing.items()):
            tags = child.data.tags
            state = RunState(tags.get(Tags.STATE, RunState.QUEUED.value))
            if state in (RunState.COMPLETED, RunState.FAILED) or (
                    state is RunState.CANCELED and Tags.SWEEP_TERMINATED in tags):
                self._record(index, json.loads(tags.get(Tags.SWEEP_HYPERPARAMETERS, "{}")), child.info.run_id)
            elif state.is_terminal:
                continue  # canceled by a task kill: it runs again
            elif job_record(tags) is not None:
                self._to_reattach.append(index)
            else:
                handle = target.find(child.info.run_id)
                if handle is not None:  # launched a moment before its driver died
                    tracker.set_state(child.info.run_id, RunState.RUNNING, job=handle.to_dict())
                    self._existing[index] = tracker.get_run(child.info.run_id)
                    self._to_reattach.append(index)
                    continue
                tracker.end(child.info.run_id, RunState.CANCELED, "never started: the sweep's driver stopped first")


def prefixed(output: OutputSink, prefix: str) -> Callable[[str], None]:
    """An output sink that puts ``prefix`` before every line.

    :param output: the sink to send to.
    :param prefix: e.g. ``"[trial 3] "``.
    """
    return lambda line: output(prefix + line)
