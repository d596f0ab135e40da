"""Airflow operators of the training-runs provider."""

from airflow_provider.operators.submit_training_run import SubmitTrainingRunOperator

__all__ = ["SubmitTrainingRunOperator"]
