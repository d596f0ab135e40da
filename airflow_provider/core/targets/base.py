"""The compute-target contract: what differs between local, Docker, SSH and MPI.

A target prepares an environment, stages a snapshot into a per-run job folder, launches the job
detached (see :mod:`job_runner`), and then answers a watcher that may come and go: find the job by
id, poll it, read its driver log and events from a byte offset, fetch files, cancel, clean up.
Everything else (validation, MLflow, relaying, finalizing) lives once in :mod:`submit`.

The job folder is the same on every target; its files and formats are described once, in
:mod:`airflow_provider.runtime`, and read through :mod:`~airflow_provider.runtime.job_runner`'s
typed records (:class:`~airflow_provider.runtime.job_runner.JobJson`, ``ExitJson``).
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from airflow_provider.core.distributed import DistributedConfig, MpiConfiguration, PyTorchConfiguration
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError, TargetConfigurationError
from airflow_provider.core.live_logs import Grown, grown_files
from airflow_provider.core.resources import Resources
from airflow_provider.core.snapshot import Snapshot, SnapshotStore
from airflow_provider.runtime import job_runner

__all__ = ["Channel", "ComputeTarget", "JobHandle", "JobSpec", "JobState", "JobStatus", "check_job_id",
           "job_dir_under"]

Channel = Literal["driver", "events"]
JobState = Literal["queued", "running", "ended", "lost", "not_found"]


_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def check_job_id(job_id: object) -> str:
    """Return ``job_id`` when it is a job id (an MLflow run id: letters, digits, ``_`` and ``-``,
    no separators), so that joining it to a jobs folder can never leave that folder.

    :param job_id: the proposed id (it may come from a run tag that anyone with write access to
        the run, the script included, can rewrite).
    :raises TargetConfigurationError: when it is not (a retry cannot help).
    """
    if not isinstance(job_id, str) or _JOB_ID.fullmatch(job_id) is None:
        raise TargetConfigurationError(f"refusing job id {job_id!r}: a job id is 1-128 letters, digits, '_' or '-' "
                                       "(the MLflow run id); the run's tags may have been altered")
    return job_id


def job_dir_under(jobs_root: str, handle: JobHandle) -> str:
    """The job folder of ``handle`` under ``jobs_root`` (POSIX), checked against the handle's own
    location, so a handle whose location was altered is never used to read or remove a folder.

    :param jobs_root: the target's folder of job folders.
    :param handle: the job.
    :raises TargetConfigurationError: when the handle points elsewhere (a retry cannot help).
    """
    expected = f"{jobs_root.rstrip('/')}/{check_job_id(handle.job_id)}"
    if handle.location.rstrip("/") != expected:
        raise TargetConfigurationError(f"job {handle.job_id}: its location {handle.location!r} is not {expected!r}, "
                                       "its folder on this target (was the target's jobs folder changed while the run "
                                       "was going?)")
    return expected


@dataclass(frozen=True)
class JobSpec:
    """What to run once the snapshot is staged.

    :param argv: the command, relative to the job's ``work/`` folder.
    :param env: variables added to the job's environment.
    :param unset_env: variables removed from the inherited environment.
    :param path_prepend: folders put in front of the job's ``PATH`` (the environment's ``bin``).
    :param max_run_duration_seconds: limit enforced by the runner on the target; None for none.
    :param grace_seconds: time between SIGTERM and SIGKILL when the job is stopped.
    :param secret_names: variables of ``env`` whose values are secrets: the supervisor removes them
        from ``job.json`` as soon as it has read it, so no folder kept on a target holds them.
    :param resources: what the run asked for (only fields in the target's ``supported_resources``).
    :param system_metrics_interval_seconds: how often the supervisor samples the node's use into the
        events file (MLflow's ``system/...`` metrics); None for never.
    :param node_reservations: for a multi-node run, the GPUs its supervisor reserves on the other
        nodes before the launcher starts (``{"first_host", "nodes"}``, see
        :class:`airflow_provider.runtime.host_resources.NodeHolders`).
    """

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    unset_env: tuple[str, ...] = ()
    path_prepend: tuple[str, ...] = ()
    max_run_duration_seconds: float | None = None
    grace_seconds: float = 10.0
    secret_names: tuple[str, ...] = ()
    resources: Resources | None = None
    system_metrics_interval_seconds: float | None = None
    node_reservations: dict[str, Any] | None = None

    def to_job_json(self, with_secrets: bool = True) -> job_runner.JobJson:
        """The runner's ``job.json``.

        :param with_secrets: False leaves the secret values out (a node of a multi-node run that
            only holds the folder: its ranks get their environment from the launcher).
        """
        secret = set(self.secret_names)
        return {
            "argv": list(self.argv),
            "env": {k: v for k, v in self.env.items() if with_secrets or k not in secret},
            "secret_env": sorted(secret & set(self.env)),
            "unset_env": list(self.unset_env),
            "path_prepend": list(self.path_prepend),
            "max_run_duration_seconds": self.max_run_duration_seconds,
            "grace_seconds": self.grace_seconds,
            "system_metrics_interval_seconds": self.system_metrics_interval_seconds,
            **({"node_reservations": self.node_reservations} if self.node_reservations else {}),
        }


@dataclass(frozen=True)
class JobHandle:
    """Enough to find a job again from any process: crosses XCom and triggers.

    :param target: the target kind (``"local"``, ``"docker"``, ...).
    :param job_id: the job's id (the MLflow run id).
    :param location: where the job folder is on the target.
    :param host: the machine whose processes run the job, for a target whose jobs live on the
        machine that started them (the local target's host name); empty for a target every
        machine reaches.
    """

    target: str
    job_id: str
    location: str
    host: str = ""

    def __post_init__(self) -> None:
        check_job_id(self.job_id)

    def to_dict(self) -> dict[str, str]:
        """Serialise to plain strings."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobHandle:
        """Rebuild from :meth:`to_dict` output.

        :param data: the serialised handle.
        """
        return cls(str(data["target"]), str(data["job_id"]), str(data["location"]), str(data.get("host", "")))


@dataclass(frozen=True)
class JobStatus:
    """What a poll learned.

    :param state: ``queued`` (waiting in the target's scheduler; ``message`` says why); ``running``;
        ``ended`` (``exit.json`` written, or the target's scheduler says how the job ended); ``lost``
        (the runner died without writing it); ``not_found`` (no such job folder).
    :param exit_code: the command's exit code when it exited normally.
    :param signal: the signal that killed the command, if any.
    :param reason: ``exited``, ``timeout``, ``canceled`` or ``launch_failed`` (from the runner).
    :param message: the runner's explanation.
    """

    state: JobState
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    message: str = ""

    @property
    def active(self) -> bool:
        """The job has not ended: it is queued or running."""
        return self.state in ("queued", "running")

    @property
    def succeeded(self) -> bool:
        """The command ran to its end and exited 0."""
        return self.state == "ended" and self.reason == "exited" and self.exit_code == 0

    @classmethod
    def from_job_state(cls, data: dict[str, Any]) -> JobStatus:
        """From :func:`job_runner.job_state` output (which may come from another machine)."""
        if data["state"] == "ended":
            return cls.from_exit_json(data["exit"])
        return cls(data["state"], message=data.get("message", ""))

    @classmethod
    def from_exit_json(cls, data: job_runner.ExitJson) -> JobStatus:
        """Build from the runner's ``exit.json``.

        :param data: the parsed file.
        """
        return cls("ended", data.get("exit_code"), data.get("signal"), str(data.get("reason", "")),
                   str(data.get("message", "")))


class ComputeTarget(abc.ABC):
    """Where a run's job executes. One subclass per kind; see the module docstring."""

    kind: ClassVar[str]
    supported_resources: ClassVar[frozenset[str]] = frozenset()
    """The :class:`~airflow_provider.core.resources.Resources` fields this target honours; a run
    asking for another is refused before any compute is used (:meth:`check_resources`)."""

    def check_resources(self, resources: Resources | None, field: str = "ScriptRunConfig.resources") -> None:
        """Refuse what this target cannot give, naming the first field it does not honour.

        :param resources: what the run asks for.
        :param field: how the caller names the resources in messages.
        :raises ConfigurationError: a field this target does not honour.
        """
        for name in resources.requested() if resources is not None else []:
            if name not in self.supported_resources:
                honoured = ", ".join(sorted(self.supported_resources)) or "none yet"
                raise ConfigurationError(f"{field}.{name}",
                                         f"is not honoured by the {self.kind} target (it honours: {honoured}).",
                                         f"remove {name}, or run on a target that honours it.")

    @abc.abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """Plain data that rebuilds this target in another process (:func:`target_from_spec`).

        It may hold credentials: pass it to processes on this machine only, never log it.
        """

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, spec: dict[str, Any]) -> ComputeTarget:
        """Rebuild a target from :meth:`to_spec` output.

        :param spec: the serialised target.
        """

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the run's details, e.g. ``"local (this machine: host1)"``."""

    def distribution_launcher(self, config: DistributedConfig) -> str:
        """What starts a distributed run's processes here (recorded on the run): ``mpirun`` for MPI,
        ``torchrun`` for PyTorch, one process per task with its ``TF_CONFIG`` for TensorFlow.

        :param config: the run's distribution.
        """
        if isinstance(config, MpiConfiguration):
            return "mpirun"
        if isinstance(config, PyTorchConfiguration):
            return "torchrun"
        return "TF_CONFIG"

    def secret_environment(self) -> dict[str, str]:
        """Variables a detached process (the finalizer) needs to rebuild this target from
        :meth:`to_spec`, which never holds secrets; empty by default."""
        return {}

    def check(self) -> None:  # noqa: B027 - optional hook with a sensible default
        """Raise :class:`TargetError` when the target cannot be used now (retryable), or
        :class:`TargetConfigurationError` when it cannot be used as configured (before any compute)."""

    @abc.abstractmethod
    def prepare_environment(self, environment: Environment | None) -> PreparedEnvironment:
        """Make the environment ready on the target; a cache hit must be nearly free."""

    @abc.abstractmethod
    def stage(self, job_id: str, snapshot: Snapshot, store: SnapshotStore, extras: Mapping[str, bytes],
              environment: PreparedEnvironment) -> JobHandle:
        """Create the job folder and put the snapshot's files in its ``work/`` folder.

        :param job_id: the job's id (the MLflow run id).
        :param snapshot: what to put in ``work/``.
        :param store: where the snapshot's blobs are.
        :param extras: more files for the job folder, by relative path (the run-context runtime).
        :param environment: the prepared environment (a container target creates its container from
            its image here).
        """

    stages_resources: ClassVar[bool] = False
    """True when the run's resources are applied by :meth:`stage` (its ``resources`` argument): a
    container target, whose limits are fixed when the container is created."""

    binds_mounts: ClassVar[bool] = False
    """True when ``mount`` inputs are bound into the job by :meth:`stage` (its ``mounts``
    argument: ``{path on the host: path in the job}``); a container target."""

    def mount_input(self, name: str, path: str, field: str) -> str:
        """Where a ``mount`` input's ``path`` (one the target's machines already see) is in the job;
        refused by default.

        :param name: the input's name.
        :param path: the path on the target's host (the Docker daemon's, the cluster's filesystem).
        :param field: how messages name the input.
        :raises ConfigurationError: this target cannot mount.
        """
        raise ConfigurationError(f"{field}.mode", f"the {self.kind} target cannot mount {path!r}: its hosts do not "
                                 "share this machine's filesystem.",
                                 "use mode='download' (copied to the target, cached there) or 'direct' (the script "
                                 "reads the URI itself).")

    def job_paths(self, handle: JobHandle) -> dict[str, str]:
        """Absolute paths of the job folder's parts as the job itself sees them.

        :param handle: the job.
        :return: ``job_dir``, ``events`` and ``uploads`` paths.
        """
        return {
            "job_dir": handle.location,
            "events": f"{handle.location}/{job_runner.EVENTS_FILE}",
            "uploads": f"{handle.location}/{job_runner.UPLOADS_DIR}",
        }

    @abc.abstractmethod
    def launch(self, handle: JobHandle, spec: JobSpec) -> None:
        """Start the job detached, so it outlives the caller."""

    @abc.abstractmethod
    def find(self, job_id: str) -> JobHandle | None:
        """Find an existing job folder by id (for reattaching), None when there is none."""

    def was_launched(self, handle: JobHandle) -> bool:
        """Whether a job found staged was launched, though its run never recorded it (the process
        that launched it died at that moment): a retried submit then reattaches instead of
        replacing the run. Targets that cannot tell answer False (the run is replaced).

        :param handle: the job, as :meth:`find` returned it.
        """
        return False

    @abc.abstractmethod
    def poll(self, handle: JobHandle) -> JobStatus:
        """Report whether the job runs, ended (and how) or was lost."""

    max_nodes: ClassVar[int] = 1
    """How many nodes a distributed run may span on this target."""
    wakes_on_end: ClassVar[bool] = False
    """True when :meth:`wait` returns as soon as the job ends, so the watcher need not poll fast."""

    def wait(self, handle: JobHandle, timeout: float) -> None:
        """Block up to ``timeout`` seconds between two polls; a target that can tell when the job
        ends returns as soon as it does (the default just sleeps).

        :param handle: the job.
        :param timeout: the longest wait, in seconds.
        """
        time.sleep(timeout)

    @abc.abstractmethod
    def read(self, handle: JobHandle, channel: Channel, offset: int, limit: int = 4 << 20) -> bytes:
        """Return up to ``limit`` bytes of the driver log or events file from ``offset``."""

    def read_grown(self, handle: JobHandle, relative_dir: str, sent: Mapping[str, int],
                   scratch: Path) -> dict[str, Grown]:
        """What the files of the job folder's ``relative_dir`` gained past ``sent`` (a job's live
        ``./logs``: :mod:`~airflow_provider.core.live_logs`). By default the folder is fetched and
        compared here; a target that reads its files in place from an offset sends only the new bytes.

        :param handle: the job.
        :param relative_dir: a folder inside the job folder, e.g. ``"work/logs"``.
        :param sent: the bytes already read of each file, by its path inside the folder.
        :param scratch: a local folder the target may copy into.
        """
        folder = self.fetch(handle, relative_dir, scratch)
        if folder is None or folder.is_symlink() or not folder.is_dir():
            return {}
        return grown_files(folder, sent)

    @abc.abstractmethod
    def fetch(self, handle: JobHandle, relative_path: str, scratch: Path) -> Path | None:
        """Make a file or folder of the job folder readable here.

        :param relative_path: path inside the job folder, e.g. ``"work/outputs"``.
        :param scratch: a local folder the target may copy into.
        :return: a local path (inside ``scratch`` or the original on a local target), or None
            when it does not exist.
        """

    @abc.abstractmethod
    def cancel(self, handle: JobHandle, grace_seconds: float = 10.0, wait: bool = True) -> None:
        """Stop the job's whole process tree: SIGTERM, ``grace_seconds``, then SIGKILL.

        :param handle: the job.
        :param grace_seconds: time between SIGTERM and SIGKILL when the target stops it itself.
        :param wait: wait until the job has ended (False: ask its supervisor to stop it, return).
        """

    @abc.abstractmethod
    def cleanup(self, handle: JobHandle) -> None:
        """Remove what the job left on the target (its job folder)."""
