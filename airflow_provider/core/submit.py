"""``Experiment.submit``: the one lifecycle every target goes through.

Validate -> find or create the MLflow run (reattach by run key) -> snapshot and git state ->
prepare the environment -> stage -> launch detached -> (``ScriptRun``) watch -> finalize.
Each step is recorded as the run's detailed state (Queued, Preparing, Starting, Running,
Finalizing, Completed | Failed | Canceled).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from airflow_provider.core import run_listing
from airflow_provider.core.azureml_compat import azureml_variables, expand_arguments
from airflow_provider.core.background import OrderedWrites
from airflow_provider.core.bookkeeping import job_record
from airflow_provider.core.config import ResolvedRunConfig, ScriptRunConfig
from airflow_provider.core.data.inputs import INPUTS_DIR
from airflow_provider.core.data.job_credentials import check_not_set_by_caller
from airflow_provider.core.data.outputs import OUTPUTS_DIR, DeclaredOutput
from airflow_provider.core.data.run_data import RunData, claim_outputs, expand_placeholders, plan_run_data
from airflow_provider.core.environments.locking import redact
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.shared_locks import shared_locks_for, sharing_locks
from airflow_provider.core.errors import (
    ConfigurationError,
    EnvironmentBuildError,
)
from airflow_provider.core.git import read_git_state
from airflow_provider.core.run_definition import (
    DEFINITION_ARTIFACT,
    DEFINITION_TAG,
    definition_record,
    distribution_tags,
    run_definition,
)
from airflow_provider.core.script_run import ScriptRun
from airflow_provider.core.snapshot import Snapshot, SnapshotStore
from airflow_provider.core.targets import resolve_target
from airflow_provider.core.targets.base import ComputeTarget, JobHandle, JobSpec
from airflow_provider.core.tracking import RunState, Tags, Tracker
from airflow_provider.core.variables import validate_variables
from airflow_provider.runtime import COMPAT_PATH_DIR, RUNTIME_DIR, job_files, rank_launcher
from airflow_provider.runtime import events as events_module
from airflow_provider.runtime.job_runner import RANKS_DIR

if TYPE_CHECKING:
    from mlflow.entities import Experiment as MlflowExperiment
    from mlflow.entities import Run as MlflowRun

    from airflow_provider.core.hyperdrive.run import HyperDriveRun

__all__ = ["Experiment", "ScriptRun", "StagedRun", "Submittable"]

RunT = TypeVar("RunT", covariant=True)


class Submittable(Protocol[RunT]):
    """A configuration :meth:`Experiment.submit` accepts: it knows how to submit itself."""

    def submit_to(self, experiment: Experiment, tags: dict[str, str] | None, *, run_key: str | None,
                  reattach: bool, run_name: str | None, secret_variables: dict[str, str] | None,
                  params: dict[str, str] | None) -> RunT:
        """Start this configuration's run(s) in ``experiment`` (see :meth:`Experiment.submit`)."""

log = logging.getLogger(__name__)



class Experiment:
    """A named group of runs: an MLflow experiment (Azure ML v1's ``Experiment``).

    :param name: the experiment's name (created in MLflow when missing).
    :param tracking_uri: MLflow tracking URI; default ``MLFLOW_TRACKING_URI``, else the embedded store.
    """

    def __init__(self, name: str, tracking_uri: str | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("Experiment.name", f"must be a non-empty string, got {name!r}.",
                                     'pass a name such as "churn-model".')
        self.name = name
        self.tracker = Tracker(tracking_uri)
        self._id: str | None = None
        self.archived = False
        """Whether the experiment was archived when :meth:`list` found it."""

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI runs of this experiment go to."""
        return self.tracker.tracking_uri

    @property
    def id(self) -> str:
        """The MLflow experiment id (the experiment is created on first use).

        :raises ConfigurationError: the experiment is archived (reactivate it first), or deleted in MLflow.
        """
        if self._id is None:
            found = self.tracker.client.get_experiment_by_name(self.name)
            if found is not None and run_listing.is_archived(found):
                raise ConfigurationError("Experiment.name", f"experiment {self.name!r} is archived.",
                                         f"reactivate it (Experiment({self.name!r}).reactivate(), or "
                                         f"`training-runs archive --undo {self.name}`), or use another name.")
            if found is not None and found.lifecycle_stage == "deleted":
                raise ConfigurationError("Experiment.name", f"experiment {self.name!r} was deleted in MLflow.",
                                         f"restore it (`mlflow experiments restore --experiment-id "
                                         f"{found.experiment_id}`), or use another name.")
            self._id = str(found.experiment_id) if found is not None else self.tracker.experiment_id(self.name)
        return self._id

    # ------------------------------------------------------------------ finding runs again, archiving
    @classmethod
    def list(cls, experiment_name: str | None = None, view_type: str = "ActiveOnly",
             tags: dict[str, str] | None = None, tracking_uri: str | None = None) -> list[Experiment]:
        """The experiments of the tracking store, by name (Azure ML v1's ``Experiment.list``).

        :param experiment_name: only the experiment of this name.
        :param view_type: ``"ActiveOnly"`` (default), ``"ArchivedOnly"`` or ``"All"``.
        :param tags: only experiments with these tags and values.
        :param tracking_uri: MLflow tracking URI; default ``MLFLOW_TRACKING_URI``, else the embedded store.
        """
        view = run_listing.view_type(view_type, "Experiment.list.view_type")
        tracker = Tracker(tracking_uri)
        found = []
        for experiment in run_listing.experiments(tracker, view, experiment_name, tags):
            handle = cls(experiment.name, tracking_uri)
            handle.tracker = tracker
            handle.archived = run_listing.is_archived(experiment)
            if not handle.archived:  # an archived one is checked again when used
                handle._id = str(experiment.experiment_id)
            found.append(handle)
        return found

    def archive(self) -> None:
        """Hide the experiment from :meth:`list` and ``training-runs list`` and refuse new runs in it,
        deleting nothing: it gets the tag ``training.archived``, its runs stay as they are (one still
        going ends and is recorded normally) and readable by id, and :meth:`reactivate` brings it back.
        (MLflow's own delete is not used: it marks every run deleted, and ``mlflow gc`` purges them.)"""
        found = self._existing("archive")
        self.tracker.client.set_experiment_tag(found.experiment_id, run_listing.ARCHIVED_TAG, "true")
        self._id = None
        self.archived = True

    def reactivate(self, new_name: str | None = None) -> None:
        """Bring an archived experiment back, under ``new_name`` if given.

        :param new_name: the name it comes back under.
        :raises ConfigurationError: no experiment of this name, or ``new_name`` is taken.
        """
        found = self._existing("reactivate")
        if new_name is not None and new_name != self.name:
            taken = self.tracker.client.get_experiment_by_name(new_name)
            if taken is not None:
                raise ConfigurationError("Experiment.reactivate.new_name",
                                         f"an experiment named {new_name!r} already exists.", "choose another name.")
        if run_listing.is_archived(found):
            self.tracker.client.delete_experiment_tag(found.experiment_id, run_listing.ARCHIVED_TAG)
        if new_name is not None and new_name != self.name:
            self.tracker.client.rename_experiment(found.experiment_id, new_name)
            self.name = new_name
        self._id = None
        self.archived = False

    def get_runs(self, type: str | None = None, tags: dict[str, str] | str | None = None,
                 properties: dict[str, str] | None = None, include_children: bool = False,
                 status: str | None = None, limit: int | None = None) -> Iterator[ScriptRun | HyperDriveRun]:
        """The experiment's runs, newest first (Azure ML v1's ``experiment.get_runs``).

        :param type: ``"sweep"`` for sweeps only, ``"run"`` for single runs; None for both.
        :param tags: tags (and values) each run has; a string is a tag that must be present.
        :param properties: as ``tags`` (Azure ML's properties are tags here).
        :param include_children: also sweeps' trials and child runs.
        :param status: only runs in this state (``Completed``, ``Failed``, ``Running``, ...).
        :param limit: at most this many runs.
        """
        found = self.tracker.client.get_experiment_by_name(self.name)
        if found is None:
            return
        selected = run_listing.run_filter(status, tags, properties)
        for run in run_listing.runs(self.tracker, str(found.experiment_id), selected, include_children, limit, type):
            yield self.handle_for(run)

    def get_run(self, run_id: str) -> ScriptRun | HyperDriveRun:
        """A handle on one of the experiment's runs, from any process (v1's ``Run(experiment, run_id)``).

        A single run's handle reads status, details, metrics and files; it can also cancel a run of the
        local target. A sweep's is a ``HyperDriveRun`` with its trials and best run.

        :param run_id: the MLflow run id.
        :raises ConfigurationError: the run is not in this experiment.
        """
        run = self.tracker.get_run(run_id)
        found = self.tracker.client.get_experiment_by_name(self.name)
        if found is None or run.info.experiment_id != str(found.experiment_id):
            raise ConfigurationError("run_id", f"run {run_id} is not in experiment {self.name!r}.",
                                     "pass the run's own experiment (its name is in the MLflow UI).")
        return self.handle_for(run)

    def handle_for(self, run: MlflowRun) -> ScriptRun | HyperDriveRun:
        """The handle of an MLflow run of this experiment: a ``HyperDriveRun`` for a sweep, else a
        :class:`ScriptRun` (able to cancel its job when it runs on the local target).

        :param run: the run as MLflow returned it.
        """
        tags = run.data.tags
        if tags.get(Tags.SWEEP_ROLE) == "sweep":
            from airflow_provider.core.hyperdrive.run import HyperDriveRun
            from airflow_provider.core.hyperdrive.sweep import Sweep

            return HyperDriveRun(Sweep.load(self, run.info.run_id))
        target: ComputeTarget | None = None
        handle = _local_job_here(run)
        if handle is not None:
            from airflow_provider.core.targets.local import LocalTarget

            target = LocalTarget(jobs_root=Path(handle.location).parent)
        return ScriptRun(self, run.info.run_id, target, handle)

    def _existing(self, action: str) -> MlflowExperiment:
        found = self.tracker.client.get_experiment_by_name(self.name)
        if found is None:
            raise ConfigurationError("Experiment.name", f"no experiment named {self.name!r} to {action}.",
                                     "check the name: Experiment.list(view_type=\"All\") lists them.")
        return found

    def submit(self, config: Submittable[RunT], tags: dict[str, str] | None = None, *,
               run_key: str | None = None, reattach: bool = True, run_name: str | None = None,
               secret_variables: dict[str, str] | None = None, params: dict[str, str] | None = None) -> RunT:
        """Validate ``config`` and start the run detached; return its handle at once.

        The configuration submits itself, as in Azure ML v1: a :class:`ScriptRunConfig` starts one
        run (:meth:`start`, a :class:`ScriptRun`), a
        :class:`~airflow_provider.core.hyperdrive.HyperDriveConfig` a sweep, its parent run and
        first trials (a ``HyperDriveRun``).

        :param config: the run (or sweep) to start.
        :param tags: extra MLflow tags for the run.
        :param run_key: a stable key (e.g. dag/task/logical run/map index). When a run with this key
            exists and ``reattach`` is True: a run still going is reattached, a finished one is
            returned as it is; only a failed or canceled one is started afresh.
        :param reattach: False always starts a new run (a sweep refuses it: it is always picked up).
        :param run_name: MLflow's display name of the run.
        :param secret_variables: variables for the run's process that are never written to MLflow.
        :param params: MLflow params of the run (a sweep's sampled hyperparameters; a sweep refuses them).
        """
        submit_to = getattr(config, "submit_to", None)
        if submit_to is None:
            raise ConfigurationError("Experiment.submit.config",
                                     f"a {type(config).__name__} cannot be submitted.",
                                     "pass a ScriptRunConfig or a HyperDriveConfig.")
        run: RunT = submit_to(self, tags, run_key=run_key, reattach=reattach, run_name=run_name,
                              secret_variables=secret_variables, params=params)
        return run

    def start(self, config: ScriptRunConfig, tags: dict[str, str] | None = None, *,
              run_key: str | None = None, reattach: bool = True, run_name: str | None = None,
              secret_variables: dict[str, str] | None = None, params: dict[str, str] | None = None) -> ScriptRun:
        """Stage ``config`` and launch it (or reattach to its run, by key): what :meth:`submit` does
        for a :class:`ScriptRunConfig`. The parameters are :meth:`submit`'s."""
        staged = self.stage(config, tags, run_key=run_key, reattach=reattach, run_name=run_name,
                            secret_variables=secret_variables, params=params)
        return staged.launch() if isinstance(staged, StagedRun) else staged

    def stage(self, config: ScriptRunConfig, tags: dict[str, str] | None = None, *,
              run_key: str | None = None, reattach: bool = True, run_name: str | None = None,
              secret_variables: dict[str, str] | None = None,
              params: dict[str, str] | None = None) -> ScriptRun | StagedRun:
        """Everything :meth:`submit` does short of starting the job: validate, create the run, snapshot,
        prepare the environment, stage the job on the target. A sweep stages its next trial while the
        running ones finish, so a free slot is filled at once.

        :return: a :class:`StagedRun` to launch, or the :class:`ScriptRun` an existing run with
            ``run_key`` was reattached to. The parameters are :meth:`submit`'s.
        """
        resolved = config.validate()
        target = resolve_target(config.compute_target)
        _validate_distribution_for(resolved, target)
        target.check_resources(resolved.resources)
        _validate_tags(tags)
        secret_variables = validate_secret_variables(secret_variables)
        self.tracker.check_reachable()
        target.check()
        if run_key is not None and reattach:
            existing = self._reattach(run_key, target, resolved)
            if existing is not None:
                return existing
        data = plan_run_data(resolved.inputs, resolved.outputs, target)
        if not data.empty:  # direct inputs' and outputs' credentials, for the script
            direct = data.direct_variables()
            check_not_set_by_caller(direct, {
                "secret_environment_variables": secret_variables or {},
                "ScriptRunConfig.environment_variables": resolved.environment_variables,
                "Environment.environment_variables": (resolved.environment.environment_variables
                                                      if resolved.environment else {})})
            secret_variables = {**direct, **(secret_variables or {})}
        store = SnapshotStore()
        snapshot = store.take(resolved.source_directory, max_bytes=resolved.snapshot_size_limit_bytes).snapshot
        if not data.empty:
            _check_reserved_folders(snapshot)
        git = read_git_state(resolved.source_directory)
        initial_tags = {
            **(tags or {}),
            Tags.RUN_KEY: run_key or f"adhoc/{uuid.uuid4().hex}",
            Tags.TARGET: target.describe(),
            Tags.SNAPSHOT_ID: snapshot.id,
            Tags.SOURCE_DIRECTORY: str(resolved.source_directory),
            Tags.COMMAND: resolved.describe_command(),
            Tags.SOURCE_NAME: resolved.script or resolved.describe_command(),
            Tags.SOURCE_TYPE: "JOB",
            **(git.mlflow_tags() if git else {}),
        }
        if resolved.environment is not None:
            initial_tags[Tags.ENVIRONMENT_NAME] = str(resolved.environment)
        if resolved.azureml_compat:
            initial_tags[Tags.AZUREML_COMPAT] = "true"
        distribution = resolved.distributed_job_config
        launcher = None if distribution is None else target.distribution_launcher(distribution)
        nodes = resolved.resources.nodes if resolved.resources else None
        initial_tags.update(distribution_tags(distribution, launcher, nodes))
        definition_tag, definition_text = definition_record(
            run_definition(resolved, initial_tags[Tags.TARGET], launcher))
        initial_tags[DEFINITION_TAG] = definition_tag
        initial_tags.setdefault(Tags.USER, _submitting_user())
        run_id = self.tracker.create_run(self.id, initial_tags, run_name)
        handle: JobHandle | None = None
        # What the job does not need goes to MLflow while the environment and the job are prepared;
        # all of it is written before the job can start.
        writes = OrderedWrites(f"stage-{run_id}")
        try:
            if params:
                self.tracker.log_params(run_id, params)  # refused values fail here, before anything else
            writes.submit(lambda: self.tracker.log_text(run_id, snapshot.manifest_json(), "snapshot/manifest.json"))
            if definition_text is not None:
                long_definition = definition_text
                writes.submit(lambda: self.tracker.log_text(run_id, long_definition, DEFINITION_ARTIFACT))
            if git is not None and git.diff:
                diff = git.diff
                writes.submit(lambda: self.tracker.log_text(run_id, diff, "git/uncommitted.diff"))
            writes.submit(lambda: self.tracker.set_state(run_id, RunState.PREPARING))
            staged_snapshot = snapshot
            if not data.empty:
                data_entries = data.stage(run_id, store, self.tracking_uri, self._run_is_active)
                staged_snapshot = Snapshot.from_entries([*snapshot.entries, *data_entries])
                data_tags = data.tags()
                writes.submit(lambda: self.tracker.set_tags(run_id, data_tags))
                writes.submit(lambda: data.record(self.tracker, run_id))
            prepared = self._prepare_environment(run_id, target, resolved)
            if prepared.lock is not None and resolved.environment is not None:
                lock_text = prepared.lock
                definition = redact(json.dumps(resolved.environment.to_dict(), indent=2, sort_keys=True))
                writes.submit(lambda: self.tracker.log_text(run_id, lock_text, "environment/lock.txt"))
                writes.submit(lambda: self.tracker.log_text(run_id, definition, "environment/definition.json"))
            writes.submit(lambda: self.tracker.set_state(run_id, RunState.STARTING, {
                Tags.ENVIRONMENT_FINGERPRINT: prepared.fingerprint,
                Tags.ENVIRONMENT_DESCRIPTION: prepared.description,
            }))
            staging: dict[str, Any] = {"mounts": data.binds} if data.binds else {}
            if target.stages_resources and resolved.resources is not None:
                staging["resources"] = resolved.resources
            handle = target.stage(run_id, staged_snapshot, store, job_files(resolved.azureml_compat), prepared,
                                  **staging)
            spec = self._job_spec(run_id, target, handle, resolved, prepared, secret_variables, data)
            writes.wait()
        except BaseException as exc:
            writes.close()  # its writes end before the run's failure is recorded
            self._fail_before_start(run_id, target, handle, exc)
            raise
        writes.close()
        return StagedRun(self, run_id, target, handle, spec, tuple(data.declared.values()))

    # ------------------------------------------------------------------ steps
    def _reattach(self, run_key: str, target: ComputeTarget, resolved: ResolvedRunConfig) -> ScriptRun | None:
        previous = self.tracker.find_run_by_key(self.id, run_key)
        if previous is None:
            return None
        run_id = previous.info.run_id
        outputs: tuple[DeclaredOutput, ...] | None = None
        try:  # as this try configures them (a new URI is checked and claimed as at staging), never from a tag
            outputs = tuple(claim_outputs(resolved.outputs, run_id, self._run_is_active).values())
        except ConfigurationError as exc:  # a URI now holding another run's data (a storage down: raised, retried)
            log.warning("Run %s: its outputs are kept in its artifacts: %s", run_id, exc)
        # Decide from our own state tag: a script using mlflow directly can change MLflow's status.
        state = RunState(previous.data.tags.get(Tags.STATE, RunState.QUEUED.value))
        if state is RunState.COMPLETED:
            log.info("Run %s for key %s already completed; collecting its result", run_id, run_key)
            return ScriptRun(self, run_id, None, None, outputs=outputs)
        if state.is_terminal:
            return None
        handle = target.find(run_id)  # the job's id is the run's id, never read from a tag
        recorded = job_record(previous.data.tags)
        if handle is not None and (recorded or target.was_launched(handle)):
            if not recorded:  # the process that launched it died before saying so
                self.tracker.set_state(run_id, RunState.RUNNING, job=handle.to_dict())
            log.info("Reattaching to run %s (key %s) on %s", run_id, run_key, target.describe())
            return ScriptRun(self, run_id, target, handle, outputs=outputs)
        self.tracker.end(run_id, RunState.FAILED,
                         "the run's job was never launched or is gone from the target; a new run replaces it")
        return None

    def _run_is_active(self, run_id: str) -> bool:
        """Whether the run has not ended (a run that cannot be read counts as ended)."""
        try:
            tags = self.tracker.get_run(run_id).data.tags
        except Exception:
            return False
        return not RunState(tags.get(Tags.STATE, RunState.QUEUED.value)).is_terminal

    def _prepare_environment(self, run_id: str, target: ComputeTarget,
                             resolved: ResolvedRunConfig) -> PreparedEnvironment:
        try:
            with sharing_locks(shared_locks_for(self.tracking_uri)):  # a shared server: its workers share locks
                prepared = target.prepare_environment(resolved.environment)
        except EnvironmentBuildError as exc:
            if exc.log_path is not None and exc.log_path.exists():
                self._log_build_log(run_id, exc.log_path, exc.artifact_name)
            raise
        if prepared.build_log is not None:
            self._log_build_log(run_id, prepared.build_log, prepared.build_log_artifact)
        return prepared

    def _log_build_log(self, run_id: str, path: Path, name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="artifact-") as scratch:
            named = Path(scratch) / name
            shutil.copyfile(path, named)
            self.tracker.log_artifact(run_id, named, "system_logs")

    def _job_spec(self, run_id: str, target: ComputeTarget, handle: JobHandle, resolved: ResolvedRunConfig,
                  prepared: PreparedEnvironment, secrets: dict[str, str] | None,
                  data: RunData | None = None) -> JobSpec:
        paths = target.job_paths(handle)
        runtime = f"{paths['job_dir']}/{RUNTIME_DIR}"
        data_variables = data.bind(paths["job_dir"]) if data is not None else {}
        if data_variables:
            assert data is not None
            resolved = dataclasses.replace(
                resolved, arguments=expand_placeholders(resolved.arguments, data.paths),
                command=expand_placeholders(resolved.command, data.paths) if resolved.command is not None else None)
        env = {
            **(resolved.environment.environment_variables if resolved.environment else {}),
            **resolved.environment_variables,
            **(secrets or {}),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_RUN_ID": run_id,
            "MLFLOW_EXPERIMENT_ID": self.id,
            "MLFLOW_EXPERIMENT_NAME": self.name,
            events_module.EVENTS_FILE_VARIABLE: paths["events"],
            events_module.UPLOADS_DIR_VARIABLE: paths["uploads"],
            **resolved.distribution_variables(),
            rank_launcher.RANK_LOG_DIR_VARIABLE: f"{paths['job_dir']}/{RANKS_DIR}",
            **({rank_launcher.SYSTEM_METRICS_VARIABLE: f"{resolved.system_metrics_interval_seconds:g}"}
               if resolved.system_metrics_interval_seconds and resolved.distributed_job_config is not None else {}),
            "PYTHONUNBUFFERED": "1",
            **data_variables,
            "PYTHONPATH": os.pathsep.join(p for p in (resolved.environment_variables.get("PYTHONPATH"), runtime) if p),
        }
        if resolved.azureml_compat:
            resolved = _with_azureml_compat(resolved, env, runtime, self, run_id, secrets or {})
        return JobSpec(
            argv=tuple(resolved.argv(prepared.python)),
            env=env,
            unset_env=("VIRTUAL_ENV", "PYTHONHOME"),
            path_prepend=tuple(p for p in (os.path.dirname(prepared.python),) if p),
            max_run_duration_seconds=resolved.max_run_duration_seconds,
            secret_names=tuple(secrets or {}),
            resources=resolved.resources,
            system_metrics_interval_seconds=resolved.system_metrics_interval_seconds,
        )

    def _fail_before_start(self, run_id: str, target: ComputeTarget, handle: JobHandle | None,
                           exc: BaseException) -> None:
        try:
            self.tracker.end(run_id, RunState.FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            if handle is not None:
                target.cancel(handle, grace_seconds=2)
                target.cleanup(handle)


class StagedRun:
    """A run whose job is staged on its target but not started (:meth:`Experiment.stage`).

    :param experiment: the run's experiment.
    :param run_id: the MLflow run id (state Starting).
    :param target: the target the job is staged on.
    :param handle: the staged job.
    :param spec: how to start it.
    :param outputs: the run's declared outputs (:attr:`ScriptRun.outputs`).
    """

    def __init__(self, experiment: Experiment, run_id: str, target: ComputeTarget, handle: JobHandle,
                 spec: JobSpec, outputs: Sequence[DeclaredOutput] = ()) -> None:
        self.experiment = experiment
        self.id = run_id
        self.target = target
        self.handle = handle
        self.spec = spec
        self.outputs = tuple(outputs)

    def launch(self) -> ScriptRun:
        """Start the job detached; the run is Running when this returns."""
        try:
            self.target.launch(self.handle, self.spec)
            self.experiment.tracker.set_state(self.id, RunState.RUNNING, job=self.handle.to_dict())
        except BaseException as exc:
            self.experiment._fail_before_start(self.id, self.target, self.handle, exc)
            raise
        return ScriptRun(self.experiment, self.id, self.target, self.handle, outputs=self.outputs)

    def discard(self, reason: str) -> None:
        """Never start the job: remove it from the target; the run ends Canceled with ``reason``.

        :param reason: why (e.g. the sweep stopped).
        """
        try:
            self.experiment.tracker.end(self.id, RunState.CANCELED, reason)
        finally:
            self.target.cleanup(self.handle)


def _with_azureml_compat(resolved: ResolvedRunConfig, env: dict[str, str], runtime: str, experiment: Experiment,
                         run_id: str, secrets: dict[str, str]) -> ResolvedRunConfig:
    """Azure ML v1 compatibility: its variables and package path into ``env`` (in place), and the
    arguments with ``$VAR`` / ``${VAR}`` expanded from the run's variables (never from secrets)."""
    env.update(azureml_variables(run_id, experiment.name, experiment.id, list(secrets)))
    env["PYTHONPATH"] = os.pathsep.join((env["PYTHONPATH"], f"{runtime}/{COMPAT_PATH_DIR}"))
    visible = {k: v for k, v in env.items() if k not in secrets}
    command = resolved.command
    if command is not None and command[:2] != ["/bin/sh", "-c"]:  # a shell command line expands itself
        command = expand_arguments(command, visible)
    return dataclasses.replace(resolved, arguments=expand_arguments(resolved.arguments, visible), command=command)


def _check_reserved_folders(snapshot: Snapshot) -> None:
    """A run with inputs or outputs keeps them in ``work/.inputs`` and ``work/.outputs``: the source
    folder must not hold folders of those names."""
    for entry in snapshot.entries:
        top = entry.path.split("/", 1)[0]
        if top in (INPUTS_DIR, OUTPUTS_DIR):
            raise ConfigurationError("ScriptRunConfig.source_directory",
                                     f"holds {top}/, where a run with inputs or outputs keeps its data.",
                                     f"rename that folder, or add {top}/ to .amlignore.")


def _validate_distribution_for(resolved: ResolvedRunConfig, target: ComputeTarget) -> None:
    config = resolved.distributed_job_config
    if config is None:
        return
    nodes = getattr(config, "node_count", 1)
    if nodes > target.max_nodes:
        raise ConfigurationError(
            "ScriptRunConfig.distributed_job_config.node_count",
            f"{type(config).__name__} asks for {nodes} nodes, but the {target.kind} target runs on "
            f"{target.max_nodes}.",
            "use node_count=1 here (all processes on one machine), or submit to a training_mpi connection "
            "with enough hosts.",
        )


def validate_secret_variables(secret_variables: object) -> dict[str, str]:
    """Check ``Experiment.submit(secret_variables=...)`` before any compute is used (messages never
    show a value).

    :param secret_variables: the variables as given.
    :raises ConfigurationError: naming the bad entry.
    """
    return validate_variables(secret_variables, "Experiment.submit.secret_variables", secret=True)


def _validate_tags(tags: object) -> None:
    if tags is None:
        return
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise ConfigurationError("Experiment.submit.tags", f"must map strings to strings, got {tags!r}.",
                                 'pass {"team": "search"}; convert values with str().')


def _local_job_here(run: MlflowRun) -> JobHandle | None:
    """The job of a run still going on the local target of this machine (whatever state folder
    started it), or None: another machine's, another target's, or not a folder of this user's."""
    tags = run.data.tags
    job = job_record(tags)
    if not job or RunState(tags.get(Tags.STATE, RunState.QUEUED.value)).is_terminal:
        return None
    try:
        handle = JobHandle.from_dict(job)
    except (ValueError, KeyError, TypeError):
        return None
    import socket

    folder = Path(handle.location)
    if (handle.target != "local" or handle.job_id != run.info.run_id or handle.host != socket.gethostname()
            or folder.name != handle.job_id or not folder.is_dir() or folder.stat().st_uid != os.getuid()):
        return None
    return handle


def _submitting_user() -> str:
    """Who submits (MLflow's ``mlflow.user``, Azure ML's ``submittedBy``): the login name here."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a name (some containers)
        return f"uid {os.getuid()}"
