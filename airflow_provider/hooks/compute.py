"""Compute hooks: thin wrappers that turn an Airflow connection into a core ``ComputeTarget``.

A hook never opens a connection in ``__init__``: it reads its Airflow connection, and builds its
target, on first use. ``compute_hook_for("local" | conn_id | hook)`` is how the operator and the
trigger find the hook for a ``compute_target`` value.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

from airflow.sdk import BaseHook

from airflow_provider.core.errors import TargetError
from airflow_provider.core.targets.base import ComputeTarget

__all__ = [
    "ComputeHook",
    "DockerComputeHook",
    "LocalComputeHook",
    "MPIComputeHook",
    "SSHComputeHook",
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


class LocalComputeHook(ComputeHook):
    """Runs jobs as processes on the worker's machine (``compute_target="local"``).

    A connection is optional; its extra field ``jobs_root`` moves the job folders.
    """

    conn_type = "training_local"
    hook_name = "Training: local processes"

    def get_target(self) -> ComputeTarget:
        from airflow_provider.core.targets.local import LocalTarget

        return LocalTarget(jobs_root=self.connection_extra.get("jobs_root"))

    @property
    def target_reference(self) -> str:
        return self.conn_id or LOCAL


class _NotYetAvailableHook(ComputeHook):
    """A connection type whose target comes in a later release."""

    def get_target(self) -> ComputeTarget:
        raise TargetError(
            f"compute target connection {self.conn_id!r} is of type {self.conn_type!r}, whose runs are not "
            "available in this version of the provider; use compute_target='local' for now."
        )


class DockerComputeHook(ComputeHook):
    """Runs jobs in containers of a Docker daemon.

    Connection: host = daemon URL (``unix:///var/run/docker.sock``, ``tcp://127.0.0.1:2376``); login
    and password = registry credentials (with extra ``registry``). Extra fields: TLS
    (``tls_ca_cert``, ``tls_client_cert``, ``tls_client_key``: each a path or PEM text;
    ``tls_verify``, ``tls_hostname``), ``image`` (default image), ``python``, and run options
    ``network``, ``user``, ``shm_size``, ``mem_limit``, ``cpus``, ``gpus``, ``volumes``, ``labels``.
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
                            tls=settings["tls"], registry_auth=settings["registry_auth"])


class SSHComputeHook(ComputeHook):
    """Runs jobs detached on a remote Linux host over SSH (paramiko).

    Connection: host, port, login, password; extra fields ``key_file`` or ``private_key`` (with
    ``passphrase``), ``host_key`` (pinned, as in known_hosts) or ``known_hosts`` (a file),
    ``accept_unknown_host_keys``, ``work_root``, ``python``, ``connect_timeout``, ``keepalive``,
    ``keep_failed_job_folders``, ``blob_cache_max_mb``, ``env_cache_max_count``,
    ``kept_job_max_age_days``. Every field is checked before connecting.
    """

    conn_type = "training_ssh"
    hook_name = "Training: SSH host"

    def get_target(self) -> ComputeTarget:
        from airflow_provider.core.targets.ssh import SSHTarget
        from airflow_provider.core.targets.ssh_connection import SSHSettings
        from airflow_provider.hooks.ssh_options import ssh_target_arguments

        if not self.conn_id:
            raise TargetError("the SSH compute target needs a training_ssh connection id.")
        connection = self.get_connection(self.conn_id)
        arguments = ssh_target_arguments(self.conn_id, connection.host, connection.port, connection.login,
                                         connection.password, dict(connection.extra_dejson))
        return SSHTarget(SSHSettings(**arguments.pop("settings")), **arguments)


class MPIComputeHook(_NotYetAvailableHook):
    """Runs distributed jobs across a set of SSH hosts with mpirun or torchrun."""

    conn_type = "training_mpi"
    hook_name = "Training: MPI hosts"


_HOOKS_BY_CONN_TYPE: dict[str, type[ComputeHook]] = {
    hook.conn_type: hook for hook in (LocalComputeHook, DockerComputeHook, SSHComputeHook, MPIComputeHook)
}


def compute_hook_for(compute_target: str | ComputeHook) -> ComputeHook:
    """Find the hook for a ``compute_target`` value.

    :param compute_target: ``"local"``, an Airflow connection id of one of the training connection
        types, or a hook instance.
    """
    if isinstance(compute_target, ComputeHook):
        return compute_target
    if not isinstance(compute_target, str) or not compute_target:
        raise TargetError(
            f"compute_target: expected 'local', a connection id or a compute hook, got {compute_target!r}."
        )
    if compute_target == LOCAL:
        return LocalComputeHook()
    try:
        connection = BaseHook.get_connection(compute_target)
    except Exception as exc:  # the SDK raises its own not-found error type
        raise TargetError(
            f"compute_target: no Airflow connection {compute_target!r} ({exc}). Create it (types: "
            f"{', '.join(sorted(_HOOKS_BY_CONN_TYPE))}) or use compute_target='local'."
        ) from exc
    hook_class = _HOOKS_BY_CONN_TYPE.get(connection.conn_type or "")
    if hook_class is None:
        raise TargetError(
            f"compute_target: connection {compute_target!r} has type {connection.conn_type!r}, which is not a "
            f"compute target; use one of {', '.join(sorted(_HOOKS_BY_CONN_TYPE))}."
        )
    return hook_class(compute_target)
