"""The MPI target: one distributed run across several SSH hosts.

Every node is an :class:`SSHTarget` (same incremental staging, same remote environments, same job
folder path); the job's supervisor runs on the first node and starts ``mpirun`` there with
``--host`` naming every node's slots and ``-x`` exporting the run's variables, so the ranks on the
other nodes run in their own copy of the job folder. When the job ends, the other nodes' event
files are appended once to the first node's (the relay then records their ranks' metrics as
``rank_<N>/<name>``), their ``rank_<N>.log`` files join the first node's, and any process left in
a job folder on any node is stopped.

What every node does (checking, staging, making the job folder, collecting, stopping, cleaning up)
runs on all nodes at once, one thread per node, each on its node's own connection: a run costs
about what its slowest host costs, not the sum of the hosts.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import os
import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from airflow_provider.core.distributed import LAUNCHER_MODULE
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.live_logs import Grown
from airflow_provider.core.resources import Resources
from airflow_provider.core.snapshot import Snapshot, SnapshotStore
from airflow_provider.core.targets.base import Channel, ComputeTarget, JobHandle, JobSpec, JobStatus
from airflow_provider.core.targets.ssh import SSHTarget
from airflow_provider.runtime import job_runner
from airflow_provider.runtime.host_resources import NODE_GPUS_VARIABLE

__all__ = ["SECRETS_VARIABLE", "MPITarget", "at_once"]

N = TypeVar("N")
T = TypeVar("T")

SECRETS_VARIABLE = "TRAINING_RUNS_MPI_SECRETS"
_MERGED_MARKER = ".events-merged"


def at_once(items: Sequence[N], action: Callable[[N], T]) -> list[T]:
    """Run ``action`` on every item at once (one thread each) and return the results in order.

    Every call runs to its end; then the first item's error (in order) is raised, as if the items
    had been done one after the other.

    :param items: the nodes (or what names them).
    :param action: what to do for one item; it uses that node's own connection only.
    """
    if len(items) <= 1:
        return [action(item) for item in items]
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="mpi-node") as pool:
        futures = [pool.submit(contextvars.copy_context().run, action, item) for item in items]  # (shared locks)
        errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error
    return [future.result() for future in futures]


def _node_gpus_placeholder(spec: JobSpec) -> dict[str, str]:
    """The variable the supervisor fills with every node's reserved GPUs, named here so that the
    launcher exports it to every rank (``-x``)."""
    return {NODE_GPUS_VARIABLE: ""} if spec.resources is not None and spec.resources.gpus else {}


class MPITarget(ComputeTarget):
    """Run distributed jobs across SSH hosts with ``mpirun`` (Open MPI).

    :param nodes: one SSH target per host, the first one launching.
    :param slots: processes each host may run (its MPI slots), by node; 0 or missing: no limit.
    :param mpirun_options: extra launcher arguments (e.g. ``--mca btl_tcp_if_include 10.0.0.0/24``).
    :param launcher: ``"openmpi"`` (``mpirun``) or ``"mpich"`` (``mpiexec.mpich``, Hydra over ssh);
        every host needs the same one.
    """

    kind: ClassVar[str] = "mpi"
    wakes_on_end: ClassVar[bool] = True
    supported_resources: ClassVar[frozenset[str]] = frozenset({"gpus"})
    """GPUs per node, reserved on every node before the launcher starts (each host's ``gpus``)."""

    def __init__(self, nodes: list[SSHTarget], slots: list[int] | None = None,
                 mpirun_options: list[str] | None = None, launcher: str = "openmpi") -> None:
        if not nodes:
            raise ConfigurationError("compute target (training_mpi)", "names no host.",
                                     "list the hosts (hosts or ssh_conn_ids).")
        self.nodes = nodes
        self.slots = list(slots or [0] * len(nodes))
        self.mpirun_options = list(mpirun_options or [])
        if launcher not in ("openmpi", "mpich"):
            raise ConfigurationError("compute target (training_mpi) launcher", f"{launcher!r} is not a launcher.",
                                     "use openmpi or mpich.")
        self.launcher = launcher

    @property
    def max_nodes(self) -> int:  # type: ignore[override]
        """As many nodes as hosts."""
        return len(self.nodes)

    @property
    def first(self) -> SSHTarget:
        """The node that runs the supervisor and ``mpirun``."""
        return self.nodes[0]

    # ------------------------------------------------------------------ spec
    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "nodes": [node.to_spec() for node in self.nodes], "slots": self.slots,
                "mpirun_options": self.mpirun_options, "launcher": self.launcher}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> MPITarget:
        secrets = json.loads(os.environ.get(SECRETS_VARIABLE) or "[]")
        nodes = [SSHTarget.from_spec(node, secrets[index] if index < len(secrets) else {})
                 for index, node in enumerate(spec["nodes"])]
        return cls(nodes, spec.get("slots"), spec.get("mpirun_options"), spec.get("launcher", "openmpi"))

    def secret_environment(self) -> dict[str, str]:
        secrets = [node.secrets() for node in self.nodes]
        return {SECRETS_VARIABLE: json.dumps(secrets)} if any(secrets) else {}

    def describe(self) -> str:
        return "mpi (" + ", ".join(node.settings.address for node in self.nodes) + ")"

    def check(self) -> None:
        at_once(self.nodes, SSHTarget.check)

    def check_resources(self, resources: Resources | None, field: str = "ScriptRunConfig.resources") -> None:
        """Refuse what a node can never give: more GPUs per node than a host declares."""
        super().check_resources(resources, field)
        for node in self.nodes:
            node.host_sharing.check(resources, f"the host {node.settings.address}", field)

    # ------------------------------------------------------------------ preparing
    def prepare_environment(self, environment: Environment | None) -> PreparedEnvironment:
        prepared = at_once(self.nodes, lambda node: node.prepare_environment(environment))
        pythons = {p.python for p in prepared}
        if len(pythons) > 1:
            raise ConfigurationError(
                "environment", f"resolves to different interpreters on the hosts: {sorted(pythons)}.",
                "give every host the same Python version and an absolute work_root, so environments match.",
            )
        first = prepared[0]
        return dataclasses.replace(first, description=f"{first.description} (on {len(self.nodes)} hosts)")

    def stage(self, job_id: str, snapshot: Snapshot, store: SnapshotStore, extras: Mapping[str, bytes],
              environment: PreparedEnvironment) -> JobHandle:
        handles = at_once(self.nodes, lambda node: node.stage(job_id, snapshot, store, extras, environment))
        locations = {handle.location for handle in handles}
        if len(locations) > 1:
            raise ConfigurationError(
                "work_root", f"is a different folder on the hosts ({sorted(locations)}).",
                "set an absolute work_root that exists on every host (mpirun starts every rank in the same folder).",
            )
        return JobHandle(self.kind, job_id, handles[0].location)

    def launch(self, handle: JobHandle, spec: JobSpec) -> None:
        node_handle = self._node_handle(handle)
        launching = self._across_hosts(spec)  # checks the hosts' slots before any node is touched
        if spec.resources is not None and spec.resources.gpus:
            launching = dataclasses.replace(launching, node_reservations=self._node_reservations(spec, handle))
        at_once(self.nodes[1:], lambda node: node.materialize(node_handle, spec))
        self.first.launch(node_handle, launching)  # once every rank's folder exists

    def _across_hosts(self, spec: JobSpec) -> JobSpec:
        argv = list(spec.argv)
        if "torch.distributed.run" in argv:
            return self._torch_across_hosts(spec)
        if not argv or os.path.basename(argv[0]) != "mpirun":
            raise ConfigurationError(
                "ScriptRunConfig.distributed_job_config",
                "a training_mpi connection runs MpiConfiguration and PyTorchConfiguration jobs.",
                "use one of them, or run TensorflowConfiguration on one node (local, docker, ssh).",
            )
        per_node = int(spec.env.get("TRAINING_RUNS_PROCESSES_PER_NODE", "1"))
        node_count = int(spec.env.get("TRAINING_RUNS_NODE_COUNT", "1"))
        for node, slots in zip(self.nodes[:node_count], self.slots, strict=False):
            if slots and per_node > slots:
                raise ConfigurationError(
                    "ScriptRunConfig.distributed_job_config.process_count_per_node",
                    f"is {per_node}, but {node.settings.host} has {slots} slots.",
                    "lower process_count_per_node, or raise the host's slots in the connection.",
                )
        hosts = [f"{node.settings.host}:{per_node}" for node in self.nodes[:node_count]]
        total = argv[argv.index("-np") + 1]
        rank_command = argv[argv.index("--oversubscribe") + 1:]
        environment = {**spec.env, "MPI4PY_MPIABI": "mpich" if self.launcher == "mpich" else "openmpi",
                       **_node_gpus_placeholder(spec)}
        return dataclasses.replace(spec, argv=(*self._launcher_prefix(hosts, total, environment), *rank_command),
                                   env=environment)

    def _node_reservations(self, spec: JobSpec, handle: JobHandle) -> dict[str, Any]:
        """What the supervisor on the first node reserves on the others (their ``gpus`` each)."""
        assert spec.resources is not None
        node_count = int(spec.env.get("TRAINING_RUNS_NODE_COUNT", "1"))
        wanted = Resources(gpus=spec.resources.gpus)
        return {"first_host": self.first.settings.host, "nodes": [
            {"host": node.settings.host, "python": node.python, "script": f"{node.runtime_dir}/host_resources.py",
             "job_dir": handle.location, "request": node.host_sharing.job_json(wanted)["host_resources"]}
            for node in self.nodes[1:node_count]]}

    def _launcher_prefix(self, hosts: list[str], total: str, environment: Mapping[str, str]) -> list[str]:
        """The launcher's command line up to the per-rank command."""
        names = sorted({*environment, "PATH"})
        if self.launcher == "mpich":
            return ["mpiexec.mpich", "-n", total, "-hosts", ",".join(hosts), "-launcher", "ssh", "-genvall",
                    *self.mpirun_options]  # Hydra passes the whole environment
        exported = [item for name in names for item in ("-x", name)]
        return ["mpirun", "-np", total, "--host", ",".join(hosts), *exported, *self.mpirun_options]

    def _torch_across_hosts(self, spec: JobSpec) -> JobSpec:
        """``mpirun`` starts one ``torchrun`` per host (as node N of the job), so stopping and
        failing work as for MPI ranks; torchrun starts the processes of its node."""
        argv = list(spec.argv)
        node_count = int(spec.env.get("TRAINING_RUNS_NODE_COUNT", "1"))
        per_node = spec.env.get("TRAINING_RUNS_PROCESSES_PER_NODE", "1")
        python = argv[argv.index("torch.distributed.run") - 2]
        master = self.first.settings.host
        port = str(random.randint(29500, 39999))
        torchrun = [python, "-m", "torch.distributed.run", "--nnodes", str(node_count), "--nproc_per_node", per_node,
                    "--max_restarts", "0", *argv[argv.index("--no-python"):]]
        environment = {**spec.env, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                       **_node_gpus_placeholder(spec)}
        hosts = [f"{node.settings.host}:1" for node in self.nodes[:node_count]]
        launcher = [python, "-m", LAUNCHER_MODULE, "torchnode", "--master", master, "--port", port, "--"]
        prefix = self._launcher_prefix(hosts, str(node_count), environment)
        return dataclasses.replace(spec, argv=(*prefix, *launcher, *torchrun), env=environment)

    def _node_handle(self, handle: JobHandle) -> JobHandle:
        return JobHandle(SSHTarget.kind, handle.job_id, handle.location)

    def job_paths(self, handle: JobHandle) -> dict[str, str]:
        return self.first.job_paths(self._node_handle(handle))

    def find(self, job_id: str) -> JobHandle | None:
        found = self.first.find(job_id)
        return JobHandle(self.kind, job_id, found.location) if found is not None else None

    # ------------------------------------------------------------------ watching
    def poll(self, handle: JobHandle) -> JobStatus:
        status = self.first.poll(self._node_handle(handle))
        if not status.active:
            self._merge_events(handle)
        return status

    def _merge_events(self, handle: JobHandle) -> None:
        """Append the other nodes' events to the first node's file, once (their ranks' metrics)."""
        events = f"{handle.location}/{job_runner.EVENTS_FILE}"
        data = b"".join(found or b"" for found in at_once(self.nodes[1:], lambda node: node.read_file(events)))
        self.first.append_once(events, data, f"{handle.location}/{_MERGED_MARKER}")

    def wait(self, handle: JobHandle, timeout: float) -> None:
        self.first.wait(self._node_handle(handle), timeout)

    def read(self, handle: JobHandle, channel: Channel, offset: int, limit: int = 4 << 20) -> bytes:
        return self.first.read(self._node_handle(handle), channel, offset, limit)

    def read_grown(self, handle: JobHandle, relative_dir: str, sent: Mapping[str, int],
                   scratch: Path) -> dict[str, Grown]:
        return self.first.read_grown(self._node_handle(handle), relative_dir, sent, scratch)

    def fetch(self, handle: JobHandle, relative_path: str, scratch: Path) -> Path | None:
        node_handle = self._node_handle(handle)
        if relative_path != job_runner.RANKS_DIR:
            return self.first.fetch(node_handle, relative_path, scratch / "node-0")
        found = at_once(range(len(self.nodes)),
                        lambda index: self.nodes[index].fetch(node_handle, relative_path, scratch / f"node-{index}"))
        merged = scratch / "ranks-all-nodes" / job_runner.RANKS_DIR
        merged.mkdir(parents=True, exist_ok=True)
        for folder in found:
            if folder is not None and folder.is_dir():
                for item in folder.iterdir():
                    shutil.copy2(item, merged / item.name, follow_symlinks=False)
        return merged

    # ------------------------------------------------------------------ control
    def cancel(self, handle: JobHandle, grace_seconds: float = 10.0, wait: bool = True) -> None:
        node_handle = self._node_handle(handle)
        self.first.cancel(node_handle, grace_seconds, wait)  # mpirun stops the remote ranks
        if wait:
            at_once(self.nodes[1:], lambda node: node.stop_strays(handle.location))

    def cleanup(self, handle: JobHandle) -> None:
        node_handle = self._node_handle(handle)
        ended = self.first.ended_status(node_handle)

        def stop_then_remove(node: SSHTarget) -> None:  # a node's folder goes once its own strays are stopped
            node.stop_strays(handle.location)
            node.cleanup(node_handle, ended)

        at_once(self.nodes, stop_then_remove)
