"""``HyperDriveConfig``: a hyperparameter sweep over one :class:`ScriptRunConfig` (Azure ML v1's names).

Each trial runs the sweep's run config with its sampled values as script arguments: ``--name value``
replaces the same flag (``--name value`` or ``--name=value``) in the run config's arguments, or is
appended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider.core.config import ScriptRunConfig
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.hyperdrive.policies import EarlyTerminationPolicy
from airflow_provider.core.hyperdrive.sampling import ParameterSampling, PrimaryMetricGoal
from airflow_provider.core.hyperdrive.settings import (
    SweepSettings,
    describe_settings,
    trial_arguments,
    trial_run_config,
    validate_sweep_settings,
)

if TYPE_CHECKING:
    from airflow_provider.core.hyperdrive.run import HyperDriveRun
    from airflow_provider.core.submit import Experiment

__all__ = ["HyperDriveConfig", "SweepSettings", "describe_settings", "trial_arguments", "trial_run_config"]

_FIELD = "HyperDriveConfig"


class HyperDriveConfig:
    """A hyperparameter sweep (Azure ML v1's ``HyperDriveConfig``).

    :param run_config: what each trial runs (its arguments are the base the sampled values override).
    :param hyperparameter_sampling: :class:`GridParameterSampling`, :class:`RandomParameterSampling`
        or :class:`BayesianParameterSampling`.
    :param primary_metric_name: the metric each trial logs with ``run.log`` (or ``mlflow.log_metric``).
    :param primary_metric_goal: ``PrimaryMetricGoal.MAXIMIZE`` or ``MINIMIZE`` (or the string).
    :param max_total_runs: the most trials to run; default (grid only) the size of the grid.
    :param max_concurrent_runs: the most trials running at once; default ``max_total_runs``.
    :param max_duration_minutes: stop the sweep after this long; running trials end Canceled.
    :param policy: an early termination policy; None runs every trial to its end.
    """

    def __init__(self, run_config: ScriptRunConfig, hyperparameter_sampling: ParameterSampling,
                 primary_metric_name: str, primary_metric_goal: PrimaryMetricGoal | str,
                 max_total_runs: int | None = None, max_concurrent_runs: int | None = None,
                 max_duration_minutes: float | None = None,
                 policy: EarlyTerminationPolicy | None = None) -> None:
        self.run_config = run_config
        self.hyperparameter_sampling = hyperparameter_sampling
        self.primary_metric_name = primary_metric_name
        self.primary_metric_goal = primary_metric_goal
        self.max_total_runs = max_total_runs
        self.max_concurrent_runs = max_concurrent_runs
        self.max_duration_minutes = max_duration_minutes
        self.policy = policy

    def submit_to(self, experiment: Experiment, tags: dict[str, str] | None = None, *, run_key: str | None = None,
                  reattach: bool = True, run_name: str | None = None,
                  secret_variables: dict[str, str] | None = None,
                  params: dict[str, str] | None = None) -> HyperDriveRun:
        """Start this sweep in ``experiment`` (what ``experiment.submit(config)`` calls): its parent run
        and first trials; see :func:`~airflow_provider.core.hyperdrive.run.submit_sweep`."""
        from airflow_provider.core.hyperdrive.run import submit_sweep  # the sweep's handle builds on this config

        return submit_sweep(experiment, self, tags, run_key, run_name, secret_variables, reattach=reattach,
                            params=params)

    def validate(self) -> SweepSettings:
        """Check every field (the run config too) before anything runs.

        :raises ConfigurationError: naming the first bad field and how to fix it.
        """
        if not isinstance(self.run_config, ScriptRunConfig):
            raise ConfigurationError(f"{_FIELD}.run_config", f"must be a ScriptRunConfig, got "
                                     f"{type(self.run_config).__name__}.", "pass ScriptRunConfig(...).")
        self.run_config.validate()
        return validate_sweep_settings(
            self.hyperparameter_sampling, self.primary_metric_name, self.primary_metric_goal,
            self.max_total_runs, self.max_concurrent_runs, self.max_duration_minutes, self.policy, _FIELD,
        )
