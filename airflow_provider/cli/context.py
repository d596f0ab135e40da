"""What every command needs: the tracking store, the compute target, a run found by its id.

The tracking store is ``--tracking-uri``, else the Airflow ``mlflow`` connection
``--tracking-conn``, else ``MLFLOW_TRACKING_URI``, else the embedded store (as for the core API). A
target is ``local``, or the id of an Airflow connection of one of the training connection types
(``training_docker``, ``training_ssh``, ``training_mpi``, ``training_slurm``), read through Airflow
(its metadata database or ``AIRFLOW_CONN_<ID>`` variables) when Airflow is installed and configured.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from airflow_provider.core.errors import ConfigurationError

if TYPE_CHECKING:
    from airflow_provider.core.hyperdrive.run import HyperDriveRun
    from airflow_provider.core.script_run import ScriptRun
    from airflow_provider.core.submit import Experiment
    from airflow_provider.core.targets.base import ComputeTarget

__all__ = ["Context"]


class Context:
    """The store and targets one command line uses.

    :param tracking_uri: the MLflow tracking URI given on the command line, or None.
    :param tracking_conn: the Airflow ``mlflow`` connection id given on the command line, or None.
    """

    def __init__(self, tracking_uri: str | None = None, tracking_conn: str | None = None) -> None:
        if tracking_uri and tracking_conn:
            raise ConfigurationError("--tracking-uri", "and --tracking-conn are both given.", "give one of them.")
        if tracking_conn:
            from airflow_provider.hooks.mlflow import MLflowTrackingHook

            hook = MLflowTrackingHook(tracking_conn)
            tracking_uri = hook.get_tracking_uri()
            os.environ.update(hook.get_credentials())  # MLflow reads them there, in this process only
        self.tracking_uri = tracking_uri

    def experiment(self, name: str) -> Experiment:
        """The experiment ``name`` in this store.

        :param name: its name.
        """
        from airflow_provider.core.submit import Experiment

        return Experiment(name, self.tracking_uri)

    def target(self, name: str) -> ComputeTarget:
        """The target ``name``: ``local``, or an Airflow connection id.

        :param name: what ``--target`` or the job file's ``compute`` says.
        :raises ConfigurationError: a connection id without Airflow installed.
        """
        from airflow_provider.core.targets import resolve_target

        if name == "local":
            return resolve_target("local")
        try:
            from airflow_provider.hooks.compute import compute_hook_for
        except ImportError as exc:  # the core alone is installed
            raise ConfigurationError("--target", f"{name!r} is not 'local', and Airflow is not installed to read "
                                     "its connection.", "install apache-airflow, or use --target local.") from exc
        return compute_hook_for(name).get_target()

    def run(self, run_id: str, target: str | None = None) -> ScriptRun | HyperDriveRun:
        """The run ``run_id``, whatever its experiment; with ``target``, a handle able to read its
        job's output and cancel it there.

        :param run_id: the MLflow run id.
        :param target: the target it runs on (``local`` or a connection id), or None.
        :raises ConfigurationError: no run with that id in this store.
        """
        from airflow_provider.core.errors import TrackingRefusedError
        from airflow_provider.core.script_run import ScriptRun
        from airflow_provider.core.tracking import Tracker

        tracker = Tracker(self.tracking_uri)
        try:
            found = tracker.get_run(run_id)
        except TrackingRefusedError as exc:
            raise ConfigurationError("RUN", f"no run {run_id!r} in {tracker.tracking_uri}.",
                                     "check the id (`training-runs list` shows them) and the store "
                                     "(--tracking-uri / --tracking-conn).") from exc
        experiment = self.experiment(tracker.client.get_experiment(found.info.experiment_id).name)
        experiment.tracker = tracker
        handle = experiment.handle_for(found)
        if target is None or not isinstance(handle, ScriptRun):
            return handle
        compute = self.target(target)
        job = compute.find(run_id)
        if job is None:
            raise ConfigurationError("--target", f"{compute.describe()} has no job of run {run_id}.",
                                     "name the target the run was submitted to (its details' `target`).")
        return ScriptRun(experiment, run_id, compute, job)
