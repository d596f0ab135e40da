"""Airflow operators of the training-runs provider."""

from airflow_provider.operators.hyperparameter_sweep import (
    HyperparameterSweepOperator,
    PlanHyperparameterSweepOperator,
    SelectBestTrialOperator,
)
from airflow_provider.operators.submit_training_run import SubmitTrainingRunOperator

__all__ = [
    "HyperparameterSweepOperator",
    "PlanHyperparameterSweepOperator",
    "SelectBestTrialOperator",
    "SubmitTrainingRunOperator",
]
