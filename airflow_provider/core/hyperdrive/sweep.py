"""A sweep in MLflow: a parent run, one child run per trial (``mlflow.parentRunId``), the best child.

The parent holds the sweep's settings and seed (tags and ``hyperdrive/settings.json``); each child
holds its trial index, sampled hyperparameters (as params, and exactly typed as a tag), and the
policy that applies to it. Everything a resumed sweep or a mapped task needs is read back from there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.hyperdrive.policies import EarlyTerminationPolicy, policy_from_dict
from airflow_provider.core.hyperdrive.sampling import (
    Hyperparameters,
    ParameterSampling,
    PrimaryMetricGoal,
    TrialSampler,
    parameter_name,
    sampling_from_dict,
)
from airflow_provider.core.hyperdrive.settings import SweepSettings, describe_settings, validate_sweep_settings
from airflow_provider.core.tracking import MetricValue, RunState, Tags, Tracker

if TYPE_CHECKING:
    from mlflow.entities import Run

    from airflow_provider.core.submit import Experiment

__all__ = ["Sweep", "TrialPlan", "TrialResult", "finish_sweep", "plan_sweep"]

log = logging.getLogger(__name__)

ROLE_PARENT = "sweep"
ROLE_TRIAL = "trial"


@dataclass(frozen=True)
class TrialPlan:
    """One planned trial, as plain JSON types (what crosses XCom to a mapped task).

    :param parent_run_id: the sweep's parent run.
    :param experiment_name: the experiment both live in.
    :param tracking_uri: where MLflow is.
    :param trial_index: the trial's 0-based index.
    :param hyperparameters: search-space entry name -> value.
    :param primary_metric_name: the sweep's primary metric.
    :param primary_metric_goal: ``MAXIMIZE`` or ``MINIMIZE``.
    :param policy: the early termination policy (``to_dict()``).
    """

    parent_run_id: str
    experiment_name: str
    tracking_uri: str
    trial_index: int
    hyperparameters: dict[str, Any]
    primary_metric_name: str
    primary_metric_goal: str
    policy: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialPlan:
        """Rebuild from :meth:`to_dict` output.

        :param data: the serialised plan.
        """
        try:
            return cls(str(data["parent_run_id"]), str(data["experiment_name"]), str(data["tracking_uri"]),
                       int(data["trial_index"]), dict(data["hyperparameters"]), str(data["primary_metric_name"]),
                       str(data["primary_metric_goal"]), dict(data["policy"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError("sweep_trial", f"is not a planned trial ({exc}).",
                                     "pass the items returned by the sweep planning task.") from exc

    def tags(self) -> dict[str, str]:
        """The tags that make a run this trial of its sweep."""
        return trial_tags(self.parent_run_id, self.trial_index, self.hyperparameters, self.primary_metric_name,
                          self.primary_metric_goal, self.policy)

    def params(self) -> dict[str, str]:
        """The trial's hyperparameters as MLflow params."""
        return {parameter_name(k): str(v) for k, v in self.hyperparameters.items()}


@dataclass(frozen=True)
class TrialResult:
    """A trial as the sweep sees it.

    :param run_id: its run id.
    :param trial_index: its index.
    :param hyperparameters: what it ran with.
    :param status: its detailed state.
    :param best_primary_metric: its best value of the primary metric (None: it reported none).
    """

    run_id: str
    trial_index: int
    hyperparameters: dict[str, Any]
    status: str
    best_primary_metric: float | None

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types (the keys Azure ML's children listing used)."""
        return {"run_id": self.run_id, "trial_index": self.trial_index, "hyperparameters": self.hyperparameters,
                "status": self.status, "best_primary_metric": self.best_primary_metric}


def trial_tags(parent_run_id: str, index: int, hyperparameters: Hyperparameters, metric: str, goal: str,
               policy: dict[str, Any]) -> dict[str, str]:
    """The tags of trial ``index`` of a sweep.

    :param parent_run_id: the sweep's parent run.
    :param index: the trial's index.
    :param hyperparameters: its sampled values.
    :param metric: the primary metric.
    :param goal: its goal.
    :param policy: the early termination policy (``to_dict()``).
    """
    return {
        Tags.PARENT_RUN_ID: parent_run_id,
        Tags.SWEEP_ROLE: ROLE_TRIAL,
        Tags.SWEEP_TRIAL_INDEX: str(index),
        Tags.SWEEP_HYPERPARAMETERS: json.dumps(hyperparameters, sort_keys=False),
        Tags.SWEEP_PRIMARY_METRIC: metric,
        Tags.SWEEP_GOAL: goal,
        Tags.SWEEP_POLICY: json.dumps(policy),
    }


class Sweep:
    """The MLflow side of one sweep: its parent run and its trials.

    :param experiment: the experiment the sweep runs in.
    :param parent_run_id: the parent run id.
    :param settings: the sweep's validated settings.
    :param seed: the sampling seed.
    """

    def __init__(self, experiment: Experiment, parent_run_id: str, settings: SweepSettings, seed: int) -> None:
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.settings = settings
        self.seed = seed

    # ------------------------------------------------------------------ parent run
    @classmethod
    def start(cls, experiment: Experiment, settings: SweepSettings, run_key: str | None = None,
              run_name: str | None = None, tags: dict[str, str] | None = None) -> Sweep:
        """Create the parent run, or pick up the one with ``run_key`` that has not ended Failed or Canceled.

        :param experiment: where the sweep runs.
        :param settings: validated settings.
        :param run_key: a stable key (a retried Airflow task passes the same one).
        :param run_name: the parent's display name.
        :param tags: extra tags for the parent.
        """
        tracker = experiment.tracker
        if run_key is not None:
            previous = tracker.find_run_by_key(experiment.id, run_key)
            if previous is not None and previous.data.tags.get(Tags.SWEEP_ROLE) == ROLE_PARENT:
                state = RunState(previous.data.tags.get(Tags.STATE, RunState.QUEUED.value))
                if state is not RunState.FAILED:  # a Failed sweep (no trial completed) starts afresh
                    sweep = cls.load(experiment, previous.info.run_id)
                    sweep._check_same_settings(settings)
                    if state is RunState.CANCELED:  # stopped by a task kill (or a cancel): it goes on
                        sweep._reopen()
                    return sweep
        seed = settings.sampling.seed if settings.sampling.seed is not None else secrets.randbelow(2**31)
        described = describe_settings(settings)
        described["sampling"]["seed"] = seed
        parent_tags = {
            **(tags or {}),
            Tags.RUN_KEY: run_key or f"sweep/{secrets.token_hex(16)}",
            Tags.SWEEP_ROLE: ROLE_PARENT,
            Tags.SWEEP_SETTINGS: json.dumps(described),
            Tags.SWEEP_SEED: str(seed),
            Tags.SWEEP_PRIMARY_METRIC: settings.primary_metric_name,
            Tags.SWEEP_GOAL: settings.primary_metric_goal.value,
            Tags.SWEEP_POLICY: json.dumps(settings.policy.to_dict()),
            Tags.SOURCE_TYPE: "JOB",
        }
        run_id = tracker.create_run(experiment.id, parent_tags, run_name)
        sweep = cls(experiment, run_id, settings, seed)
        try:
            tracker.log_text(run_id, json.dumps(described, indent=2), "hyperdrive/settings.json")
            tracker.log_params(run_id, {
                "sampling": settings.sampling.kind,
                **({"seed": str(seed)} if settings.sampling.kind != "grid" else {}),  # a grid samples nothing
                "primary_metric_name": settings.primary_metric_name,
                "primary_metric_goal": settings.primary_metric_goal.value,
                "max_total_runs": str(settings.max_total_runs),
                "max_concurrent_runs": str(settings.max_concurrent_runs),
                "policy": type(settings.policy).__name__,
            })
            tracker.set_state(run_id, RunState.RUNNING)
        except BaseException as exc:
            sweep.end_early(exc)
            raise
        return sweep

    @classmethod
    def load(cls, experiment: Experiment, parent_run_id: str) -> Sweep:
        """The sweep whose parent run is ``parent_run_id``.

        :param experiment: its experiment.
        :param parent_run_id: the parent run id.
        """
        tags = experiment.tracker.get_run(parent_run_id).data.tags
        if tags.get(Tags.SWEEP_ROLE) != ROLE_PARENT:
            raise ConfigurationError("parent_run_id", f"run {parent_run_id} is not a sweep's parent run.",
                                     "pass the parent run id the sweep planning task returned.")
        described = json.loads(tags[Tags.SWEEP_SETTINGS])
        settings = SweepSettings(
            sampling_from_dict(described["sampling"]), described["primary_metric_name"],
            PrimaryMetricGoal.parse(described["primary_metric_goal"]), int(described["max_total_runs"]),
            int(described["max_concurrent_runs"]), described.get("max_duration_minutes"),
            policy_from_dict(described["policy"]),
        )
        return cls(experiment, parent_run_id, settings, int(tags[Tags.SWEEP_SEED]))

    def end_early(self, error: BaseException) -> None:
        """End the parent Failed with ``error`` (Canceled for an interrupt such as a task kill), unless
        it has ended already. Never raises: the caller raises ``error``.

        :param error: what stopped the sweep.
        """
        state = RunState.FAILED if isinstance(error, Exception) else RunState.CANCELED
        try:
            if not self.state().is_terminal:
                self.finish(state, error=f"{type(error).__name__}: {error}")
        except Exception as exc:  # MLflow is gone too: the caller's error says more
            log.warning("Ending sweep %s after %s: %s", self.parent_run_id, type(error).__name__, exc)

    def _check_same_settings(self, settings: SweepSettings) -> None:
        """Refuse to resume with other settings than the sweep started with (they would be ignored)."""
        stored = describe_settings(self.settings)
        given = describe_settings(settings)
        if settings.sampling.seed is None:
            given["sampling"]["seed"] = stored["sampling"]["seed"]
        for field in given:
            if given[field] != stored[field]:
                name = "hyperparameter_sampling" if field == "sampling" else field
                raise ConfigurationError(
                    f"HyperDriveConfig.{name}",
                    f"differs from the sweep {self.parent_run_id} with the same run key, which this run would "
                    f"resume: it has {stored[field]!r}, this run {given[field]!r}.",
                    "restore the sweep's settings to resume it, or start a new sweep (a new DAG run, or another "
                    "run_key).")

    def _reopen(self) -> None:
        self.tracker.client.update_run(self.parent_run_id, status="RUNNING")
        with contextlib.suppress(Exception):
            self.tracker.client.delete_tag(self.parent_run_id, Tags.SWEEP_STOPPED)
        self.tracker.set_state(self.parent_run_id, RunState.RUNNING)

    @property
    def tracker(self) -> Tracker:
        """The experiment's tracker."""
        return self.experiment.tracker

    def parent(self) -> Run:
        """The parent run, fetched now."""
        return self.tracker.get_run(self.parent_run_id)

    def state(self) -> RunState:
        """The parent's detailed state."""
        return RunState(self.parent().data.tags.get(Tags.STATE, RunState.QUEUED.value))

    def elapsed_seconds(self) -> float:
        """Seconds since the parent run started (a resumed sweep keeps its original clock)."""
        return time.time() - float(self.parent().info.start_time) / 1000

    # ------------------------------------------------------------------ trials
    def trial_key(self, index: int) -> str:
        """The run key of trial ``index`` (stable across retries of the sweep).

        :param index: the trial's index.
        """
        return f"sweep/{self.parent_run_id}/trial/{index}"

    def plan(self, index: int, hyperparameters: Hyperparameters) -> TrialPlan:
        """The plan of trial ``index``.

        :param index: the trial's index.
        :param hyperparameters: its sampled values.
        """
        return TrialPlan(self.parent_run_id, self.experiment.name, self.experiment.tracking_uri, index,
                         dict(hyperparameters), self.settings.primary_metric_name,
                         self.settings.primary_metric_goal.value, self.settings.policy.to_dict())

    def plan_all(self) -> list[TrialPlan]:
        """Every trial up front (grid and random sampling; Bayesian sampling needs results first)."""
        _refuse_adaptive(self.settings.sampling)
        sampler = self.settings.sampling.sampler(self.seed, self.settings.primary_metric_goal)
        plans = []
        for index in range(self.settings.max_total_runs):
            values = draw_trial(sampler, self.settings.sampling, index)
            if values is None:
                break
            plans.append(self.plan(index, values))
        return plans

    def trials(self) -> dict[int, Run]:
        """The newest child run of each trial index."""
        found: dict[int, Run] = {}
        for child in self.tracker.child_runs(self.experiment.id, self.parent_run_id):
            index = child.data.tags.get(Tags.SWEEP_TRIAL_INDEX)
            if index is not None and index.isdigit():
                found[int(index)] = child
        return found

    def result(self, child: Run) -> TrialResult:
        """How a trial did.

        :param child: its run.
        """
        tags = child.data.tags
        best = None
        if self.settings.primary_metric_name in child.data.metrics:
            history = self.tracker.metric_history(child.info.run_id, self.settings.primary_metric_name)
            values = [m.value for m in history if math.isfinite(m.value)]
            best = self.settings.primary_metric_goal.best(values) if values else None
        return TrialResult(child.info.run_id, int(tags.get(Tags.SWEEP_TRIAL_INDEX, "-1")),
                           json.loads(tags.get(Tags.SWEEP_HYPERPARAMETERS, "{}")),
                           tags.get(Tags.STATE, RunState.QUEUED.value), best)

    def results(self) -> list[TrialResult]:
        """Every trial's result, by index."""
        return [self.result(run) for _, run in sorted(self.trials().items())]

    def sorted_results(self, top: int = 0, reverse: bool = False, discard_no_metric: bool = False,
                       include_failed: bool = True, include_canceled: bool = True) -> list[TrialResult]:
        """Trials best first by their best primary metric (those without a value last).

        :param top: keep only this many (0: all).
        :param reverse: worst first instead.
        :param discard_no_metric: leave out trials that reported no primary metric.
        :param include_failed: keep trials that ended Failed.
        :param include_canceled: keep trials that ended Canceled (an early-terminated trial did).
        """
        results = [r for r in self.results()
                   if (include_failed or r.status != RunState.FAILED.value)
                   and (include_canceled or r.status != RunState.CANCELED.value)
                   and not (discard_no_metric and r.best_primary_metric is None)]
        sign = -1.0 if self.settings.primary_metric_goal is PrimaryMetricGoal.MAXIMIZE else 1.0
        with_metric = sorted((r for r in results if r.best_primary_metric is not None),
                             key=lambda r: (sign * (r.best_primary_metric or 0.0), r.trial_index))
        ordered = with_metric + [r for r in results if r.best_primary_metric is None]
        if reverse:
            ordered.reverse()
        return ordered[:top] if top else ordered

    def best(self, include_failed: bool = True, include_canceled: bool = True) -> TrialResult | None:
        """The trial with the best primary metric, or None when none reported it.

        :param include_failed: consider trials that ended Failed.
        :param include_canceled: consider trials that ended Canceled.
        """
        ranked = self.sorted_results(discard_no_metric=True, include_failed=include_failed,
                                     include_canceled=include_canceled)
        return ranked[0] if ranked else None

    def finish(self, state: RunState | None = None, stopped: str | None = None, error: str | None = None) -> RunState:
        """Record the best trial on the parent and end it.

        Completed when any trial completed (or ``state`` when given), else Failed. A sweep that has
        already ended (canceled by a task kill while its driver still collected trials) keeps its state.

        :param state: force this terminal state (e.g. Canceled).
        :param stopped: why the sweep stopped before its last trial (e.g. its time limit).
        :param error: the parent's error message (default for Failed: no trial completed, or ran).
        """
        current = self.state()
        if current.is_terminal:
            return current
        results = self.results()
        best = self.best()
        if state is None:
            state = RunState.COMPLETED if any(r.status == RunState.COMPLETED.value for r in results) \
                else RunState.FAILED
        tags: dict[str, str] = {}
        if best is not None:
            tags[Tags.SWEEP_BEST_RUN_ID] = best.run_id
            tags[Tags.SWEEP_BEST_HYPERPARAMETERS] = json.dumps(best.hyperparameters)
        if stopped:
            tags[Tags.SWEEP_STOPPED] = stopped
        if error is not None:
            tags[Tags.ERROR] = error
        elif state is RunState.FAILED:
            tags[Tags.ERROR] = "no trial completed" if results else "no trial ran"
        counts: dict[str, int] = {}
        for result in results:
            counts[result.status] = counts.get(result.status, 0) + 1
        metrics = [MetricValue(f"trials_{status.lower()}", float(n), 0, int(time.time() * 1000))
                   for status, n in sorted(counts.items())]
        if best is not None and best.best_primary_metric is not None:
            metrics.append(MetricValue(self.settings.primary_metric_name, best.best_primary_metric, 0,
                                       int(time.time() * 1000)))
        self.tracker.log_metrics(self.parent_run_id, metrics, tags)
        self.tracker.terminate(self.parent_run_id, state)
        self.tracker.set_state(self.parent_run_id, state)
        return state


def plan_sweep(experiment: Experiment, sampling: ParameterSampling, primary_metric_name: str,
               primary_metric_goal: PrimaryMetricGoal | str, max_total_runs: int | None = None,
               policy: EarlyTerminationPolicy | None = None, run_key: str | None = None,
               run_name: str | None = None, tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Create a sweep's parent run and plan every trial up front, for one Airflow task per trial.

    Pass the result to ``SubmitTrainingRunOperator.partial(...).expand(sweep_trial=...)``: each trial
    runs as a child of the parent, its watcher applies ``policy`` by reading its siblings' metrics
    from MLflow, and :func:`finish_sweep` (``SelectBestTrialOperator``) records the best. The same
    ``run_key`` plans the same trials again (the seed is kept on the parent run).

    :param experiment: where the sweep runs.
    :param sampling: grid or random sampling (Bayesian sampling needs results as it goes).
    :param primary_metric_name: the metric the trials log.
    :param primary_metric_goal: maximize or minimize it.
    :param max_total_runs: how many trials (default for a grid: all of it).
    :param policy: the early termination policy each trial applies.
    :param run_key: a stable key for the parent run.
    :param run_name: the parent run's display name.
    :param tags: extra tags for the parent run.
    :return: one :class:`TrialPlan` per trial, as plain dicts.
    """
    settings = validate_sweep_settings(sampling, primary_metric_name, primary_metric_goal, max_total_runs, None,
                                       None, policy, "plan_sweep")
    _refuse_adaptive(settings.sampling)  # before a parent run exists
    experiment.tracker.check_reachable()
    sweep = Sweep.start(experiment, settings, run_key, run_name, tags)
    try:
        return [plan.to_dict() for plan in sweep.plan_all()]
    except BaseException as exc:  # never leave the parent Running
        sweep.end_early(exc)
        raise


def finish_sweep(experiment: Experiment, parent_run_id: str) -> dict[str, Any]:
    """Record the best trial on a planned sweep's parent and end it (once; later calls only report).

    :param experiment: the sweep's experiment.
    :param parent_run_id: the parent run id (every :class:`TrialPlan` carries it).
    :return: the parent's status, the best trial and every trial's result.
    """
    experiment.tracker.check_reachable()
    sweep = Sweep.load(experiment, parent_run_id)
    state = sweep.state()
    if not state.is_terminal:
        state = sweep.finish()
    best = sweep.best()
    return {"parent_run_id": parent_run_id, "status": state.value,
            "primary_metric_name": sweep.settings.primary_metric_name,
            "best_run": None if best is None else best.to_dict(),
            "trials": [r.to_dict() for r in sweep.results()]}


def draw_trial(sampler: TrialSampler, sampling: ParameterSampling, index: int) -> Hyperparameters | None:
    """The values ``sampler`` draws for trial ``index``; a sampler that fails is a configuration error
    (the sweep's seed draws the same values again, so a retry cannot help).

    :param sampler: the sweep's sampler.
    :param sampling: the sampling it was made from (named in the error).
    :param index: the trial's index.
    :raises ConfigurationError: naming the search space and the sampler's error.
    """
    try:
        return sampler.suggest(index)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(
            f"{type(sampling).__name__}.parameter_space",
            f"drawing the hyperparameters of trial {index} failed: {type(exc).__name__}: {exc}.",
            "fix the search space (a retry draws the same values again from the sweep's seed).") from exc


def _refuse_adaptive(sampling: ParameterSampling) -> None:
    if sampling.adaptive:
        raise ConfigurationError(
            "hyperparameter_sampling", f"{type(sampling).__name__} picks each trial from the results of earlier "
            "ones, so its trials cannot be planned as mapped tasks.",
            "use HyperparameterSweepOperator for Bayesian sampling, or Grid/RandomParameterSampling here.")
