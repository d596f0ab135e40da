"""How a run's distribution becomes a Slurm allocation and the command its supervisor starts.

The supervisor runs in the batch step, on the allocation's first node; what it starts reaches the
other nodes through Slurm itself:

* **one process** (no distribution): one task; ``resources.cpus`` CPUs for it;
* **MpiConfiguration**: ``node_count`` nodes x ``process_count_per_node`` tasks, started by
  ``srun`` (Slurm's PMI: the cluster's ``MpiDefault`` or the connection's ``srun_options``) with
  ``--kill-on-bad-exit`` so one failing rank stops the step; or, per the connection, by
  ``mpirun`` inside the allocation (Open MPI reads the allocation and starts its daemons with ``srun``);
* **PyTorchConfiguration** on several nodes: one task per node, each a ``torchrun`` for its node
  (node rank from Slurm), with the rendezvous on the first node (where ``srun`` runs); on one
  node, ``torchrun`` as on every target; each node gets a CPU per process unless ``resources.cpus``
  says otherwise;
* **TensorflowConfiguration**: on one node, its workers and parameter servers there, each with its
  own ``TF_CONFIG`` (as on one machine); on ``resources.nodes`` nodes, ``srun`` spreads them
  (``--ntasks``), and each task's ``TF_CONFIG`` holds the hosts and ports the tasks wrote in the
  job folder.

Every rank goes through the per-rank wrapper, which writes ``ranks/rank_<N>.log`` in the job folder
on the shared root: the logs of every node's ranks are in one folder.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import Literal

from airflow_provider.core.distributed import LAUNCHER_MODULE
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.resources import Resources
from airflow_provider.core.targets.base import JobSpec

__all__ = ["LAUNCH_NODE", "MPI_LAUNCHERS", "MpiLauncher", "SlurmLayout", "slurm_layout"]

MpiLauncher = Literal["srun", "mpirun"]
MPI_LAUNCHERS: tuple[MpiLauncher, ...] = ("srun", "mpirun")
LAUNCH_NODE = "@slurm-launch-node"
"""The rendezvous address ``torchnode`` reads from Slurm: the node ``srun`` ran on (the first)."""


@dataclasses.dataclass(frozen=True)
class SlurmLayout:
    """The allocation a run asks for and the command its supervisor starts.

    :param nodes: ``--nodes``.
    :param tasks_per_node: ``--ntasks-per-node``.
    :param cpus_per_task: ``--cpus-per-task`` (None: Slurm's default, one).
    :param argv: the command the supervisor starts in the batch step.
    :param tasks: ``--ntasks`` instead of ``tasks_per_node`` (tasks Slurm spreads over the nodes).
    """

    nodes: int
    tasks_per_node: int
    cpus_per_task: int | None
    argv: tuple[str, ...]
    tasks: int | None = None


def slurm_layout(spec: JobSpec, launcher: MpiLauncher = "srun", srun_options: Sequence[str] = (),
                 rendezvous_port: int | None = None) -> SlurmLayout:
    """The allocation and command of a job.

    :param spec: the job (its command and the distribution's variables, as
        :func:`~airflow_provider.core.distributed.launch_command` made them).
    :param launcher: what starts MPI ranks: ``srun`` or ``mpirun`` inside the allocation.
    :param srun_options: more ``srun`` arguments (``--mpi=pmix``).
    :param rendezvous_port: the port of a multi-node PyTorch rendezvous (None: a random one).
    """
    resources = spec.resources or Resources()
    cpus = None if resources.cpus is None else max(1, math.ceil(resources.cpus))
    argv = list(spec.argv)
    if len(argv) > 3 and argv[1:4] == ["-m", LAUNCHER_MODULE, "tensorflow"]:
        return _tensorflow_layout(argv, resources.nodes or 1, cpus)
    if "TRAINING_RUNS_NODE_COUNT" not in spec.env:  # one process
        return SlurmLayout(resources.nodes or 1, resources.tasks_per_node or 1, cpus, tuple(argv))
    nodes = int(spec.env["TRAINING_RUNS_NODE_COUNT"])
    per_node = int(spec.env.get("TRAINING_RUNS_PROCESSES_PER_NODE", "1"))
    if argv and argv[0] == "mpirun":
        rank_command = argv[argv.index("--oversubscribe") + 1:]
        if launcher == "mpirun":  # Open MPI takes the hosts and slots from the allocation
            return SlurmLayout(nodes, per_node, cpus, ("mpirun", "-np", str(nodes * per_node), *rank_command))
        return SlurmLayout(nodes, per_node, cpus, ("srun", "--kill-on-bad-exit=1", *srun_options, *rank_command))
    if "torch.distributed.run" in argv:
        if nodes == 1:
            return SlurmLayout(1, 1, cpus or per_node, tuple(argv))
        python = argv[argv.index("torch.distributed.run") - 2]
        torchrun = [python, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc_per_node", str(per_node),
                    "--max_restarts", "0", *argv[argv.index("--no-python"):]]
        port = rendezvous_port or random.randint(29500, 39999)
        node_launcher = [python, "-m", LAUNCHER_MODULE, "torchnode", "--master", LAUNCH_NODE, "--port", str(port), "--"]
        return SlurmLayout(nodes, 1, cpus or per_node, ("srun", "--kill-on-bad-exit=1", "--ntasks-per-node=1",
                                                        "--mpi=none", *node_launcher, *torchrun))
    raise ConfigurationError("ScriptRunConfig.distributed_job_config",
                             f"is not a distribution the slurm target knows how to start ({argv[:3]}).",
                             "use MpiConfiguration, PyTorchConfiguration or TensorflowConfiguration.")


def _tensorflow_layout(argv: list[str], nodes: int, cpus: int | None) -> SlurmLayout:
    """On one node, the launcher starts every task there (as on one machine); on several
    (``resources.nodes``), ``srun`` spreads the tasks over them, and they meet through the job folder."""
    if nodes == 1:
        return SlurmLayout(1, 1, cpus, tuple(argv))
    split = argv.index("--")
    options = dict(zip(argv[4:split:2], argv[5:split:2], strict=False))
    workers, servers = int(options.get("--workers", "1")), int(options.get("--ps", "0"))
    if workers + servers < nodes:
        raise ConfigurationError("ScriptRunConfig.resources.nodes",
                                 f"is {nodes}, more than the TensorflowConfiguration's {workers + servers} tasks.",
                                 "ask for at most one node per worker and parameter server.")
    task = (argv[0], "-m", LAUNCHER_MODULE, "tftask", "--workers", str(workers), "--ps", str(servers), "--",
            *argv[split + 1:])
    return SlurmLayout(nodes, 1, cpus, ("srun", "--kill-on-bad-exit=1", "--mpi=none", *task),
                       tasks=workers + servers)
