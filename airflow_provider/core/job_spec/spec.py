"""What a loaded job file describes: :class:`JobSpec` and its parts, and the core objects built from them.

Everything here is checked already (by the readers); the ``script_run_config`` /
``hyperdrive_config`` methods build fresh core objects on each call, so a caller may change the one
it gets without touching the spec.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from airflow_provider.core.config import ScriptRunConfig
from airflow_provider.core.data.bindings import Input, Output
from airflow_provider.core.distributed import DistributedConfig
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.hyperdrive.config import HyperDriveConfig
from airflow_provider.core.hyperdrive.parameter_expressions import ParameterExpression
from airflow_provider.core.hyperdrive.policies import EarlyTerminationPolicy
from airflow_provider.core.hyperdrive.sampling import (
    BayesianParameterSampling,
    GridParameterSampling,
    ParameterSampling,
    PrimaryMetricGoal,
    RandomParameterSampling,
)
from airflow_provider.core.paths import state_dir
from airflow_provider.core.resources import Resources

if TYPE_CHECKING:
    from airflow_provider.core.hyperdrive.run import HyperDriveRun
    from airflow_provider.core.script_run import ScriptRun
    from airflow_provider.core.submit import Experiment
    from airflow_provider.core.targets.base import ComputeTarget

__all__ = ["CommandSpec", "DataInput", "DataOutput", "JobKind", "JobSpec", "SweepSpec", "default_output_uri"]

JobKind = Literal["command", "sweep"]
SamplingKind = Literal["random", "grid", "bayesian"]
DESCRIPTION_TAG = "mlflow.note.content"
"""The tag MLflow shows as a run's description."""


def default_output_uri(name: str) -> str:
    """Where an output without ``path`` goes (Azure ML's default datastore, here): a folder of the
    submitting machine's state folder, ``<state>/outputs/{run_id}/<name>``.

    :param name: the output's name.
    """
    return str(state_dir() / "outputs" / "{run_id}" / name)


@dataclass(frozen=True)
class DataInput:
    """A data input of the job (``inputs.<name>`` with a ``path``).

    :param uri: an absolute local path or a URI.
    :param mode: the core's mode: ``download``, ``direct`` or ``mount``.
    :param connection: the Airflow connection with its credentials.
    :param max_size_mb: refuse a larger ``download`` input.
    """

    uri: str
    mode: str = "download"
    connection: str | None = None
    max_size_mb: float | None = None

    def build(self) -> Input:
        """A new core :class:`~airflow_provider.core.data.bindings.Input`."""
        return Input(self.uri, mode=self.mode, connection=self.connection, max_size_mb=self.max_size_mb)


@dataclass(frozen=True)
class DataOutput:
    """A data output of the job (``outputs.<name>``).

    :param uri: a local path or URI (``{run_id}`` and ``{name}`` filled in by the core); None: the
        default, :func:`default_output_uri`.
    :param mode: the core's mode: ``upload`` or ``direct``.
    :param connection: the Airflow connection with its credentials.
    :param overwrite: replace what another run wrote there.
    """

    uri: str | None
    mode: str = "upload"
    connection: str | None = None
    overwrite: bool = False

    def build(self, name: str) -> Output:
        """A new core :class:`~airflow_provider.core.data.bindings.Output`.

        :param name: the output's name (for the default URI).
        """
        uri = self.uri if self.uri is not None else default_output_uri(name)
        return Output(uri, mode=self.mode, connection=self.connection, overwrite=self.overwrite)


@dataclass(frozen=True)
class CommandSpec:
    """One run as the file describes it (a command job, a sweep's trial, an MLproject entry point).

    :param source_directory: the ``code`` folder (absolute).
    :param script: the Python script, relative to ``source_directory``, when the command is
        ``python <script>.py ...``; else None.
    :param command: the command line run by ``/bin/sh -c`` when it is not a plain Python script.
    :param arguments: the script's arguments (``${{inputs.x}}`` / ``${{outputs.x}}`` kept for the core).
    :param environment: an :class:`Environment` built from an inline definition, a registered or
        curated ``"name"`` / ``"name:version"``, or None for the worker's interpreter.
    :param environment_variables: variables for the run's process.
    :param distribution: the MPI, PyTorch or TensorFlow configuration.
    :param resources: what the run asks its target for.
    :param timeout_seconds: ``limits.timeout``: the run's longest duration.
    :param inputs: data inputs by name.
    :param outputs: outputs by name.
    """

    source_directory: Path
    script: str | None = None
    command: str | None = None
    arguments: tuple[str, ...] = ()
    environment: Environment | str | None = None
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    copied_variables: tuple[str, ...] = ()
    distribution: DistributedConfig | None = None
    resources: Resources | None = None
    timeout_seconds: float | None = None
    inputs: Mapping[str, DataInput] = field(default_factory=dict)
    outputs: Mapping[str, DataOutput] = field(default_factory=dict)

    def script_run_config(self, compute_target: str | ComputeTarget = "local") -> ScriptRunConfig:
        """A new :class:`ScriptRunConfig` for this run.

        :param compute_target: the target's name or object.
        """
        environment = copy.deepcopy(self.environment) if isinstance(self.environment, Environment) \
            else self.environment
        return ScriptRunConfig(
            source_directory=str(self.source_directory),
            script=self.script,
            command=self.command,
            arguments=list(self.arguments),
            compute_target=compute_target,
            environment=environment,
            distributed_job_config=self.distribution,
            max_run_duration_seconds=self.timeout_seconds,
            environment_variables=dict(self.environment_variables) or None,
            resources=self.resources,
            inputs={name: spec.build() for name, spec in self.inputs.items()} or None,
            outputs={name: spec.build(name) for name, spec in self.outputs.items()} or None,
        )


@dataclass(frozen=True)
class SweepSpec:
    """The sweep part of a ``type: sweep`` job.

    :param sampling: ``random``, ``grid`` or ``bayesian``.
    :param parameter_space: argument flag (``--lr``) -> parameter expression.
    :param seed: the sampling's seed (random and Bayesian), or None.
    :param primary_metric: ``objective.primary_metric``.
    :param goal: ``objective.goal``.
    :param max_total_trials: ``limits.max_total_trials``.
    :param max_concurrent_trials: ``limits.max_concurrent_trials``.
    :param timeout_seconds: ``limits.timeout``: the whole sweep's longest duration.
    :param policy: ``early_termination``, or None.
    """

    sampling: SamplingKind
    parameter_space: Mapping[str, ParameterExpression]
    primary_metric: str
    goal: PrimaryMetricGoal
    seed: int | None = None
    max_total_trials: int | None = None
    max_concurrent_trials: int | None = None
    timeout_seconds: float | None = None
    policy: EarlyTerminationPolicy | None = None

    def parameter_sampling(self) -> ParameterSampling:
        """A new sampling object of the core."""
        space = dict(self.parameter_space)
        if self.sampling == "grid":
            return GridParameterSampling(space)
        if self.sampling == "bayesian":
            return BayesianParameterSampling(space, seed=self.seed)
        return RandomParameterSampling(space, seed=self.seed)

    def hyperdrive_config(self, run_config: ScriptRunConfig) -> HyperDriveConfig:
        """A new :class:`HyperDriveConfig` sweeping ``run_config``.

        :param run_config: what each trial runs.
        """
        return HyperDriveConfig(
            run_config=run_config,
            hyperparameter_sampling=self.parameter_sampling(),
            primary_metric_name=self.primary_metric,
            primary_metric_goal=self.goal,
            max_total_runs=self.max_total_trials,
            max_concurrent_runs=self.max_concurrent_trials,
            max_duration_minutes=None if self.timeout_seconds is None else self.timeout_seconds / 60,
            policy=self.policy,
        )


@dataclass(frozen=True)
class JobSpec:
    """A job file, loaded and checked (:func:`~airflow_provider.core.job_spec.load_job`).

    :param kind: ``"command"`` (one run; MLproject entry points too) or ``"sweep"``.
    :param source_path: the job file (absolute).
    :param experiment_name: ``experiment_name``, else the MLproject's name, else the job file's folder name.
    :param run: the run (for a sweep: what each trial runs, before its sampled values).
    :param run_name: ``display_name``, else ``name``, else None (MLflow names the run).
    :param description: ``description``.
    :param tags: ``tags``, as strings.
    :param compute: ``compute`` without an ``azureml:`` prefix: a target name or Airflow connection
        id the caller maps to a target; None when the file names none.
    :param sweep: the sweep settings of a ``type: sweep`` job, else None.
    :param entry_point: the MLproject entry point run, else None.
    :param parameters: the MLproject entry point's parameter values (defaults and overrides), as
        ``mlflow run`` logs them; empty for other jobs.
    """

    kind: JobKind
    source_path: Path
    experiment_name: str
    run: CommandSpec
    run_name: str | None = None
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    compute: str | None = None
    sweep: SweepSpec | None = None
    entry_point: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)

    def target(self, compute_target: str | ComputeTarget | None = None) -> str | ComputeTarget:
        """The compute target a built config gets: ``compute_target``, else :attr:`compute`, else ``"local"``.

        :param compute_target: the caller's target (e.g. mapped from :attr:`compute`).
        """
        if compute_target is not None:
            return compute_target
        return self.compute or "local"

    def script_run_config(self, compute_target: str | ComputeTarget | None = None) -> ScriptRunConfig:
        """A new :class:`ScriptRunConfig` for the job (for a sweep: the trials' base config, whose
        ``${{search_space.*}}`` arguments each trial replaces with its sampled values).

        :param compute_target: the target's name or object; default :attr:`compute`, else ``"local"``.
        """
        return self.run.script_run_config(self.target(compute_target))

    def hyperdrive_config(self, compute_target: str | ComputeTarget | None = None) -> HyperDriveConfig:
        """A new :class:`HyperDriveConfig` for a ``type: sweep`` job.

        :param compute_target: where the trials run; default :attr:`compute`, else ``"local"``.
        :raises ConfigurationError: the job is not a sweep.
        """
        if self.sweep is None:
            raise ConfigurationError("job.type", f"{self.source_path} is a {self.kind} job, not a sweep.",
                                     "call script_run_config(), or write type: sweep in the file.")
        return self.sweep.hyperdrive_config(self.script_run_config(compute_target))

    def run_tags(self, tags: Mapping[str, str] | None = None) -> dict[str, str]:
        """The tags a submitted run gets: the file's, its description (MLflow's ``mlflow.note.content``)
        and the caller's ``tags`` (which win).

        :param tags: extra tags.
        """
        merged = dict(self.tags)
        if self.description:
            merged[DESCRIPTION_TAG] = self.description
        merged.update(tags or {})
        return merged

    def secret_variables(self) -> dict[str, str]:
        """The variables the job copies from the submitting process's environment (an MLproject's
        ``docker_env.environment: [NAME]``), read now: they go to the run as secret variables (its
        process's environment, never MLflow).

        :raises ConfigurationError: one of them is not set here.
        """
        missing = [name for name in self.run.copied_variables if name not in os.environ]
        if missing:
            raise ConfigurationError("docker_env.environment", f"copies {', '.join(missing)} from this process's "
                                     "environment, where it is not set.",
                                     f"set {', '.join(missing)} before submitting, or write [NAME, value] in the file.")
        return {name: os.environ[name] for name in self.run.copied_variables}

    def submit(self, experiment: Experiment | None = None, *, compute_target: str | ComputeTarget | None = None,
               tracking_uri: str | None = None, tags: Mapping[str, str] | None = None,
               run_key: str | None = None) -> ScriptRun | HyperDriveRun:
        """Submit the job: :meth:`Experiment.submit` of :meth:`script_run_config` (or, for a sweep,
        :meth:`hyperdrive_config`) with the file's run name and tags, and an MLproject's parameters
        as the run's MLflow params.

        :param experiment: where the run goes; default ``Experiment(experiment_name, tracking_uri)``.
        :param compute_target: where it runs; default :attr:`compute`, else ``"local"``.
        :param tracking_uri: the MLflow tracking URI of the default experiment.
        :param tags: extra tags.
        :param run_key: see :meth:`Experiment.submit`.
        """
        from airflow_provider.core.submit import Experiment

        target = experiment if experiment is not None else Experiment(self.experiment_name, tracking_uri)
        if self.sweep is not None:
            return target.submit(self.hyperdrive_config(compute_target), self.run_tags(tags), run_key=run_key,
                                 run_name=self.run_name)
        return target.submit(self.script_run_config(compute_target), self.run_tags(tags), run_key=run_key,
                             run_name=self.run_name, params=dict(self.parameters) or None,
                             secret_variables=self.secret_variables() or None)
