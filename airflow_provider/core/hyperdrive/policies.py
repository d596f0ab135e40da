"""Early termination policies (Azure ML v1's HyperDrive semantics), as pure functions of metric histories.

An *interval* is one report of the primary metric: the trial's ``k``-th logged value of it is
interval ``k`` (1-based). A policy is evaluated at interval ``k`` when ``k`` is a multiple of
``evaluation_interval`` and ``k >= delay_evaluation``. At interval ``k`` a trial is compared with
every trial of the sweep that has reported at least ``k`` values (finished ones and itself
included), each cut to its first ``k`` values, so a young trial is never judged against what
older trials reached later. "Best" follows the goal: the largest value when maximizing, the
smallest when minimizing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.hyperdrive.sampling import PrimaryMetricGoal

__all__ = [
    "BanditPolicy",
    "EarlyTerminationPolicy",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "TruncationSelectionPolicy",
    "policy_from_dict",
]

History = Sequence[float]


def _count(policy: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{policy}.{name}", f"must be an integer of at least {minimum}, got {value!r}.",
                                 f"pass e.g. {name}={max(minimum, 1)}.")
    return value


class EarlyTerminationPolicy:
    """Base of the policies: when to evaluate (every policy has ``evaluation_interval``: evaluate at
    every multiple of this many primary metric reports, and ``delay_evaluation``: never evaluate
    before this many reports)."""

    evaluation_interval: int = 1
    delay_evaluation: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        _count(name, "evaluation_interval", self.evaluation_interval, 1)
        _count(name, "delay_evaluation", self.delay_evaluation, 0)

    def applies_at(self, interval: int) -> bool:
        """Whether the policy is evaluated at ``interval``.

        :param interval: the 1-based count of the trial's primary metric reports.
        """
        return interval % self.evaluation_interval == 0 and interval >= self.delay_evaluation

    def stop_reason(self, interval: int, own: History, others: Sequence[History],
                    goal: PrimaryMetricGoal) -> str | None:
        """Why the trial should stop at ``interval``, or None to let it go on.

        :param interval: where to evaluate (the trial has reported at least this many values).
        :param own: the trial's primary metric values, in the order reported.
        :param others: the other trials' values.
        :param goal: the primary metric's goal.
        """
        return None

    def first_stop(self, own: History, others: Sequence[History], goal: PrimaryMetricGoal,
                   after: int = 0) -> tuple[int, str] | None:
        """The first interval after ``after`` at which the trial should stop, with the reason.

        :param own: the trial's primary metric values.
        :param others: the other trials' values.
        :param goal: the primary metric's goal.
        :param after: intervals already evaluated.
        """
        for interval in range(after + 1, len(own) + 1):
            if self.applies_at(interval):
                reason = self.stop_reason(interval, own, others, goal)
                if reason is not None:
                    return interval, reason
        return None

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        return {"kind": type(self).__name__, "evaluation_interval": self.evaluation_interval,
                "delay_evaluation": self.delay_evaluation}


def _cohort(interval: int, own: History, others: Sequence[History], goal: PrimaryMetricGoal) -> list[list[float]]:
    """Every trial that reached ``interval``, cut to its first ``interval`` values (own first); a
    NaN or infinite value (a diverged trial) counts as the worst possible one."""
    return [goal.sanitize(list(own[:interval]))] + [goal.sanitize(list(h[:interval]))
                                                     for h in others if len(h) >= interval]


@dataclass(frozen=True)
class NoTerminationPolicy(EarlyTerminationPolicy):
    """Every trial runs to its end."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__}


@dataclass(frozen=True)
class BanditPolicy(EarlyTerminationPolicy):
    """Stop a trial whose best value is not within the slack of the best trial's best value.

    At interval ``k``, with ``best`` the best value any trial reported up to its ``k``-th report
    and ``mine`` the best value this trial reported up to ``k``, the trial stops when:

    - ``slack_factor`` (maximize): ``mine < best / (1 + slack_factor)``;
      (minimize): ``mine > best * (1 + slack_factor)``;
    - ``slack_amount`` (maximize): ``mine < best - slack_amount``; (minimize): ``mine > best + slack_amount``.

    Example (Azure ML's): maximizing, ``slack_factor=0.2``, the best trial reported 0.8 by interval
    10: a trial whose best by interval 10 is below 0.8 / 1.2 = 0.667 stops. ``slack_factor`` assumes
    a positive metric; use ``slack_amount`` for metrics that can be zero or negative.

    :param evaluation_interval: evaluate at every multiple of this many reports.
    :param slack_factor: the allowed distance from the best, as a ratio.
    :param slack_amount: the allowed distance from the best, as an absolute amount.
    :param delay_evaluation: never evaluate before this many reports.
    """

    evaluation_interval: int = 1
    slack_factor: float | None = None
    slack_amount: float | None = None
    delay_evaluation: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.slack_factor is None) == (self.slack_amount is None):
            raise ConfigurationError("BanditPolicy", "needs exactly one of slack_factor and slack_amount.",
                                     "pass slack_factor=0.1 (10 % of the best) or slack_amount=0.05.")
        for name in ("slack_factor", "slack_amount"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):
                raise ConfigurationError(f"BanditPolicy.{name}",
                                         f"must be a finite number of at least 0, got {value!r}.",
                                         f"pass e.g. {name}=0.1.")

    def stop_reason(self, interval: int, own: History, others: Sequence[History],
                    goal: PrimaryMetricGoal) -> str | None:
        cohort = _cohort(interval, own, others, goal)
        best = goal.best([goal.best(h) for h in cohort])
        mine = goal.best(cohort[0])
        maximize = goal is PrimaryMetricGoal.MAXIMIZE
        if self.slack_factor is not None:
            limit = best / (1 + self.slack_factor) if maximize else best * (1 + self.slack_factor)
            rule = f"best {best:g} {'/' if maximize else '*'} (1 + slack_factor {self.slack_factor:g})"
        else:
            assert self.slack_amount is not None
            limit = best - self.slack_amount if maximize else best + self.slack_amount
            rule = f"best {best:g} {'-' if maximize else '+'} slack_amount {self.slack_amount:g}"
        if goal.better(limit, mine):
            return (f"BanditPolicy at interval {interval}: this trial's best {mine:g} is "
                    f"{'below' if maximize else 'above'} {limit:g} = {rule}")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "slack_factor": self.slack_factor, "slack_amount": self.slack_amount}


@dataclass(frozen=True)
class MedianStoppingPolicy(EarlyTerminationPolicy):
    """Stop a trial whose best value is worse than the median of the trials' running averages.

    At interval ``k``: for every trial that reached ``k`` (this one included), its running average
    is the mean of its first ``k`` values; the trial stops when its best value up to ``k`` is
    strictly worse than the median of those averages.

    :param evaluation_interval: evaluate at every multiple of this many reports.
    :param delay_evaluation: never evaluate before this many reports.
    """

    evaluation_interval: int = 1
    delay_evaluation: int = 0

    def stop_reason(self, interval: int, own: History, others: Sequence[History],
                    goal: PrimaryMetricGoal) -> str | None:
        cohort = _cohort(interval, own, others, goal)
        averages = [statistics.fmean(h) if all(math.isfinite(v) for v in h) else goal.worst for h in cohort]
        median = statistics.median(averages)
        mine = goal.best(cohort[0])
        if goal.better(median, mine):
            return (f"MedianStoppingPolicy at interval {interval}: this trial's best {mine:g} is worse than "
                    f"{median:g}, the median of the running averages of {len(cohort)} trials")
        return None


@dataclass(frozen=True)
class TruncationSelectionPolicy(EarlyTerminationPolicy):
    """Stop the trials ranked in the lowest ``truncation_percentage`` percent at each evaluation.

    At interval ``k``, the ``n`` trials that reached ``k`` (this one included) are ranked by their
    best value up to ``k``; the ``floor(n * truncation_percentage / 100)`` worst stop. A trial is
    among them when at least ``n - floor(n * truncation_percentage / 100)`` trials are strictly
    better, so ties never truncate and fewer than ``100 / truncation_percentage`` trials never do.

    :param truncation_percentage: the percentage of trials to stop (1-99).
    :param evaluation_interval: evaluate at every multiple of this many reports.
    :param delay_evaluation: never evaluate before this many reports.
    """

    truncation_percentage: int
    evaluation_interval: int = 1
    delay_evaluation: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        value = self.truncation_percentage
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 99:
            raise ConfigurationError("TruncationSelectionPolicy.truncation_percentage",
                                     f"must be an integer from 1 to 99, got {value!r}.",
                                     "pass e.g. truncation_percentage=20 to stop the worst fifth.")

    def stop_reason(self, interval: int, own: History, others: Sequence[History],
                    goal: PrimaryMetricGoal) -> str | None:
        cohort = _cohort(interval, own, others, goal)
        bests = [goal.best(h) for h in cohort]
        truncated = len(bests) * self.truncation_percentage // 100
        better = sum(1 for b in bests[1:] if goal.better(b, bests[0]))
        if truncated and better >= len(bests) - truncated:
            return (f"TruncationSelectionPolicy at interval {interval}: this trial's best {bests[0]:g} ranks "
                    f"{better + 1} of {len(bests)}, among the worst {truncated} "
                    f"({self.truncation_percentage} %)")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "truncation_percentage": self.truncation_percentage}


_POLICIES: dict[str, type[EarlyTerminationPolicy]] = {
    cls.__name__: cls
    for cls in (NoTerminationPolicy, BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy)
}


def policy_from_dict(data: dict[str, Any]) -> EarlyTerminationPolicy:
    """Rebuild a policy from its ``to_dict()`` form.

    :param data: the serialised policy.
    """
    fields = dict(data)
    kind = _POLICIES.get(str(fields.pop("kind", "")))
    if kind is None:
        raise ConfigurationError("policy", f"unknown policy {data.get('kind')!r}.", f"use one of {sorted(_POLICIES)}.")
    try:
        return kind(**fields)
    except TypeError as exc:
        raise ConfigurationError("policy", f"{data!r} does not describe a {kind.__name__}: {exc}.",
                                 f"build it with {kind.__name__}(...).") from None
