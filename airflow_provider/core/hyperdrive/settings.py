"""What every trial of a sweep shares (:class:`SweepSettings`), its validation, and how a trial's
sampled values become its script arguments (``--name value`` replaces the same flag, ``--name
value`` or ``--name=value``, in the run config's arguments, or is appended). The sweep's driver and
parent run build on this; :class:`~airflow_provider.core.hyperdrive.config.HyperDriveConfig` is the
user's side of it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from airflow_provider.core.config import ScriptRunConfig
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.hyperdrive.policies import EarlyTerminationPolicy, NoTerminationPolicy
from airflow_provider.core.hyperdrive.sampling import (
    Hyperparameters,
    ParameterSampling,
    PrimaryMetricGoal,
    argument_name,
)
from airflow_provider.runtime.events import valid_name

__all__ = ["SweepSettings", "describe_settings", "trial_arguments", "trial_run_config", "validate_sweep_settings"]

_FIELD = "HyperDriveConfig"


@dataclass(frozen=True)
class SweepSettings:
    """What every trial of a sweep shares, apart from its run config (validated, serialisable).

    :param sampling: how hyperparameters are drawn.
    :param primary_metric_name: the metric trials log, which the sweep optimises.
    :param primary_metric_goal: maximize or minimize it.
    :param max_total_runs: how many trials at most.
    :param max_concurrent_runs: how many trials run at once at most.
    :param max_duration_minutes: stop the sweep (and cancel its running trials) after this long.
    :param policy: the early termination policy.
    """

    sampling: ParameterSampling
    primary_metric_name: str
    primary_metric_goal: PrimaryMetricGoal
    max_total_runs: int
    max_concurrent_runs: int
    max_duration_minutes: float | None
    policy: EarlyTerminationPolicy

    @property
    def terminates_early(self) -> bool:
        """Whether a policy other than :class:`NoTerminationPolicy` applies."""
        return not isinstance(self.policy, NoTerminationPolicy)


def validate_sweep_settings(sampling: object, metric: object, goal: object, max_total_runs: object,
                            max_concurrent_runs: object, max_duration_minutes: object, policy: object,
                            owner: str) -> SweepSettings:
    """Check a sweep's settings; shared by :class:`HyperDriveConfig` and the Airflow operators.

    :param sampling: the hyperparameter sampling.
    :param metric: the primary metric's name.
    :param goal: its goal.
    :param max_total_runs: the most trials.
    :param max_concurrent_runs: the most trials at once.
    :param max_duration_minutes: the sweep's time limit.
    :param policy: the early termination policy.
    :param owner: the class or operator the fields belong to (for messages).
    """
    if not isinstance(sampling, ParameterSampling):
        raise ConfigurationError(f"{owner}.hyperparameter_sampling", f"got {type(sampling).__name__}.",
                                 "pass GridParameterSampling, RandomParameterSampling or BayesianParameterSampling.")
    sampling.validate()  # again: its space may have changed since it was made
    if not isinstance(metric, str) or not valid_name(metric):
        raise ConfigurationError(f"{owner}.primary_metric_name", f"{metric!r} is not a metric name.",
                                 'pass the name your script logs, e.g. "accuracy".')
    parsed_goal = PrimaryMetricGoal.parse(goal, f"{owner}.primary_metric_goal")
    grid_size = sampling.total()
    if max_total_runs is None:
        if grid_size is None:
            raise ConfigurationError(f"{owner}.max_total_runs", "is required for random and Bayesian sampling.",
                                     "pass max_total_runs=20 (or any positive integer).")
        max_total_runs = grid_size
    total = _positive_int(f"{owner}.max_total_runs", max_total_runs)
    if grid_size is not None:
        total = min(total, grid_size)
    concurrent = total if max_concurrent_runs is None else _positive_int(f"{owner}.max_concurrent_runs",
                                                                          max_concurrent_runs)
    duration = None
    if max_duration_minutes is not None:
        if (isinstance(max_duration_minutes, bool) or not isinstance(max_duration_minutes, (int, float))
                or not math.isfinite(max_duration_minutes) or max_duration_minutes <= 0):
            raise ConfigurationError(f"{owner}.max_duration_minutes",
                                     f"must be a positive number of minutes, got {max_duration_minutes!r}.",
                                     "pass e.g. max_duration_minutes=120, or None for no limit.")
        duration = float(max_duration_minutes)
    if policy is None:
        policy = NoTerminationPolicy()
    if not isinstance(policy, EarlyTerminationPolicy):
        raise ConfigurationError(f"{owner}.policy", f"got {type(policy).__name__}.",
                                 "pass BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy or None.")
    if not sampling.supports_early_termination and not isinstance(policy, NoTerminationPolicy):
        raise ConfigurationError(f"{owner}.policy", f"{type(sampling).__name__} does not support early termination.",
                                 "pass policy=None, or use RandomParameterSampling with the policy.")
    return SweepSettings(sampling, metric, parsed_goal, total, min(concurrent, total), duration, policy)


def _positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(field, f"must be a positive integer, got {value!r}.", "pass e.g. 4.")
    return value


def trial_arguments(base: list[Any] | None, hyperparameters: Hyperparameters) -> list[Any]:
    """The base arguments with each sampled value set as ``--name value``.

    A flag already in ``base`` (``--name value`` or ``--name=value``) takes the sampled value in
    place; other flags are appended in the search space's order.

    :param base: the run config's arguments.
    :param hyperparameters: search-space entry name -> sampled value.
    """
    arguments = list(base or [])
    for name, value in hyperparameters.items():
        flag = argument_name(name)
        for index, argument in enumerate(arguments):
            if argument == flag and index + 1 < len(arguments):
                arguments[index + 1] = value
                break
            if isinstance(argument, str) and argument.startswith(f"{flag}="):
                arguments[index] = f"{flag}={value}"
                break
        else:
            arguments += [flag, value]
    return arguments


def trial_run_config(run_config: ScriptRunConfig, hyperparameters: Hyperparameters) -> ScriptRunConfig:
    """A copy of ``run_config`` whose arguments carry ``hyperparameters``.

    :param run_config: the sweep's run config.
    :param hyperparameters: the trial's sampled values.
    """
    return dataclasses.replace(run_config, arguments=trial_arguments(run_config.arguments, hyperparameters))


def describe_settings(settings: SweepSettings) -> dict[str, Any]:
    """The settings as JSON types (stored on the sweep's parent run).

    :param settings: validated sweep settings.
    """
    return {
        "sampling": settings.sampling.to_dict(),
        "primary_metric_name": settings.primary_metric_name,
        "primary_metric_goal": settings.primary_metric_goal.value,
        "max_total_runs": settings.max_total_runs,
        "max_concurrent_runs": settings.max_concurrent_runs,
        "max_duration_minutes": settings.max_duration_minutes,
        "policy": settings.policy.to_dict(),
    }
