"""Hyperparameter sweeps in Airflow (Azure ML v1's HyperDrive), in two patterns.

One task for the whole sweep: :class:`HyperparameterSweepOperator` launches trials on a compute
target, keeps at most ``max_concurrent_runs`` running, applies the early termination policy as
metrics arrive and returns the best trial. Grid, random and Bayesian sampling.

One Airflow task per trial: :class:`PlanHyperparameterSweepOperator` creates the sweep's parent run
and returns the planned trials; ``SubmitTrainingRunOperator.partial(...).expand(sweep_trial=...)``
runs them (each trial's watcher applies the policy from its siblings' metrics in MLflow);
:class:`SelectBestTrialOperator` records and returns the best. Grid and random sampling.

A retried task picks its sweep up by its run key: finished trials are not run again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider.core.errors import ConfigurationError, TrainingRunError
from airflow_provider.core.finalizer import finalize_in_background
from airflow_provider.core.hyperdrive import (
    EarlyTerminationPolicy,
    HyperDriveConfig,
    HyperDriveRun,
    ParameterSampling,
    PrimaryMetricGoal,
    finish_sweep,
    plan_sweep,
)
from airflow_provider.core.submit import Experiment
from airflow_provider.core.tracking import RunState
from airflow_provider.hooks.mlflow import MLflowTrackingHook
from airflow_provider.links import MLflowRunLink, link_run
from airflow_provider.operators.submit_training_run import SubmitTrainingRunOperator
from airflow_provider.operators.task_runs import raise_for_airflow, task_run_key, task_run_name

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["HyperparameterSweepOperator", "PlanHyperparameterSweepOperator", "SelectBestTrialOperator"]

KILLED = "the sweep's task was killed"


class HyperparameterSweepOperator(SubmitTrainingRunOperator):
    """Run a whole hyperparameter sweep from one task and return its best trial.

    Takes every argument of :class:`SubmitTrainingRunOperator` (what each trial runs; its
    ``arguments`` are the base the sampled values override), except ``deferrable`` and
    ``defer_after_seconds``, plus:

    :param hyperparameter_sampling: :class:`GridParameterSampling`, :class:`RandomParameterSampling`
        or :class:`BayesianParameterSampling`.
    :param primary_metric_name: the metric each trial logs.
    :param primary_metric_goal: ``"MAXIMIZE"`` or ``"MINIMIZE"`` (or :class:`PrimaryMetricGoal`).
    :param max_total_runs: the most trials (default for a grid: all of it).
    :param max_concurrent_runs: the most trials running at once (default: all).
    :param max_duration_minutes: stop the sweep after this long; running trials end Canceled.
    :param policy: an early termination policy (None: every trial runs to its end).
    :param trial_poll_interval: seconds between two rounds of polling the running trials.
    """

    ui_color = "#c7e8f5"

    def __init__(self, *, hyperparameter_sampling: ParameterSampling, primary_metric_name: str,
                 primary_metric_goal: PrimaryMetricGoal | str, max_total_runs: int | None = None,
                 max_concurrent_runs: int | None = None, max_duration_minutes: float | None = None,
                 policy: EarlyTerminationPolicy | None = None, trial_poll_interval: float = 0.1,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hyperparameter_sampling = hyperparameter_sampling
        self.primary_metric_name = primary_metric_name
        self.primary_metric_goal = primary_metric_goal
        self.max_total_runs = max_total_runs
        self.max_concurrent_runs = max_concurrent_runs
        self.max_duration_minutes = max_duration_minutes
        self.policy = policy
        self.trial_poll_interval = trial_poll_interval
        self._sweep_run: HyperDriveRun | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            return self._run_sweep(context)
        except TrainingRunError as exc:  # e.g. an unreachable target: re-raised, and a retry resumes the sweep
            raise_for_airflow(exc)

    def _run_sweep(self, context: Context) -> dict[str, Any]:
        if self.deferrable:
            raise ConfigurationError("deferrable", "a sweep's task drives its trials, so it cannot defer.",
                                     "leave deferrable=False; use the mapped-task pattern to defer each trial.")
        if self.sweep_trial is not None:
            raise ConfigurationError("sweep_trial", "is for SubmitTrainingRunOperator tasks mapped over a planned "
                                     "sweep, not for HyperparameterSweepOperator.", "remove sweep_trial.")
        ti = context["ti"]
        experiment = self._experiment(context)
        run_config, secrets = self._run_config()
        config = HyperDriveConfig(run_config, self.hyperparameter_sampling, self.primary_metric_name,
                                  self.primary_metric_goal, self.max_total_runs, self.max_concurrent_runs,
                                  self.max_duration_minutes, self.policy)
        tags = {**self._string_tags(), "airflow.dag_id": ti.dag_id, "airflow.task_id": ti.task_id,
                "airflow.run_id": ti.run_id, "airflow.try_number": str(ti.try_number)}
        sweep_run = experiment.submit(config, tags, run_key=task_run_key(ti),
                                      run_name=task_run_name(ti, sweep=True), secret_variables=secrets)
        self._sweep_run = sweep_run
        if self._killed:  # on_kill came while submitting, before there was a sweep to stop
            self.on_kill()
            raise RuntimeError(f"the task was killed while starting sweep {sweep_run.id}; it was canceled")
        self.log.info("Sweep %s started in experiment %r (tracking %s)", sweep_run.id, experiment.name,
                      experiment.tracking_uri)
        link_run(ti, experiment, sweep_run.id, "MLflow sweep run", self.log)
        details = sweep_run.wait_for_completion(output=self._log_output, raise_on_error=False,
                                                poll_interval=self.trial_poll_interval)
        for trial in details["trials"]:
            self.log.info("Trial %d %s: %s -> best %s = %s", trial["trial_index"], trial["status"],
                          trial["hyperparameters"], self.primary_metric_name, trial["best_primary_metric"])
        if details["status"] != RunState.COMPLETED.value:
            from airflow.sdk.exceptions import AirflowException

            raise AirflowException(f"Sweep {sweep_run.id} ended {details['status']}: {details.get('error')}")
        best = details["bestRun"] or {}
        return {
            "parent_run_id": sweep_run.id,
            "best_run_id": best.get("run_id"),
            "hyperparameters": best.get("hyperparameters"),
            "primary_metric_name": self.primary_metric_name,
            "best_primary_metric": best.get("best_primary_metric"),
            "trials": len(details["trials"]),
            "stopped": details.get("stopped"),
        }

    def on_kill(self) -> None:
        """Stop every running trial (each ends Canceled, finalized by a detached process) and end the
        sweep Canceled. A retry resumes it: finished trials are kept, the stopped ones run again."""
        self._killed = True
        sweep_run = self._sweep_run
        if sweep_run is None:
            return  # nothing started yet: execute() stops the sweep as soon as submit returns
        # The detached finalizers first: Airflow kills this process a few seconds after on_kill began,
        # and they must exist by then (each waits for its trial's job to stop, then records it).
        running = sweep_run.running_trials()
        environment = self._finalizer_environment()
        for run in running:
            finalize_in_background(run, environment)
        sweep_run.abort(KILLED)
        self.log.info("Task killed: stopped %d running trials of sweep %s", len(running), sweep_run.id)


class PlanHyperparameterSweepOperator(BaseOperator):
    """Create a sweep's parent run and return its planned trials, for one mapped task per trial.

    ``SubmitTrainingRunOperator.partial(...).expand(sweep_trial=plan.output)`` runs them. A retry
    (same dag run) plans exactly the same trials.

    :param hyperparameter_sampling: :class:`GridParameterSampling` or :class:`RandomParameterSampling`.
    :param primary_metric_name: the metric each trial logs.
    :param primary_metric_goal: ``"MAXIMIZE"`` or ``"MINIMIZE"``.
    :param max_total_runs: how many trials (default for a grid: all of it).
    :param policy: the early termination policy each trial's watcher applies.
    :param experiment_name: the MLflow experiment; default the DAG id. (templated)
    :param tracking_conn_id: an ``mlflow`` connection; default ``MLFLOW_TRACKING_URI`` or the embedded store.
    """

    template_fields: Sequence[str] = ("experiment_name",)
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#c7e8f5"

    def __init__(self, *, hyperparameter_sampling: ParameterSampling, primary_metric_name: str,
                 primary_metric_goal: PrimaryMetricGoal | str, max_total_runs: int | None = None,
                 policy: EarlyTerminationPolicy | None = None, experiment_name: str | None = None,
                 tracking_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hyperparameter_sampling = hyperparameter_sampling
        self.primary_metric_name = primary_metric_name
        self.primary_metric_goal = primary_metric_goal
        self.max_total_runs = max_total_runs
        self.policy = policy
        self.experiment_name = experiment_name
        self.tracking_conn_id = tracking_conn_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        ti = context["ti"]
        try:
            hook = MLflowTrackingHook(self.tracking_conn_id)
            experiment = Experiment(self.experiment_name or ti.dag_id, tracking_uri=hook.configure_process())
            trials = plan_sweep(experiment, self.hyperparameter_sampling, self.primary_metric_name,
                                self.primary_metric_goal, self.max_total_runs, self.policy,
                                run_key=task_run_key(ti), run_name=task_run_name(ti, sweep=True),
                                tags={"airflow.dag_id": ti.dag_id, "airflow.task_id": ti.task_id,
                                      "airflow.run_id": ti.run_id})
        except TrainingRunError as exc:
            raise_for_airflow(exc)
        self.log.info("Sweep %s planned %d trials", trials[0]["parent_run_id"] if trials else "-", len(trials))
        if trials:
            link_run(ti, experiment, str(trials[0]["parent_run_id"]), "MLflow sweep run", self.log)
        return trials


class SelectBestTrialOperator(BaseOperator):
    """Record the best trial of a planned sweep on its parent run, end the sweep, return the best.

    Runs once every trial task is done, whatever their states (``trigger_rule="all_done"`` by
    default: early-terminated trials are skipped tasks, failed trials failed ones).

    :param sweep_trials: the planning task's result (``plan.output``), or a parent run id.
    :param tracking_conn_id: an ``mlflow`` connection; default ``MLFLOW_TRACKING_URI`` or the embedded store.
    """

    template_fields: Sequence[str] = ("sweep_trials",)
    ui_color = "#c7e8f5"

    def __init__(self, *, sweep_trials: Any, tracking_conn_id: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.sweep_trials = sweep_trials
        self.tracking_conn_id = tracking_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException

        trials = list(self.sweep_trials) if not isinstance(self.sweep_trials, str) else []
        if not trials and not isinstance(self.sweep_trials, str):
            raise AirflowException("sweep_trials is empty: the planning task planned no trial")
        try:
            return self._select_best(trials)
        except TrainingRunError as exc:
            raise_for_airflow(exc)

    def _select_best(self, trials: list[dict[str, Any]]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException

        tracking_uri = MLflowTrackingHook(self.tracking_conn_id).configure_process()
        if isinstance(self.sweep_trials, str):
            experiment_name, parent = None, self.sweep_trials
        else:
            experiment_name, parent = trials[0]["experiment_name"], trials[0]["parent_run_id"]
        experiment = Experiment(experiment_name or _experiment_of(tracking_uri, parent), tracking_uri=tracking_uri)
        result = finish_sweep(experiment, parent)
        for trial in result["trials"]:
            self.log.info("Trial %d %s: %s -> best %s = %s", trial["trial_index"], trial["status"],
                          trial["hyperparameters"], result["primary_metric_name"], trial["best_primary_metric"])
        if result["status"] != RunState.COMPLETED.value:
            raise AirflowException(f"Sweep {parent} ended {result['status']}: no trial completed")
        return result


def _experiment_of(tracking_uri: str, run_id: str) -> str:
    from airflow_provider.core.tracking import Tracker

    tracker = Tracker(tracking_uri)
    tracker.check_reachable()
    return str(tracker.client.get_experiment(tracker.get_run(run_id).info.experiment_id).name)
