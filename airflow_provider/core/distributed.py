"""Distributed job configurations, named as in Azure ML v1.

They validate here; launching them is the job of the targets that support them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.runtime import LAUNCHER_MODULE

__all__ = [
    "LAUNCHER_MODULE",
    "DistributedConfig",
    "MpiConfiguration",
    "PyTorchConfiguration",
    "TensorflowConfiguration",
    "distributed_config_from_dict",
    "launch_command",
]


def _require_positive_int(owner: str, name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(
            f"{owner}.{name}",
            f"must be a whole number, got {type(value).__name__} {value!r}.",
            f"pass an int >= {minimum}.",
        )
    if value < minimum:
        raise ConfigurationError(
            f"{owner}.{name}", f"must be at least {minimum}, got {value}.", f"pass an int >= {minimum}."
        )


@dataclass(frozen=True)
class MpiConfiguration:
    """Launch ``process_count_per_node`` ranks on each of ``node_count`` nodes with ``mpirun``.

    :param process_count_per_node: ranks started on every node.
    :param node_count: number of nodes (hosts) taking part.
    """

    process_count_per_node: int = 1
    node_count: int = 1

    def __post_init__(self) -> None:
        _require_positive_int("MpiConfiguration", "process_count_per_node", self.process_count_per_node)
        _require_positive_int("MpiConfiguration", "node_count", self.node_count)

    @property
    def total_processes(self) -> int:
        """All ranks of the job."""
        return self.process_count_per_node * self.node_count

    def to_dict(self) -> dict[str, Any]:
        """Serialise for XCom, triggers and run details."""
        return {"type": "mpi", **asdict(self)}


@dataclass(frozen=True)
class PyTorchConfiguration:
    """Launch ``torchrun`` on each node.

    :param communication_backend: ``"gloo"`` (CPU) or ``"nccl"`` (GPU).
    :param process_count: all processes of the job; ``None`` means one per node.
    :param node_count: number of nodes taking part.
    """

    communication_backend: Literal["gloo", "nccl"] = "gloo"
    process_count: int | None = None
    node_count: int = 1

    def __post_init__(self) -> None:
        if self.communication_backend not in ("gloo", "nccl"):
            raise ConfigurationError(
                "PyTorchConfiguration.communication_backend",
                f"unknown backend {self.communication_backend!r}.",
                'use "gloo" (CPU) or "nccl" (GPU).',
            )
        _require_positive_int("PyTorchConfiguration", "node_count", self.node_count)
        if self.process_count is not None:
            _require_positive_int("PyTorchConfiguration", "process_count", self.process_count)
            if self.process_count % self.node_count:
                raise ConfigurationError(
                    "PyTorchConfiguration.process_count",
                    f"{self.process_count} processes cannot be spread evenly over "
                    f"{self.node_count} nodes.",
                    "make process_count a multiple of node_count.",
                )

    @property
    def processes_per_node(self) -> int:
        """Processes ``torchrun`` starts on every node."""
        return (self.process_count or self.node_count) // self.node_count

    def to_dict(self) -> dict[str, Any]:
        """Serialise for XCom, triggers and run details."""
        return {"type": "pytorch", **asdict(self)}


@dataclass(frozen=True)
class TensorflowConfiguration:
    """Start each worker and parameter server with its own ``TF_CONFIG``.

    :param worker_count: number of worker processes.
    :param parameter_server_count: number of parameter-server processes.
    """

    worker_count: int = 1
    parameter_server_count: int = 0

    def __post_init__(self) -> None:
        _require_positive_int("TensorflowConfiguration", "worker_count", self.worker_count)
        _require_positive_int(
            "TensorflowConfiguration", "parameter_server_count", self.parameter_server_count, minimum=0
        )

    def to_dict(self) -> dict[str, Any]:
        """Serialise for XCom, triggers and run details."""
        return {"type": "tensorflow", **asdict(self)}


DistributedConfig = MpiConfiguration | PyTorchConfiguration | TensorflowConfiguration

_BY_TYPE: dict[str, type[MpiConfiguration] | type[PyTorchConfiguration] | type[TensorflowConfiguration]] = {
    "mpi": MpiConfiguration,
    "pytorch": PyTorchConfiguration,
    "tensorflow": TensorflowConfiguration,
}


def distributed_config_from_dict(data: dict[str, Any]) -> DistributedConfig:
    """Rebuild a distributed configuration from :meth:`to_dict` output.

    :param data: a dict with a ``type`` key (``mpi``, ``pytorch`` or ``tensorflow``).
    """
    fields = dict(data)
    kind = fields.pop("type", None)
    if kind not in _BY_TYPE:
        raise ConfigurationError(
            "distributed_job_config.type",
            f"unknown distribution {kind!r}.",
            f"use one of {sorted(_BY_TYPE)}.",
        )
    try:
        return _BY_TYPE[kind](**fields)
    except TypeError as exc:
        raise ConfigurationError("distributed_job_config", str(exc), "check the field names.") from exc


def launch_command(config: DistributedConfig, command: list[str], python: str,
                   script: bool = True) -> tuple[list[str], dict[str, str]]:
    """The command line that starts every process of a one-node distributed run, and the
    variables it needs.

    Each rank runs through the per-rank wrapper, which keeps its output in
    ``rank_<N>.log`` and shows rank 0's in the driver log.

    :param config: the distribution.
    :param command: one rank's command (``python script.py args``).
    :param python: the environment's interpreter.
    :param script: ``command`` is ``python script.py args`` (run in-process by the launcher, which
        aborts the MPI job when the script fails), not a command of the user's.
    """
    if script:
        command = [python, "-m", LAUNCHER_MODULE, "script", "--", *command[1:]]
    rank = [python, "-m", LAUNCHER_MODULE, "rank", "--", *command]
    if isinstance(config, MpiConfiguration):
        return (["mpirun", "-np", str(config.total_processes), "--oversubscribe", *rank],
                {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                 "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
                 "MPI4PY_MPIABI": "openmpi",  # mpi4py's wheels ask, when MPICH is installed too
                 "TRAINING_RUNS_PROCESSES_PER_NODE": str(config.process_count_per_node),
                 "TRAINING_RUNS_NODE_COUNT": str(config.node_count)})
    if isinstance(config, PyTorchConfiguration):
        return ([python, "-m", LAUNCHER_MODULE, "torch", "--backend", config.communication_backend, "--",
                 python, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                 "--nproc_per_node", str(config.processes_per_node), "--max_restarts", "0", "--no-python", *rank],
                {"TRAINING_RUNS_COMMUNICATION_BACKEND": config.communication_backend,
                 "TRAINING_RUNS_PROCESSES_PER_NODE": str(config.processes_per_node),
                 "TRAINING_RUNS_NODE_COUNT": str(config.node_count)})
    return ([python, "-m", LAUNCHER_MODULE, "tensorflow", "--workers", str(config.worker_count),
             "--ps", str(config.parameter_server_count), "--", *command], {})
