"""Compute hooks: thin wrappers that turn an Airflow connection into a core ``ComputeTarget``.

A hook never opens a connection in ``__init__``: it reads its Airflow connection, and builds its
target, on first use. ``compute_hook_for("local" | conn_id | hook)`` is how the operator and the
trigger find the hook for a ``compute_target`` value.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

from airflow.sdk import BaseHook

from airflow_provider.core.errors import TargetConfigurationError
from airflow_provider.core.targets.base import ComputeTarget
from airflow_provider.core.targets.reachability import reachability
from airflow_provider.hooks.connection_test import connection_test_result

__all__ = [
    "ComputeHook",
    "DockerComputeHook",
    "LocalComputeHook",
    "MPIComputeHook",
    "SSHComputeHook",
    "SlurmComputeHook",
    "compute_hook_for",
]

LOCAL = "local"


class ComputeHook(BaseHook):
    """Base of the compute hooks: one Airflow connection type per kind of compute target.

    :param conn_id: the Airflow connection; ``None`` only for targets that need none (local).
    """

    conn_name_attr: ClassVar[str] = "conn_id"
    conn_type: ClassVar[str]
    hook_name: ClassVar[str]
    default_conn_name: ClassVar[str | None] = None

    def __init__(self, conn_id: str | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id or self.default_conn_name

    @cached_property
    def connection_extra(self) -> dict[str, Any]:
        """The connection's ``extra`` fields (empty without a connection)."""
        if not self.conn_id:
            return {}
        return dict(self.get_connection(self.conn_id).extra_dejson)

    @property
    def target_reference(self) -> str:
        """What the trigger needs to rebuild this hook in another process."""
        return self.conn_id or LOCAL

    def get_target(self) -> ComputeTarget:
        """Build the configured core compute target."""
        raise NotImplementedError

    def test_connection(self) -> tuple[bool, str]:
        """Reach the target as a run would, without running anything (the connection form's Test
        button): the daemon, the host with the connection's host-key rules, every MPI host and its
        launcher, the Slurm login node.

        :return: whether it worked, and what answered or what to fix (and whether testing again later
            can help).
        """
        return connection_test_result(lambda: reachability(self.get_target()))


class LocalComputeHook(ComputeHook):
    """Runs jobs as processes on the worker's machine (``compute_target="local"``).

    A connection is optional; its extra field ``jobs_root`` moves the job folders, and ``conda``
    (``auto``, ``rattler``, ``translate``) says how conda specifications are built. ``gpus``
    (``[0, 1, 2, 3]`` or ``"0,1,2,3"``; default: what ``nvidia-smi -L`` lists), ``reservations_file``
    and ``queue_timeout_seconds`` say how runs share this machine's GPUs
    (:mod:`~airflow_provider.core.targets.host_sharing`).
    """

    conn_type = "training_local"
    hook_name = "Training: local processes"

    def get_target(self) -> ComputeTarget:
        from airflow_provider.core.targets.host_sharing import HostSharing
        from airflow_provider.core.targets.local import LocalTarget

        extra = self.connection_extra
        conda = extra.get("conda", "auto")
        if conda not in ("auto", "rattler", "translate"):
            raise TargetConfigurationError(
                f"connection {self.conn_id!r} extra.conda is {conda!r}: use \"auto\", \"rattler\" (real conda "
                "environments with py-rattler) or \"translate\" (a virtual environment from PyPI).")
        return LocalTarget(jobs_root=extra.get("jobs_root"), conda=conda,
                           host_sharing=HostSharing.from_extra(extra, f"connection {self.conn_id!r} extra"))

    @property
    def target_reference(self) -> str:
        return self.conn_id or LOCAL


class DockerComputeHook(ComputeHook):
    """Runs jobs in containers of a Docker daemon.

    Connection: host = daemon URL (``unix:///var/run/docker.sock``, ``tcp://127.0.0.1:2376``); login
    and password = registry credentials (with extra ``registry``). Extra fields: TLS
    (``tls_ca_cert``, ``tls_client_cert``, ``tls_client_private_key``: each a path or PEM text;
    ``tls_verify``, ``tls_hostname``), ``image`` (default image), ``python``, and run options
    ``network``, ``user``, ``shm_size``, ``mem_limit``, ``cpus``, ``gpus``, ``volumes``, ``labels``,
    ``conda`` (``auto``, ``rattler``: a real conda environment in the image, ``translate``: PyPI), and
    ``input_cache_volume`` (the volume that keeps downloaded inputs on the daemon's host, default
    ``training-runs-inputs``; ``none`` sends them with every job).
    Every field is checked (:mod:`airflow_provider.hooks.docker_options`) before anything connects.
    """

    conn_type = "training_docker"
    hook_name = "Training: Docker daemon"

    def get_target(self) -> ComputeTarget:
        from airflow_provider.core.targets.docker import DEFAULT_IMAGE, DockerTarget
        from airflow_provider.hooks.docker_options import docker_target_settings

        connection = self.get_connection(self.conn_id) if self.conn_id else None
        settings = docker_target_settings(self.conn_id, connection.host if connection else None,
                                          connection.login if connection else None,
                                          connection.password if connection else None, self.connection_extra,
                                          connection.port if connection else None)
        return DockerTarget(base_url=settings["base_url"], image=settings["image"] or DEFAULT_IMAGE,
                            python=settings["python"] or "python3", run_options=settings["run_options"],
                            tls=settings["tls"], registry_auth=settings["registry_auth"], conda=settings["conda"],
                            input_cache_volume=settings["input_cache_volume"])


class SSHComputeHook(ComputeHook):
    """Runs jobs detached on a remote Linux host over SSH (paramiko).

    Connection: host, port, login, password; extra fields ``key_file`` or ``private_key`` (with
    ``passphrase``), ``host_key`` (pinned, as in known_hosts) or ``known_hosts`` (a file),
    ``accept_unknown_host_keys``, ``work_root``, ``python``, ``connect_timeout``, ``keepalive``,
    ``keep_failed_job_folders``, ``blob_cache_max_mb``, ``env_cache_max_count``, ``env_cache_max_gb``,
    ``kept_job_max_age_days``, ``conda`` (``auto``, ``rattler``: real conda environments installed
    offline with py-rattler, ``translate``: a virtual environment from PyPI). Every field is checked
    before connecting.
    """

    conn_type = "training_ssh"
    hook_name = "Training: SSH host"

    def get_target(self) -> ComputeTarget:
        from airflow_provider.core.targets.ssh import SSHTarget
        from airflow_provider.core.targets.ssh_connection import SSHSettings
        from airflow_provider.hooks.ssh_options import ssh_target_arguments

        if not self.conn_id:
            raise TargetConfigurationError("the SSH compute target needs a training_ssh connection id.")
        connection = self.get_connection(self.conn_id)
        arguments = ssh_target_arguments(self.conn_id, connection.host, connection.port, connection.login,
                                         connection.password, dict(connection.extra_dejson))
        return SSHTarget(SSHSettings(**arguments.pop("settings")), **arguments)


class MPIComputeHook(ComputeHook):
    """Runs distributed jobs across a set of SSH hosts with Open MPI's ``mpirun`` or MPICH's ``mpiexec``.

    Connection: either extra ``ssh_conn_ids`` (comma-separated ``training_ssh`` connections, one
    per host, the first launching) or extra ``hosts`` (``host[:slots]``, comma separated) reached
    with this connection's port, login, password and SSH extra fields (``key_file``, ``host_key``
    or ``known_hosts``, ``work_root``, ``conda``, ...); ``slots`` caps the processes per host; extra
    ``mpirun_options`` adds arguments to the launcher, and ``launcher`` is ``openmpi`` (default) or
    ``mpich``. ``work_root`` must be the same absolute folder
    on every host.
    """

    conn_type = "training_mpi"
    hook_name = "Training: MPI hosts"

    def get_target(self) -> ComputeTarget:
        import shlex

        from airflow_provider.core.errors import ConfigurationError
        from airflow_provider.core.targets.mpi import MPITarget
        from airflow_provider.core.targets.ssh import SSHTarget
        from airflow_provider.core.targets.ssh_connection import SSHSettings
        from airflow_provider.hooks.ssh_options import ssh_target_arguments

        if not self.conn_id:
            raise TargetConfigurationError("the MPI compute target needs a training_mpi connection id.")
        connection = self.get_connection(self.conn_id)
        extra = dict(connection.extra_dejson)
        launcher = extra.pop("launcher", None) or "openmpi"
        if launcher not in ("openmpi", "mpich"):
            raise ConfigurationError(f"connection {self.conn_id!r} extra.launcher",
                                     f"{launcher!r} is not a launcher.", "use openmpi (mpirun) or mpich (mpiexec).")
        options = shlex.split(str(extra.pop("mpirun_options", "") or ""))
        conn_ids = [c.strip() for c in str(extra.pop("ssh_conn_ids", "") or "").split(",") if c.strip()]
        hosts = [h.strip() for h in str(extra.pop("hosts", "") or "").split(",") if h.strip()]
        if bool(conn_ids) == bool(hosts):
            raise ConfigurationError(f"connection {self.conn_id!r} extra.hosts",
                                     "name the hosts either with hosts or with ssh_conn_ids (one of them).",
                                     'e.g. {"hosts": "10.0.0.1:4,10.0.0.2:4"} or {"ssh_conn_ids": "node1,node2"}.')
        nodes: list[SSHTarget] = []
        slots: list[int] = []
        if conn_ids:
            for conn_id in conn_ids:
                node = compute_hook_for(conn_id).get_target()
                if not isinstance(node, SSHTarget):
                    raise ConfigurationError(f"connection {self.conn_id!r} extra.ssh_conn_ids",
                                             f"{conn_id!r} is not a training_ssh connection.",
                                             "list training_ssh connections.")
                nodes.append(node)
                slots.append(0)
        for entry in hosts:
            name, _, count = entry.partition(":")
            if count and not count.isdigit():
                raise ConfigurationError(f"connection {self.conn_id!r} extra.hosts",
                                         f"{entry!r} is not host[:slots].", 'e.g. "10.0.0.1:4".')
            arguments = ssh_target_arguments(self.conn_id, name, connection.port, connection.login,
                                             connection.password, extra)
            nodes.append(SSHTarget(SSHSettings(**arguments.pop("settings")), **arguments))
            slots.append(int(count or 0))
        return MPITarget(nodes, slots, options, launcher)


class SlurmComputeHook(ComputeHook):
    """Runs each training run as a Slurm job, submitted through the cluster's login node over SSH.

    Connection: host, port, login, password of the login node, and the SSH extra fields
    (``key_file`` or ``private_key``, ``passphrase``, ``host_key`` or ``known_hosts``, ...);
    ``work_root`` is a folder of the cluster's shared filesystem (the same path on every node);
    ``partition``, ``account``, ``qos`` and ``sbatch_options`` are every job's defaults, ``setup``
    the shell lines each job runs first (``module load python/3.11``), ``python`` the interpreter
    on the login and compute nodes; ``mpi_launcher`` (``srun``, the default, or ``mpirun``) starts
    MPI ranks, with ``srun_options`` (``--mpi=pmix``) for ``srun``.
    """

    conn_type = "training_slurm"
    hook_name = "Training: Slurm cluster"

    def get_target(self) -> ComputeTarget:
        from airflow_provider.core.errors import ConfigurationError
        from airflow_provider.core.targets.slurm import SlurmTarget
        from airflow_provider.core.targets.slurm_batch import SlurmDefaults
        from airflow_provider.core.targets.ssh_connection import SSHSettings
        from airflow_provider.hooks.ssh_options import ssh_target_arguments

        if not self.conn_id:
            raise TargetConfigurationError("the Slurm compute target needs a training_slurm connection id.")
        connection = self.get_connection(self.conn_id)
        extra = {k.removeprefix("extra__training_slurm__"): v for k, v in dict(connection.extra_dejson).items()
                 if v not in (None, "")}
        slurm = {name: extra.pop(name, None)
                 for name in ("partition", "account", "qos", "sbatch_options", "setup", "mpi_launcher", "srun_options")}
        for name in ("partition", "account", "qos"):
            value = slurm[name]
            if value is not None and (not isinstance(value, str) or not value or any(c.isspace() for c in value)):
                example = "gpu" if name == "partition" else "ml"
                raise ConfigurationError(f"connection {self.conn_id!r} extra.{name}", f"{value!r} is not a name.",
                                         f"write the cluster's {name} name, e.g. {example}.")
        options, srun_options = (self._split(slurm[name], name, example) for name, example in (
            ("sbatch_options", '--exclusive --constraint="a100"'), ("srun_options", "--mpi=pmix --cpu-bind=cores")))
        launcher = str(slurm["mpi_launcher"] or "srun")
        if launcher not in ("srun", "mpirun"):
            raise ConfigurationError(f"connection {self.conn_id!r} extra.mpi_launcher",
                                     f"{launcher!r} is not a launcher.",
                                     "use srun (Slurm's PMI starts the ranks) or mpirun (Open MPI inside the "
                                     "allocation).")
        setup = tuple(line for line in str(slurm["setup"] or "").splitlines() if line.strip())
        if "work_root" not in extra:
            raise ConfigurationError(f"connection {self.conn_id!r} extra.work_root", "is not set.",
                                     "set a folder of the cluster's shared filesystem, e.g. /shared/training-runs.")
        arguments = ssh_target_arguments(self.conn_id, connection.host, connection.port, connection.login,
                                         connection.password, extra)
        login = arguments.pop("settings")
        return SlurmTarget(SSHSettings(**login), arguments["work_root"], arguments["python"],
                           SlurmDefaults(slurm["partition"], slurm["account"], slurm["qos"], options, setup,
                                         launcher, srun_options),  # type: ignore[arg-type]
                           arguments["keep_failed_job_folders"], arguments["cache_limits"], conda=arguments["conda"])

    def _split(self, value: object, name: str, example: str) -> tuple[str, ...]:
        import shlex

        from airflow_provider.core.errors import ConfigurationError

        try:
            return tuple(shlex.split(str(value or "")))
        except ValueError as exc:
            raise ConfigurationError(f"connection {self.conn_id!r} extra.{name}", f"cannot be split: {exc}.",
                                     f"quote it as on a command line, e.g. {example}.") from None


_HOOKS_BY_CONN_TYPE: dict[str, type[ComputeHook]] = {
    hook.conn_type: hook
    for hook in (LocalComputeHook, DockerComputeHook, SSHComputeHook, MPIComputeHook, SlurmComputeHook)
}


def compute_hook_for(compute_target: str | ComputeHook) -> ComputeHook:
    """Find the hook for a ``compute_target`` value.

    :param compute_target: ``"local"``, an Airflow connection id of one of the training connection
        types, or a hook instance.
    """
    if isinstance(compute_target, ComputeHook):
        return compute_target
    if not isinstance(compute_target, str) or not compute_target:
        raise TargetConfigurationError(
            f"compute_target: expected 'local', a connection id or a compute hook, got {compute_target!r}."
        )
    if compute_target == LOCAL:
        return LocalComputeHook()
    try:
        connection = BaseHook.get_connection(compute_target)
    except Exception as exc:  # the SDK raises its own not-found error type
        raise TargetConfigurationError(
            f"compute_target: no Airflow connection {compute_target!r} ({exc}). Create it (types: "
            f"{', '.join(sorted(_HOOKS_BY_CONN_TYPE))}) or use compute_target='local'."
        ) from exc
    hook_class = _HOOKS_BY_CONN_TYPE.get(connection.conn_type or "")
    if hook_class is None:
        raise TargetConfigurationError(
            f"compute_target: connection {compute_target!r} has type {connection.conn_type!r}, which is not a "
            f"compute target; use one of {', '.join(sorted(_HOOKS_BY_CONN_TYPE))}."
        )
    return hook_class(compute_target)
