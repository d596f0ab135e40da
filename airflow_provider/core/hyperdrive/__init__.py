"""Hyperparameter sweeps (Azure ML v1's HyperDrive): sampling, early termination, parent and child runs.

``from airflow_provider.core.hyperdrive import HyperDriveConfig, RandomParameterSampling, BanditPolicy,
uniform, choice`` and submit the config with :meth:`Experiment.submit`; the Airflow operators live in
:mod:`airflow_provider.operators.hyperparameter_sweep`.
"""

from __future__ import annotations

from airflow_provider.core.hyperdrive.config import HyperDriveConfig, SweepSettings, trial_arguments
from airflow_provider.core.hyperdrive.parameter_expressions import (
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from airflow_provider.core.hyperdrive.policies import (
    BanditPolicy,
    EarlyTerminationPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    TruncationSelectionPolicy,
)
from airflow_provider.core.hyperdrive.run import HyperDriveRun
from airflow_provider.core.hyperdrive.sampling import (
    BayesianParameterSampling,
    GridParameterSampling,
    ParameterSampling,
    PrimaryMetricGoal,
    RandomParameterSampling,
)
from airflow_provider.core.hyperdrive.sweep import Sweep, TrialPlan, TrialResult, finish_sweep, plan_sweep

__all__ = [
    "BanditPolicy",
    "BayesianParameterSampling",
    "EarlyTerminationPolicy",
    "GridParameterSampling",
    "HyperDriveConfig",
    "HyperDriveRun",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "ParameterSampling",
    "PrimaryMetricGoal",
    "RandomParameterSampling",
    "Sweep",
    "SweepSettings",
    "TrialPlan",
    "TrialResult",
    "TruncationSelectionPolicy",
    "choice",
    "finish_sweep",
    "lognormal",
    "loguniform",
    "normal",
    "plan_sweep",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "trial_arguments",
    "uniform",
]
