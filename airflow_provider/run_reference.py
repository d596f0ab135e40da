"""Everything another process needs to pick up a submitted run: the trigger, ``execute_complete``
and the detached finalizer rebuild the run from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from airflow_provider.core.data.outputs import outputs_from_dict
from airflow_provider.core.script_run import ScriptRun
from airflow_provider.core.submit import Experiment
from airflow_provider.core.targets.base import JobHandle

__all__ = ["RunReference"]


@dataclass(frozen=True)
class RunReference:
    """A submitted run, by value.

    :param run_id: the MLflow run id.
    :param experiment_name: its experiment.
    :param tracking_uri: the MLflow tracking URI.
    :param tracking_conn_id: the ``mlflow`` connection (for credentials), if any.
    :param compute_target: ``"local"`` or the compute connection id.
    :param handle: the job handle (``JobHandle.to_dict()``).
    :param sweep_trial: the run is a trial of a sweep: its watchers apply the sweep's policy.
    :param outputs: the outputs it was submitted with (``outputs_to_dict``), which its watchers copy
        to their URIs; None for a reference written before references carried them (its outputs
        are then kept in the run's artifacts).
    """

    run_id: str
    experiment_name: str
    tracking_uri: str
    tracking_conn_id: str | None
    compute_target: str
    handle: dict[str, str]
    sweep_trial: bool = False
    outputs: dict[str, dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReference:
        """Rebuild from :meth:`to_dict` output.

        :param data: the serialised reference.
        """
        return cls(str(data["run_id"]), str(data["experiment_name"]), str(data["tracking_uri"]),
                   data.get("tracking_conn_id"), str(data["compute_target"]), dict(data["handle"]),
                   bool(data.get("sweep_trial", False)),
                   None if data.get("outputs") is None else dict(data["outputs"]))

    def script_run(self, configure_credentials: bool = True) -> ScriptRun:
        """Rebuild the run's handle here (reads the connections; creates no job).

        :param configure_credentials: put the tracking connection's credentials in this process's
            environment (MLflow reads them there). Never in a process shared by several tasks,
            like the triggerer: one connection's credentials would go to another's server.
        """
        from airflow_provider.hooks.compute import compute_hook_for
        from airflow_provider.hooks.mlflow import MLflowTrackingHook

        if configure_credentials:
            MLflowTrackingHook(self.tracking_conn_id).configure_process()
        target = compute_hook_for(self.compute_target).get_target()
        experiment = Experiment(self.experiment_name, tracking_uri=self.tracking_uri)
        monitor = None
        if self.sweep_trial:
            from airflow_provider.core.hyperdrive.early_termination import TrialMonitor

            monitor = TrialMonitor.from_tags
        outputs = None if self.outputs is None else outputs_from_dict(self.outputs)
        return ScriptRun(experiment, self.run_id, target, JobHandle.from_dict(self.handle), monitor, outputs)
