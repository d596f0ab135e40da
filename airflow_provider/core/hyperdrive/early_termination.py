"""Applies a sweep's early termination policy to one trial, from the metrics in MLflow.

Any watcher of a trial (the sweep operator's loop, a mapped task's own watcher, a trigger, a
retried task) builds one from the trial's tags: the policy, the primary metric, its goal and the
parent run are all recorded there when the trial is submitted. Siblings are read from MLflow (the
parent's child runs), so trials watched by different Airflow tasks still see each other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from airflow_provider.core.hyperdrive.policies import EarlyTerminationPolicy, NoTerminationPolicy, policy_from_dict
from airflow_provider.core.hyperdrive.sampling import PrimaryMetricGoal
from airflow_provider.core.tracking import RunState, Tags, Tracker

if TYPE_CHECKING:
    from mlflow.entities import Run

__all__ = ["TrialMonitor"]


class TrialMonitor:
    """Decides, as a trial's primary metric arrives, whether the policy stops it.

    :param tracker: where the sweep lives.
    :param run_id: the trial's run id.
    :param experiment_id: its experiment.
    :param parent_run_id: the sweep's parent run id.
    :param metric: the primary metric's name.
    :param goal: its goal.
    :param policy: the policy.
    """

    def __init__(self, tracker: Tracker, run_id: str, experiment_id: str, parent_run_id: str, metric: str,
                 goal: PrimaryMetricGoal, policy: EarlyTerminationPolicy) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.metric = metric
        self.goal = goal
        self.policy = policy
        self.evaluated = 0
        """Intervals of this trial already evaluated."""
        self._finished_siblings: dict[str, list[float]] = {}

    @classmethod
    def from_tags(cls, tracker: Tracker, run_id: str, experiment_id: str,
                  tags: Mapping[str, str]) -> TrialMonitor | None:
        """The monitor of a trial, or None for a run that is no trial or has no policy.

        :param tracker: where the run lives.
        :param run_id: the run id.
        :param experiment_id: its experiment.
        :param tags: its tags.
        """
        policy_json = tags.get(Tags.SWEEP_POLICY)
        parent = tags.get(Tags.PARENT_RUN_ID)
        if not policy_json or not parent or Tags.SWEEP_PRIMARY_METRIC not in tags:
            return None
        policy = policy_from_dict(json.loads(policy_json))
        if isinstance(policy, NoTerminationPolicy):
            return None
        return cls(tracker, run_id, experiment_id, parent, tags[Tags.SWEEP_PRIMARY_METRIC],
                   PrimaryMetricGoal.parse(tags.get(Tags.SWEEP_GOAL, "")), policy)

    def check(self) -> str | None:
        """Evaluate the intervals reported since the last check.

        :return: the policy's reason to stop the trial, or None.
        """
        own = [m.value for m in self.tracker.metric_history(self.run_id, self.metric)]
        new = range(self.evaluated + 1, len(own) + 1)
        if not any(self.policy.applies_at(interval) for interval in new):
            self.evaluated = len(own)
            return None
        found = self.policy.first_stop(own, self.sibling_histories(), self.goal, after=self.evaluated)
        self.evaluated = len(own)
        return None if found is None else f"terminated early by {found[1]}"

    def sibling_histories(self) -> list[list[float]]:
        """The primary metric values of every other trial of the sweep, as reported (the newest
        run of each trial index: an earlier attempt of a trial that ran again does not count)."""
        newest: dict[str, Run] = {}
        for child in self.tracker.child_runs(self.experiment_id, self.parent_run_id):  # oldest first
            newest[child.data.tags.get(Tags.SWEEP_TRIAL_INDEX, child.info.run_id)] = child
        own_index = next((i for i, c in newest.items() if c.info.run_id == self.run_id), None)
        histories = []
        for index, sibling in newest.items():
            sibling_id = sibling.info.run_id
            if index == own_index or sibling_id == self.run_id:
                continue
            if sibling_id in self._finished_siblings:
                histories.append(self._finished_siblings[sibling_id])
                continue
            if self.metric not in sibling.data.metrics:
                continue
            values = [m.value for m in self.tracker.metric_history(sibling_id, self.metric)]
            if RunState(sibling.data.tags.get(Tags.STATE, RunState.QUEUED.value)).is_terminal:
                self._finished_siblings[sibling_id] = values
            histories.append(values)
        return histories
