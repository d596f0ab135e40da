"""What every operator of this provider shares about its task: the run key and run name it gives
MLflow, and how an error of the core becomes an Airflow task failure.

Run key: ``<dag_id>/<task_id>/<run_id>/<map_index>``, without the try number, so a retried try
finds the run (or sweep) of the try before it. Run name: ``<task_id>-<run_id>``, clipped so MLflow
can store it (250 characters), leaving room for the ``_<index>`` a sweep appends for its trials.

Errors follow the tree of :mod:`airflow_provider.core.errors` the same way in every operator:

================================  ==========================================================
the error                         the task
================================  ==========================================================
not retryable (configuration)     fails at once: ``AirflowFailException``, no retries
a run failure (Failed, Canceled)  fails with ``AirflowException``: the task's ``retries`` decide
retryable (transient)             re-raised as it is: the task's ``retries`` apply
================================  ==========================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider.core.errors import TrainingRunError, is_retryable, is_run_failure

if TYPE_CHECKING:
    from airflow_provider.core.hyperdrive.sweep import TrialPlan
    from airflow_provider.core.submit import Experiment

__all__ = ["MAX_RUN_NAME", "TRIAL_SUFFIX_ROOM", "raise_for_airflow", "task_run_key", "task_run_name",
           "trial_run_name"]

MAX_RUN_NAME = 250
"""The longest run name MLflow stores."""
TRIAL_SUFFIX_ROOM = 10
"""Characters a sweep's parent run name leaves for ``_<index>`` of its trials' names."""


def task_run_key(ti: Any) -> str:
    """The run key of a task instance: the same for every try of it.

    :param ti: the task instance (``context["ti"]``).
    """
    return f"{ti.dag_id}/{ti.task_id}/{ti.run_id}/{ti.map_index}"


def task_run_name(ti: Any, sweep: bool = False) -> str:
    """The MLflow run name of a task instance's run, clipped to what MLflow stores.

    :param ti: the task instance (``context["ti"]``).
    :param sweep: the name of a sweep's parent run, whose trials append ``_<index>``.
    """
    limit = MAX_RUN_NAME - (TRIAL_SUFFIX_ROOM if sweep else 0)
    return f"{ti.task_id}-{ti.run_id}"[:limit]


def trial_run_name(experiment: Experiment, trial: TrialPlan) -> str:
    """The MLflow run name of a mapped sweep trial: ``<parent>_<index>``, as a sweep's own driver
    names its trials.

    :param experiment: the sweep's experiment.
    :param trial: the planned trial.
    """
    parent = experiment.tracker.get_run(trial.parent_run_id).info.run_name or trial.parent_run_id
    return f"{parent[:MAX_RUN_NAME - TRIAL_SUFFIX_ROOM]}_{trial.trial_index}"


def raise_for_airflow(exc: TrainingRunError) -> NoReturn:
    """Raise what the task should fail with for ``exc`` (see the table above).

    :param exc: an error of the core's tree.
    :raises AirflowFailException: ``exc`` is not retryable.
    :raises AirflowException: ``exc`` is a run failure.
    :raises TrainingRunError: ``exc`` itself, when it is transient.
    """
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    if not is_retryable(exc):
        raise AirflowFailException(str(exc)) from exc  # retrying cannot fix a bad configuration
    if is_run_failure(exc):
        raise AirflowException(str(exc)) from exc
    raise exc
