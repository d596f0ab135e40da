"""``SubmitTrainingRunOperator``: one DAG task submits one training run and waits for it.

The operator owns the lifecycle; hooks only turn connections into targets. Everything is
validated in ``execute()`` (never at DAG parse time, where templated fields are still raw Jinja).
The run key (dag_id, task_id, run_id, map_index) leaves out the try number, so a retried try
reattaches to a job that outlived its worker, or collects a result that is already there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider.core.config import ScriptRunConfig
from airflow_provider.core.data.bindings import Input, Output
from airflow_provider.core.data.credentials import remember_inline, resolved_for_environment
from airflow_provider.core.data.outputs import outputs_to_dict
from airflow_provider.core.distributed import DistributedConfig
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError, TrainingRunError
from airflow_provider.core.finalizer import finalize_in_background
from airflow_provider.core.hyperdrive.early_termination import TrialMonitor
from airflow_provider.core.hyperdrive.settings import trial_arguments, trial_run_config
from airflow_provider.core.hyperdrive.sweep import TrialPlan
from airflow_provider.core.resources import Resources
from airflow_provider.core.run_history import SYSTEM_METRICS_PREFIX
from airflow_provider.core.script_run import ScriptRun
from airflow_provider.core.submit import Experiment
from airflow_provider.core.tracking import RunState, Tags
from airflow_provider.core.variables import validate_variables
from airflow_provider.hooks.compute import ComputeHook, compute_hook_for
from airflow_provider.hooks.data_connections import register_data_connections
from airflow_provider.hooks.mlflow import MLflowTrackingHook
from airflow_provider.links import MLflowRunLink, link_run, mlflow_run_url
from airflow_provider.operators.data_lineage import (
    DataPlaceholders,
    LineageMixin,
    announce_outputs,
    data_assets,
    data_secret_values,
)
from airflow_provider.operators.task_runs import raise_for_airflow, task_run_key, task_run_name, trial_run_name
from airflow_provider.redaction import Redactor, register_with_airflow
from airflow_provider.run_reference import RunReference

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["SubmitTrainingRunOperator"]

OUTPUT_PREFIX = "[run] "
DEFAULT_DEFER_AFTER_SECONDS = 5.0
"""How long a deferrable task watches its run before deferring, by default."""
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE|CREDENTIAL|AUTH)", re.IGNORECASE)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


TRIAL_LABEL = "training_trial_label"
"""The context variable holding a mapped sweep trial's label (``trial 3: lr=0.05, epochs=10``): its
name in Airflow's grid, unless the DAG sets its own ``map_index_template`` (which may use it)."""


class SubmitTrainingRunOperator(LineageMixin, BaseOperator):
    """Submit a training run (Azure ML v1's ``ScriptRunConfig`` + ``Experiment.submit``) and wait for it.

    :param source_directory: folder snapshotted and sent to the target. (templated)
    :param script: Python file to run, relative to ``source_directory``. (templated)
    :param command: command line instead of a script, a list or a shell string. (templated)
    :param arguments: arguments; numbers are rendered as strings. (templated)
    :param compute_target: ``"local"``, an Airflow connection id of a training target, or a hook.
    :param environment: an :class:`Environment`, a registered ``"name[:version]"``, a dict, or None
        for the worker's interpreter.
    :param distributed_job_config: an MPI, PyTorch or TensorFlow configuration.
    :param max_run_duration_seconds: stop the run (Failed) after this many seconds.
    :param environment_variables: variables for the run's process. (templated)
    :param secret_environment_variables: variables whose values are masked in logs and never
        recorded in MLflow. (templated)
    :param experiment_name: the MLflow experiment; default the DAG id. (templated)
    :param tracking_conn_id: an ``mlflow`` connection; default ``MLFLOW_TRACKING_URI`` or the
        embedded store under ``$AIRFLOW_HOME/training_runs``.
    :param tags: extra MLflow tags. (templated)
    :param deferrable: release the worker slot while the run goes on; a trigger watches it.
    :param defer_after_seconds: with ``deferrable``, watch the run from the worker this long before
        deferring: a run that ends sooner never defers (deferring costs a trigger, a second start
        of the task and, under a scheduler, a wait of up to 10 s after the run ends). 0 defers at once.
    :param poll_interval: seconds between polls of the target.
    :param reattach_on_retry: False starts every try afresh instead of reattaching.
    :param sweep_trial: one planned trial of a sweep (an item of ``PlanHyperparameterSweepOperator``'s
        result, usually mapped: ``.expand(sweep_trial=plan.output)``). Its hyperparameters override
        the same flags in ``arguments``, the run becomes a child of the sweep's parent run, its
        watcher applies the sweep's early termination policy, and a trial the policy stops ends
        the task as skipped.
    :param azureml_compat: run an unchanged Azure ML v1 script (``from azureml.core import Run``)
        with the provider's compatibility layer; see ``docs/migrating-from-azureml-v1.md``.
    :param compute_resources: what the run asks the target for (``ScriptRunConfig.resources``): a
        ``Resources`` or a dict of its fields (``{"gpus": 1, "memory_gb": 16}``); a target that
        cannot honour a field fails the task before any compute is used. Not ``resources``: that
        name is ``BaseOperator``'s, the executor's resources for the task itself. (templated)
    :param inputs: data the run reads, ``{name: Input(uri, mode=..., connection=...)}``; URIs are
        templated (``s3://bucket/{{ ds }}/``), ``${{inputs.<name>}}`` in ``arguments`` becomes the
        path on the target, and each input is an inlet of the task (an ``Asset``). (templated)
    :param outputs: folders the run writes, ``{name: Output(uri, ...)}``, copied to their URI when
        the run ends; each is an outlet of the task: an ``Asset`` for a fixed URI, else an event of
        the ``AssetAlias`` ``training-output:<dag>.<task>.<name>``. (templated)
    :param system_metrics_interval_seconds: how often CPU, memory, disk, network and the run's GPUs
        are sampled on each of its nodes, as MLflow's ``system/...`` metrics (default 10, or
        ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``; 0: none).
    """

    template_fields: Sequence[str] = (
        "source_directory",
        "script",
        "command",
        "arguments",
        "experiment_name",
        "tags",
        "environment_variables",
        "secret_environment_variables",
        "compute_resources",
        "inputs",
        "outputs",
    )
    template_fields_renderers = {"tags": "json", "environment_variables": "json", "arguments": "py",
                                 "compute_resources": "json"}
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#d5f0e3"

    def __init__(
        self,
        *,
        source_directory: str,
        script: str | None = None,
        command: str | list[Any] | None = None,
        arguments: list[Any] | None = None,
        compute_target: str | ComputeHook = "local",
        environment: Environment | str | dict[str, Any] | None = None,
        distributed_job_config: DistributedConfig | None = None,
        max_run_duration_seconds: float | None = None,
        environment_variables: dict[str, str] | None = None,
        secret_environment_variables: dict[str, str] | None = None,
        experiment_name: str | None = None,
        tracking_conn_id: str | None = None,
        tags: dict[str, str] | None = None,
        deferrable: bool = False,
        defer_after_seconds: float = DEFAULT_DEFER_AFTER_SECONDS,
        poll_interval: float = 5.0,
        reattach_on_retry: bool = True,
        sweep_trial: dict[str, Any] | None = None,
        azureml_compat: bool = False,
        compute_resources: Resources | dict[str, Any] | None = None,
        inputs: dict[str, Input | str] | None = None,
        outputs: dict[str, Output | str] | None = None,
        system_metrics_interval_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # after the base class: the task id is final (a task group's prefix) and the DAG is known
        inlets, outlets = data_assets(inputs, outputs, self.task_id, self.dag if self.has_dag() else None)
        given = {getattr(item, "uri", None) for item in [*_as_list(self.inlets), *_as_list(self.outlets)]}
        # an asset the DAG author declared for the same URI (maybe under another name) is kept as given
        self.inlets = [*_as_list(self.inlets), *(item for item in inlets if item.uri not in given)]
        self.outlets = [*_as_list(self.outlets), *(item for item in outlets if getattr(item, "uri", None) not in given)]
        self.inputs = inputs
        self.outputs = outputs
        self._data_uris: dict[str, list[str]] = {"inputs": [], "outputs": []}
        self.source_directory = source_directory
        self.script = script
        self.command = command
        self.arguments = arguments
        self.compute_target = compute_target
        self.environment = environment
        self.distributed_job_config = distributed_job_config
        self.max_run_duration_seconds = max_run_duration_seconds
        self.system_metrics_interval_seconds = system_metrics_interval_seconds
        self.compute_resources = (compute_resources.to_dict() if isinstance(compute_resources, Resources)
                                  else compute_resources)
        self.environment_variables = environment_variables
        self.secret_environment_variables = secret_environment_variables
        self.experiment_name = experiment_name
        self.tracking_conn_id = tracking_conn_id
        self.tags = tags
        self.deferrable = deferrable
        self.defer_after_seconds = defer_after_seconds
        self.poll_interval = poll_interval
        self.reattach_on_retry = reattach_on_retry
        self.sweep_trial = sweep_trial
        self.azureml_compat = azureml_compat
        self._run: ScriptRun | None = None
        self._reference: RunReference | None = None
        self._credentials: dict[str, str] = {}
        self._killed = False
        self._redact = Redactor(())

    @classmethod
    def from_yaml(cls, task_id: str, path: str | os.PathLike[str], *, overrides: dict[str, Any] | None = None,
                  entry_point: str | None = None, **kwargs: Any) -> SubmitTrainingRunOperator:
        """The task of a job file: an Azure ML v2 command job YAML or an MLflow ``MLproject`` (the
        format of ``training-runs submit``; ``docs/job-yaml.md``), read and checked when the DAG file
        is parsed, so a broken job file is an import error naming every problem with its line.

        The file gives what to run, the environment, inputs and outputs, distribution, resources,
        time limit, experiment, tags and ``compute`` (an Airflow connection id, or ``local``);
        ``kwargs`` are the operator's other parameters and win over the file (``compute_target``,
        ``tracking_conn_id``, ``deferrable``, ``retries``, ...).

        :param task_id: the task's id.
        :param path: the job file (relative paths in it are relative to its folder).
        :param overrides: fields to set, by dotted path (``{"inputs.epochs": 5}``), or an MLproject's
            parameter values.
        :param entry_point: the MLproject entry point (default ``main``).
        :raises ConfigurationError: the file has problems (all listed), or is a sweep job (use
            :class:`~airflow_provider.operators.hyperparameter_sweep.HyperparameterSweepOperator`).
        """
        from airflow_provider.core.job_spec import load_job

        job = load_job(path, overrides=overrides, entry_point=entry_point)
        if job.kind == "sweep":
            raise ConfigurationError("path", f"{job.source_path} is a sweep job.",
                                     "build its trials' run with a command job file, and sweep it with "
                                     "HyperparameterSweepOperator.")
        if job.run.copied_variables and "secret_environment_variables" not in kwargs:
            raise ConfigurationError("docker_env.environment", f"{job.source_path} copies "
                                     f"{', '.join(job.run.copied_variables)} from the submitting process, which a "
                                     "DAG file must not capture when it is parsed.",
                                     "pass them with secret_environment_variables= (from an Airflow connection or "
                                     "variable, templated).")
        config = job.script_run_config(kwargs.pop("compute_target", None))
        arguments: dict[str, Any] = {
            "source_directory": str(config.source_directory), "script": config.script and str(config.script),
            "command": config.command, "arguments": config.arguments, "compute_target": config.compute_target,
            "environment": config.environment, "distributed_job_config": config.distributed_job_config,
            "max_run_duration_seconds": config.max_run_duration_seconds,
            "environment_variables": config.environment_variables, "azureml_compat": config.azureml_compat,
            "compute_resources": config.resources, "inputs": config.inputs, "outputs": config.outputs,
            "experiment_name": job.experiment_name, "tags": job.run_tags(),
        }
        arguments.update(kwargs)
        return cls(task_id=task_id, **arguments)

    # ------------------------------------------------------------------ hooks (built lazily)
    @cached_property
    def compute_hook(self) -> ComputeHook:
        """The hook of ``compute_target``."""
        return compute_hook_for(self.compute_target)

    @cached_property
    def tracking_hook(self) -> MLflowTrackingHook:
        """The MLflow tracking hook."""
        return MLflowTrackingHook(self.tracking_conn_id)

    # ------------------------------------------------------------------ execution
    def _do_render_template_fields(self, parent: Any, template_fields: Iterable[str], context: Context,
                                   jinja_env: Any, seen_oids: set[int]) -> None:
        """Render as Airflow does, with ``${{inputs.<name>}}`` / ``${{outputs.<name>}}`` left for
        the run (Jinja would otherwise fail on ``inputs`` being undefined); a mapped sweep trial's
        arguments carry its values (what Rendered Templates shows) and it gets its label in the grid.
        (Airflow calls this for a task and, unmapped, for each task of a mapped one.)"""
        if parent is not self:  # a nested templated object
            super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
            return
        context.setdefault("inputs", DataPlaceholders("inputs"))  # type: ignore[typeddict-item]
        context.setdefault("outputs", DataPlaceholders("outputs"))  # type: ignore[typeddict-item]
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
        if self.sweep_trial is not None:
            trial = TrialPlan.from_dict(self.sweep_trial)
            self.arguments = trial_arguments(self.arguments, trial.hyperparameters)
            values = ", ".join(f"{str(name).lstrip('-')}={value}" for name, value in trial.hyperparameters.items())
            context[TRIAL_LABEL] = f"trial {trial.trial_index}: {values}"  # type: ignore[literal-required]
            if context.get("map_index_template") is None:  # the grid shows each trial's values
                context["map_index_template"] = "{{ " + TRIAL_LABEL + " }}"

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            return self._submit_and_watch(context)
        except TrainingRunError as exc:
            raise_for_airflow(exc)  # a bad configuration fails at once; a transient error is retried

    def _submit_and_watch(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        trial = None if self.sweep_trial is None else TrialPlan.from_dict(self.sweep_trial)
        experiment = self._experiment(context, trial)
        config, secrets = self._run_config()
        if trial is not None:
            config = trial_run_config(config, trial.hyperparameters)
        tags = {
            **self._string_tags(),
            **(trial.tags() if trial is not None else {}),
            "airflow.dag_id": ti.dag_id,
            "airflow.task_id": ti.task_id,
            "airflow.run_id": ti.run_id,
            "airflow.map_index": str(ti.map_index),
            "airflow.try_number": str(ti.try_number),
        }
        run_name = task_run_name(ti) if trial is None else trial_run_name(experiment, trial)
        run = experiment.submit(config, tags, run_key=task_run_key(ti), reattach=self.reattach_on_retry,
                                run_name=run_name, secret_variables=secrets,
                                params=trial.params() if trial is not None else None)
        if trial is not None:
            run.monitor_factory = TrialMonitor.from_tags  # its watcher (or trigger) applies the sweep's policy
        self._remember_output_options(run.id)  # a reattached run was staged by another try
        self._run = run
        if self._killed:  # on_kill came while submitting, before there was a run to cancel
            self.on_kill()
            raise RuntimeError(f"the task was killed while submitting training run {run.id}; it was canceled")
        if run.handle is not None:
            self._reference = RunReference(run.id, experiment.name, experiment.tracking_uri, self.tracking_conn_id,
                                           self.compute_hook.target_reference, run.handle.to_dict(),
                                           sweep_trial=trial is not None,
                                           outputs=None if run.outputs is None else outputs_to_dict(run.outputs))
        self.log.info("Training run %s submitted to %s (experiment %r, tracking %s)", run.id,
                      self.compute_hook.target_reference, experiment.name, experiment.tracking_uri)
        link_run(ti, experiment, run.id, "MLflow run", self.log)
        if self.deferrable and self._reference is not None and not RunState(run.get_status()).is_terminal:
            log_offset = run.watch_for(float(self.defer_after_seconds), output=self._log_output,
                                       poll_interval=self.poll_interval)
            if log_offset is not None:
                from airflow_provider.triggers.training_run import TrainingRunTrigger

                self.defer(
                    trigger=TrainingRunTrigger(self._reference.to_dict(), poll_interval=self.poll_interval,
                                               log_offset=log_offset, secrets=self._secret_values()),
                    method_name="execute_complete",
                )
        details = run.wait_for_completion(output=self._log_output, raise_on_error=False,
                                          poll_interval=self.poll_interval)
        return self._result(run, details, experiment, context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger saw the job end: finalize the run and return its result.

        :param context: the task context.
        :param event: the trigger's event (run reference, log offset, status).
        """
        try:
            return self._resume(event, context)
        except TrainingRunError as exc:
            raise_for_airflow(exc)

    def _resume(self, event: dict[str, Any], context: Context) -> dict[str, Any]:
        self._reference = RunReference.from_dict(event["reference"])
        run = self._reference.script_run()
        self._credentials = self.tracking_hook.get_credentials()
        register_data_connections()
        self._remember_output_options(run.id)
        self._protect_secrets()
        experiment = run.experiment
        self._run = run
        if event.get("status") == "error":
            self.log.error("The trigger watching run %s failed: %s", run.id, self._redact(str(event.get("message"))))
        details = run.wait_for_completion(output=self._log_output, raise_on_error=False,
                                          poll_interval=self.poll_interval,
                                          log_offset=int(event.get("log_offset", 0)))
        return self._result(run, details, experiment, context)

    def on_kill(self) -> None:
        """Stop the run's whole process tree when Airflow kills the task; the run ends Canceled.

        Airflow SIGKILLs the task a few seconds after calling this, so the job is only asked to
        stop here, and a detached finalizer records the run's outputs, logs and final state.
        """
        self._killed = True
        if self._run is None or self._run.handle is None:
            return  # nothing launched yet: execute() cancels the run as soon as submit returns
        self.log.info("Task killed: canceling training run %s", self._run.id)
        self._run.cancel(wait=False)
        finalize_in_background(self._run, self._finalizer_environment())

    def _finalizer_environment(self) -> dict[str, str]:
        """What a detached finalizer needs in its environment: the tracking credentials, and those of
        the outputs' connections (it copies the outputs without Airflow)."""
        output_connections = {output.connection: _scheme(output) for output in self._bindings()
                              if isinstance(output, Output) and output.connection}
        return {**self._credentials, **resolved_for_environment(output_connections)}

    # ------------------------------------------------------------------ helpers
    def _experiment(self, context: Context, trial: TrialPlan | None = None) -> Experiment:
        tracking_uri = self.tracking_hook.configure_process()
        self._credentials = self.tracking_hook.get_credentials()
        name = self.experiment_name or (trial.experiment_name if trial else None) or context["ti"].dag_id
        if trial is not None and name != trial.experiment_name:
            raise ConfigurationError("experiment_name", f"{name!r} is not the sweep's experiment "
                                     f"{trial.experiment_name!r}; a trial must live beside its parent run.",
                                     "leave experiment_name unset on trial tasks (the sweep's is used).")
        return Experiment(name, tracking_uri=tracking_uri)

    def _run_config(self) -> tuple[ScriptRunConfig, dict[str, str]]:
        target = self.compute_hook.get_target()
        secrets = validate_variables(self.secret_environment_variables, "secret_environment_variables", secret=True)
        plain = validate_variables(self.environment_variables, "environment_variables")
        credentials = self.tracking_hook.get_credentials()
        self._credentials = credentials
        register_data_connections()
        self._protect_secrets()
        config = ScriptRunConfig(
            source_directory=self.source_directory,
            script=self.script,
            command=self.command,
            arguments=self.arguments,
            compute_target=target,
            environment=self.environment,
            distributed_job_config=self.distributed_job_config,
            max_run_duration_seconds=self.max_run_duration_seconds,
            environment_variables=plain,
            azureml_compat=self.azureml_compat,
            resources=self.compute_resources,
            inputs=self.inputs,
            outputs=self.outputs,
            system_metrics_interval_seconds=self.system_metrics_interval_seconds,
        )
        return config, {**secrets, **credentials}

    def _remember_output_options(self, run_id: str) -> None:
        """Storage options given on the outputs, for whoever copies them in this process."""
        for name, output in (self.outputs or {}).items():
            if isinstance(output, Output):
                remember_inline(run_id, name, output.storage_options)

    def _bindings(self) -> list[Input | Output]:
        found: list[Input | Output] = []
        for given in (self.inputs, self.outputs):
            found += [item for item in (given or {}).values() if isinstance(item, (Input, Output))]
        return found

    def _secret_values(self) -> list[str]:
        """Every value to hide: the secret variables, the tracking credentials, and plain variables
        whose names say they are secret."""
        values = [v for v in (self.secret_environment_variables or {}).values() if isinstance(v, str)]
        values += [v for v in self._credentials.values() if isinstance(v, str)]
        values += [v for k, v in (self.environment_variables or {}).items()
                   if isinstance(k, str) and isinstance(v, str) and _SECRET_NAME.search(k)]
        return values + data_secret_values(self._bindings())

    def _protect_secrets(self) -> None:
        """Mask every secret value in this task's log (whatever its variable's name) and in what
        the run's output and errors show."""
        values = self._secret_values()
        register_with_airflow(values)
        self._redact = Redactor(values)

    def _string_tags(self) -> dict[str, str]:
        if self.tags is None:
            return {}
        if not isinstance(self.tags, dict):
            raise ConfigurationError("tags", f"must be a dict, got {type(self.tags).__name__}.",
                                     'pass {"team": "search"}.')
        return {str(k): str(v) for k, v in self.tags.items()}

    def _log_output(self, line: str) -> None:
        self.log.info("%s%s", OUTPUT_PREFIX, self._redact(line))

    def _result(self, run: ScriptRun, details: dict[str, Any], experiment: Experiment,
                context: Context) -> dict[str, Any]:
        try:
            self._data_uris = announce_outputs(self, run, context)
        except Exception:  # the run's result stands; only the asset events' details are missing
            self.log.warning("Recording the outlet events of run %s failed", run.id, exc_info=True)
        if details["status"] != RunState.COMPLETED.value:
            from airflow.sdk.exceptions import AirflowException, AirflowSkipException

            error = details.get("error") or {}
            terminated = run.tracker.get_run(run.id).data.tags.get(Tags.SWEEP_TERMINATED)
            if details["status"] == RunState.CANCELED.value and terminated and self.sweep_trial is not None:
                raise AirflowSkipException(f"Trial run {run.id} was {terminated}")
            raise AirflowException(self._redact(
                f"Training run {run.id} ended {details['status']}: {error.get('message', 'unknown error')}\n"
                f"--- last lines of its log ---\n{error.get('logTail', '')}"
            ))
        final_metrics = {key: value for key, value in run.tracker.get_run(run.id).data.metrics.items()
                         if not key.startswith(SYSTEM_METRICS_PREFIX)}  # the script's own (system ones: MLflow)
        return {
            "run_id": run.id,
            "experiment_id": details["experimentId"],
            "status": details["status"],
            "metrics": final_metrics,
            "artifact_uri": details["artifactUri"],
            "tracking_url": mlflow_run_url(experiment.tracking_uri, details["experimentId"], run.id),
            "outputs": self._output_uris(run),
        }

    def _output_uris(self, run: ScriptRun) -> dict[str, str]:
        """Where each declared output was written: ``{name: URI}`` (as submitted: the run's tags
        are a record its script can rewrite)."""
        from airflow_provider.core.data.bindings import recordable_uri

        return {output.name: recordable_uri(output.uri) for output in run.outputs or ()}



def _scheme(output: Output) -> str:
    """The scheme of an output's URI as the credential resolver names it (``file`` for a local path)."""
    from airflow_provider.core.data.locations import parse_location

    try:
        return parse_location(str(output.uri), "outputs").scheme
    except ConfigurationError:
        return ""
