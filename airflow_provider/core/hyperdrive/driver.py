"""Drives a sweep to its end from one process: launch trials up to the concurrency limit, watch them
all from one loop (streaming output, relaying metrics, applying the policy), finalize each as it
ends, launch the next, record the best.

A driver that dies leaves nothing it cannot pick up: a new driver for the same parent run skips
finished trials, reattaches to running ones (by their run keys) and continues with the rest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider.core.config import ScriptRunConfig
from airflow_provider.core.errors import TargetError
from airflow_provider.core.hyperdrive.config import trial_run_config
from airflow_provider.core.hyperdrive.sampling import Hyperparameters, TrialSampler
from airflow_provider.core.hyperdrive.sweep import Sweep
from airflow_provider.core.submit import StagedRun
from airflow_provider.core.targets import resolve_target
from airflow_provider.core.tracking import RunState, Tags
from airflow_provider.core.watcher import OutputSink

if TYPE_CHECKING:
    from airflow_provider.core.submit import ScriptRun
    from airflow_provider.core.targets.base import JobStatus
    from airflow_provider.core.watcher import RunWatcher

__all__ = ["SweepDriver", "prefixed"]

log = logging.getLogger(__name__)


@dataclass
class PendingTrial:
    """A trial staged (or reattached) and waiting for a free slot."""

    index: int
    hyperparameters: Hyperparameters
    staged: StagedRun | ScriptRun


@dataclass
class ActiveTrial:
    """A trial being watched by the driver."""

    index: int
    hyperparameters: Hyperparameters
    run: ScriptRun
    watcher: RunWatcher
    failures: list[str] = field(default_factory=list)


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
    """Consecutive failed polls of one trial before the sweep gives up (a retry resumes it)."""

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
        self._staged: PendingTrial | None = None
        self._existing = sweep.trials()
        remaining = None if settings.max_duration_minutes is None else \
            settings.max_duration_minutes * 60 - sweep.elapsed_seconds()
        self._deadline = None if remaining is None else time.monotonic() + remaining
        self._learn_from_finished_trials()

    # ------------------------------------------------------------------ the loop
    def launch_ready(self, stage_ahead: bool = True) -> None:
        """Launch trials until the concurrency limit, the trial budget or the time limit is reached.

        :param stage_ahead: then stage the next trial, so the next free slot is filled at once
            (not for adaptive sampling, which must learn from the trials running now first).
        """
        self._check_deadline()
        while self.stopped is None and len(self.active) < self.sweep.settings.max_concurrent_runs:
            if self._staged is None:
                self._staged = self._stage_next()
            if self._staged is None:
                break
            pending, self._staged = self._staged, None
            self._start(pending)
        if stage_ahead:
            self._stage_ahead()

    def run(self) -> RunState:
        """Run the sweep to its end; return the parent's terminal state."""
        while True:
            self.launch_ready()
            if not self.active:
                break
            self.step()
            if self.active:
                time.sleep(self.poll_interval)
        if self._staged is not None:  # the sweep stopped before it could start
            self._discard_staged(self.stopped or "the sweep ended")
        return self.sweep.finish(stopped=self.stopped)

    def step(self) -> None:
        """Poll every running trial once; fill freed slots, then finalize the trials that ended."""
        ended: list[tuple[ActiveTrial, JobStatus]] = []
        for index, trial in list(self.active.items()):
            try:
                status = trial.watcher.step()
            except Exception as exc:  # a restarting daemon, a dropped connection: try again next round
                trial.failures.append(f"{type(exc).__name__}: {exc}")
                if len(trial.failures) > self.max_step_failures:
                    raise TargetError(
                        f"watching trial {index} (run {trial.run.id}) failed {len(trial.failures)} times in a row "
                        f"(last: {trial.failures[-1]}); retry the sweep to reattach to its trials") from exc
                log.warning("Watching trial %d: %s; trying again", index, trial.failures[-1])
                continue
            trial.failures.clear()
            if status.state != "running":
                del self.active[index]
                ended.append((trial, status))
        if not ended:
            self._check_deadline()
            return
        self.launch_ready(stage_ahead=False)  # the staged trial starts before the ended ones are collected
        for trial, status in ended:
            trial.watcher.finalize(status)
            self._record(trial.index, trial.hyperparameters, trial.run.id)
        self._stage_ahead()

    def stop(self, reason: str) -> None:
        """Launch no more trials and stop the running ones (they end Canceled with ``reason``).

        :param reason: why the sweep stops.
        """
        self.stopped = reason
        if self._staged is not None:
            self._discard_staged(reason)
        for trial in self.active.values():
            if trial.watcher.termination_reason is None:
                trial.watcher.terminate(reason)

    # ------------------------------------------------------------------ internals
    def _check_deadline(self) -> None:
        if self.stopped is None and self._deadline is not None and time.monotonic() >= self._deadline:
            self.stop(f"the sweep's max_duration_minutes ({self.sweep.settings.max_duration_minutes:g}) was reached")

    def _stage_next(self) -> PendingTrial | None:
        while self._next_index < self._total:
            index = self._next_index
            self._next_index += 1
            if index in self._finished:
                continue
            previous = self._existing.get(index)
            if previous is not None:
                values: Hyperparameters | None = json.loads(previous.data.tags[Tags.SWEEP_HYPERPARAMETERS])
            else:
                values = self._sampler.suggest(index)
            if values is None:  # a grid smaller than max_total_runs
                self._total = index
                return None
            plan = self.sweep.plan(index, values)
            if self._parent_name is None:
                self._parent_name = self.sweep.parent().info.run_name or self.sweep.parent_run_id
            staged = self.sweep.experiment.stage(
                trial_run_config(self.run_config, values), {**self.tags, **plan.tags()},
                run_key=self.sweep.trial_key(index), run_name=f"{self._parent_name}_{index}",
                secret_variables=self.secret_variables, params=plan.params(),
            )
            return PendingTrial(index, values, staged)
        return None

    def _stage_ahead(self) -> None:
        if self.stopped is None and self._staged is None and not self.sweep.settings.sampling.adaptive:
            self._staged = self._stage_next()

    def _start(self, pending: PendingTrial) -> None:
        run = pending.staged.launch() if isinstance(pending.staged, StagedRun) else pending.staged
        if run.handle is None:  # it had already completed (a resumed sweep)
            self._record(pending.index, pending.hyperparameters, run.id)
            return
        output = self.output
        sink: OutputSink | None = None if output is None else prefixed(output, f"[trial {pending.index}] ")
        self.active[pending.index] = ActiveTrial(pending.index, pending.hyperparameters, run, run.watcher(sink))
        log.info("Trial %d started as run %s with %s", pending.index, run.id, pending.hyperparameters)

    def _discard_staged(self, reason: str) -> None:
        pending, self._staged = self._staged, None
        if pending is None:
            return
        if isinstance(pending.staged, StagedRun):
            pending.staged.discard(f"never started: {reason}")
        else:  # a reattached trial: it runs on, so watch it to its end
            self._start(pending)

    def _record(self, index: int, values: Hyperparameters, run_id: str) -> None:
        self._finished.add(index)
        result = self.sweep.result(self.sweep.tracker.get_run(run_id))
        completed = result.status == RunState.COMPLETED.value
        self._sampler.observe(index, values, result.best_primary_metric if completed else None)

    def _learn_from_finished_trials(self) -> None:
        for index, child in sorted(self._existing.items()):
            state = RunState(child.data.tags.get(Tags.STATE, RunState.QUEUED.value))
            if not state.is_terminal and Tags.JOB not in child.data.tags:
                # Staged ahead by a driver that died before starting it: it never ran, so it is
                # staged afresh under the same run key (the newest run of a key is the trial's).
                tracker = self.sweep.tracker
                tracker.set_tags(child.info.run_id, {Tags.ERROR: "never started: the sweep's driver stopped first"})
                tracker.terminate(child.info.run_id, RunState.CANCELED)
                tracker.set_state(child.info.run_id, RunState.CANCELED)
                del self._existing[index]
            elif state.is_terminal:
                self._record(index, json.loads(child.data.tags.get(Tags.SWEEP_HYPERPARAMETERS, "{}")),
                             child.info.run_id)


def prefixed(output: OutputSink, prefix: str) -> Callable[[str], None]:
    """An output sink that puts ``prefix`` before every line.

    :param output: the sink to send to.
    :param prefix: e.g. ``"[trial 3] "``.
    """
    return lambda line: output(prefix + line)
