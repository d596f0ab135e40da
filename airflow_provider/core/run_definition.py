"""What a run was asked to do, in Azure ML v1's shape (``run.get_details()["runDefinition"]``), and
its distribution as tags anyone can filter on.

Both are written when the run is created, from the validated configuration, so they describe the
run whatever happens to its job. The definition is the tag :data:`DEFINITION_TAG` (JSON); one too
long for a tag (very long argument lists) is the artifact :data:`DEFINITION_ARTIFACT` instead, and
the tag then names it.

The distribution tags (``training.distribution.*``): ``type`` (``mpi``, ``pytorch``,
``tensorflow``), ``launcher`` (what starts the processes on the run's target: ``mpirun``, ``srun``,
``torchrun``, ``TF_CONFIG``), ``node_count``, ``processes_per_node``, ``process_count``, and
``backend`` (PyTorch's communication backend) or ``worker_count`` / ``parameter_server_count``
(TensorFlow). A single-process run has none.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider.core.distributed import MpiConfiguration, PyTorchConfiguration, TensorflowConfiguration
from airflow_provider.core.environments.locking import redact

if TYPE_CHECKING:
    from airflow_provider.core.config import ResolvedRunConfig
    from airflow_provider.core.distributed import DistributedConfig
    from airflow_provider.core.tracking import Tracker

__all__ = ["DEFINITION_ARTIFACT", "DEFINITION_TAG", "DISTRIBUTION_TAG_PREFIX", "definition_record",
           "distribution_tags", "recordable_variables", "run_definition"]

DEFINITION_TAG = "training.run_definition"
"""The run's definition as JSON (or ``{"artifact": DEFINITION_ARTIFACT}`` when it is too long)."""
DEFINITION_ARTIFACT = "run_definition.json"
"""Where a definition too long for a tag is kept."""
DISTRIBUTION_TAG_PREFIX = "training.distribution."
_TAG_LIMIT = 8000  # MLflow's longest tag value


def run_definition(resolved: ResolvedRunConfig, target: str, launcher: str | None) -> dict[str, Any]:
    """The run's definition with Azure ML v1's keys (``script``, ``arguments``, ``framework``,
    ``communicator``, ``nodeCount``, ``mpi``/``pyTorch``/``tensorflow``, ...), plus ``launcher``.

    :param resolved: the validated configuration.
    :param target: the target's description (the ``training.target`` tag).
    :param launcher: what starts the distributed processes there; None for a single process.
    """
    config = resolved.distributed_job_config
    environment = resolved.environment
    resources = resolved.resources
    definition: dict[str, Any] = {
        "script": resolved.script,
        "command": None if resolved.script is not None else redact(resolved.describe_command()),
        "arguments": [redact(argument) for argument in resolved.arguments],
        "target": target,
        "framework": "Python",
        "communicator": _communicator(config),
        "nodeCount": _node_count(config, resources.nodes if resources is not None else None),
        "launcher": launcher,
        "maxRunDurationSeconds": resolved.max_run_duration_seconds,
        "environment": None if environment is None else {
            "name": environment.name, "version": environment.version,
            "kind": environment.kind,
        },
        "environmentVariables": recordable_variables(resolved.environment_variables),
        "mpi": {"processCountPerNode": config.process_count_per_node if isinstance(config, MpiConfiguration) else 1},
        "pyTorch": {
            "communicationBackend": config.communication_backend if isinstance(config, PyTorchConfiguration) else None,
            "processCount": config.process_count if isinstance(config, PyTorchConfiguration) else None,
        },
        "tensorflow": {
            "workerCount": config.worker_count if isinstance(config, TensorflowConfiguration) else 1,
            "parameterServerCount": (config.parameter_server_count if isinstance(config, TensorflowConfiguration)
                                     else 0),
        },
        "resources": None if resources is None else resources.to_dict(),
        "azuremlCompat": resolved.azureml_compat,
    }
    return definition


def recordable_variables(variables: Mapping[str, str]) -> dict[str, str]:
    """``variables`` as they may be recorded: their names, each value ``***``. A plain variable may
    still carry a secret (a value a DAG renders from a connection's password, a token under an
    innocent name), and MLflow is readable by everyone who reads the runs; the values are in the
    job's environment only, as ``secret_environment_variables`` always are.

    :param variables: the run's plain environment variables.
    """
    return dict.fromkeys(variables, "***")


def definition_record(definition: dict[str, Any]) -> tuple[str, str | None]:
    """The tag value for ``definition``, and the artifact text when it is too long for a tag.

    :param definition: what :func:`run_definition` built.
    """
    text = json.dumps(definition, sort_keys=True)
    if len(text) <= _TAG_LIMIT:
        return text, None
    return json.dumps({"artifact": DEFINITION_ARTIFACT}), json.dumps(definition, indent=2, sort_keys=True)


def distribution_tags(config: DistributedConfig | None, launcher: str | None,
                      nodes: int | None = None) -> dict[str, str]:
    """The ``training.distribution.*`` tags of a run (none for a single process).

    :param config: the run's distribution.
    :param launcher: what starts its processes on the target.
    :param nodes: the nodes the run's resources ask for (TensorFlow tasks spread over them).
    """
    if config is None:
        return {}
    values: dict[str, object] = {"launcher": launcher, "node_count": _node_count(config, nodes)}
    if isinstance(config, MpiConfiguration):
        values.update(type="mpi", processes_per_node=config.process_count_per_node,
                      process_count=config.total_processes)
    elif isinstance(config, PyTorchConfiguration):
        values.update(type="pytorch", backend=config.communication_backend,
                      processes_per_node=config.processes_per_node,
                      process_count=config.processes_per_node * config.node_count)
    else:
        values.update(type="tensorflow", worker_count=config.worker_count,
                      parameter_server_count=config.parameter_server_count,
                      process_count=config.worker_count + config.parameter_server_count)
    return {f"{DISTRIBUTION_TAG_PREFIX}{key}": str(value) for key, value in values.items() if value is not None}


def _communicator(config: DistributedConfig | None) -> str:
    """Azure ML v1's name for how the processes talk."""
    if isinstance(config, MpiConfiguration):
        return "Mpi"
    if isinstance(config, PyTorchConfiguration):
        return config.communication_backend.capitalize()
    if isinstance(config, TensorflowConfiguration):
        return "ParameterServer"
    return "None"


def _node_count(config: DistributedConfig | None, nodes: int | None) -> int:
    if isinstance(config, (MpiConfiguration, PyTorchConfiguration)):
        return config.node_count
    return nodes or 1


def read_run_definition(tracker: Tracker, run_id: str, tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The definition a run recorded at submit: its tag, or the artifact the tag names when it was
    too long for one; None for a run submitted before definitions were recorded.

    :param tracker: where the run lives.
    :param run_id: the run.
    :param tags: the run's tags.
    :raises ValueError: the tag holds no definition (a script rewrote it).
    :raises TrackingError: the artifact cannot be read (not there yet, or the store is down).
    """
    recorded = tags.get(DEFINITION_TAG)
    if not recorded:
        return None
    definition = json.loads(recorded)
    if not isinstance(definition, dict):
        raise ValueError("not a JSON object")
    if set(definition) == {"artifact"}:
        with tempfile.TemporaryDirectory(prefix="definition-") as scratch:
            local = tracker.download_artifact(run_id, str(definition["artifact"]), scratch)
            definition = json.loads(Path(local).read_text(encoding="utf-8"))
        if not isinstance(definition, dict):
            raise ValueError(f"{DEFINITION_ARTIFACT} is not a JSON object")
    return definition
