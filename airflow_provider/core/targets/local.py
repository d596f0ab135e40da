"""The local target: jobs run as detached processes on this machine.

Job folders live under ``<state>/local/jobs/<job_id>``. The job's supervisor
(:mod:`job_runner`) is started as the leader of a new session, so the job outlives the process
that launched it (an Airflow worker, a deferred task's triggerer, a notebook).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from airflow_provider.core.environments.conda_builder import CondaMode
from airflow_provider.core.environments.local_cache import EnvironmentCache
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError, TargetError
from airflow_provider.core.paths import private_folder, state_dir
from airflow_provider.core.resources import Resources
from airflow_provider.core.snapshot import Snapshot, SnapshotStore
from airflow_provider.core.targets.base import (
    Channel,
    ComputeTarget,
    JobHandle,
    JobSpec,
    JobStatus,
    check_job_id,
    job_dir_under,
)
from airflow_provider.core.targets.host_sharing import HOST_RESOURCE_FIELDS, HostSharing
from airflow_provider.runtime import job_runner

__all__ = ["LocalTarget"]

_CHANNEL_FILES: dict[str, str] = {"driver": job_runner.DRIVER_LOG, "events": job_runner.EVENTS_FILE}
_LAUNCH_TIMEOUT_SECONDS = 30.0


class LocalTarget(ComputeTarget):
    """Run jobs as processes on this machine.

    :param jobs_root: where job folders are made; default ``<state>/local/jobs``.
    :param environment_cache: the cache of managed virtual environments.
    :param conda: how conda specifications are built here when no ``environment_cache`` is given
        (``"auto"``, ``"rattler"``, ``"translate"``: see :class:`EnvironmentCache`).
    :param host_sharing: this machine's GPUs and reservation file (GPUs, CPUs and memory of runs:
        :mod:`~airflow_provider.core.targets.host_sharing`).
    """

    kind: ClassVar[str] = "local"
    supported_resources: ClassVar[frozenset[str]] = HOST_RESOURCE_FIELDS

    def __init__(self, jobs_root: str | Path | None = None,
                 environment_cache: EnvironmentCache | None = None, conda: CondaMode = "auto",
                 host_sharing: HostSharing | None = None) -> None:
        self.jobs_root = Path(jobs_root) if jobs_root else state_dir() / "local" / "jobs"
        self.host_sharing = host_sharing or HostSharing()
        self.environment_cache = environment_cache or EnvironmentCache(conda=conda)
        self._runners: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def conda(self) -> CondaMode:
        """How conda specifications are built here (the environment cache's setting)."""
        return self.environment_cache.conda

    @conda.setter
    def conda(self, mode: CondaMode) -> None:
        if mode not in ("auto", "rattler", "translate"):
            raise ConfigurationError("conda", f"is {mode!r}.", 'use "auto", "rattler" or "translate".')
        self.environment_cache.conda = mode

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "jobs_root": str(self.jobs_root), "conda": self.conda,
                "host_sharing": self.host_sharing.to_spec()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> LocalTarget:
        return cls(jobs_root=spec.get("jobs_root"), conda=spec.get("conda", "auto"),
                   host_sharing=HostSharing.from_spec(spec.get("host_sharing")))

    def check_resources(self, resources: Resources | None, field: str = "ScriptRunConfig.resources") -> None:
        """Refuse what this machine can never give: more GPUs than it declares (or than ``nvidia-smi
        -L`` lists), too little memory to start."""
        super().check_resources(resources, field)
        discovered = None
        if resources is not None and resources.gpus and self.host_sharing.gpus is None:
            from airflow_provider.runtime.gpu_reservations import discover_gpus

            discovered = tuple(discover_gpus())
        self.host_sharing.check(resources, f"this machine ({socket.gethostname()})", field, discovered)

    def describe(self) -> str:
        return f"local ({socket.gethostname()})"

    def prepare_environment(self, environment: Environment | None) -> PreparedEnvironment:
        return self.environment_cache.prepare(environment)

    def job_dir(self, handle: JobHandle) -> Path:
        """The job folder of ``handle`` (checked to be a folder of :attr:`jobs_root`, on this machine).

        :raises TargetError: the job runs on another machine: only its own machine can watch,
            stop or collect it (a retry or a trigger on another Airflow worker cannot).
        """
        here = socket.gethostname()
        if handle.host and handle.host != here:
            raise TargetError(
                f"the local-target job of run {handle.job_id} runs on the machine {handle.host!r}, and this "
                f"process runs on {here!r}: a local job is watched, stopped and collected only where it runs. "
                "Route the task's retries to that machine (a Celery queue only it serves), run a triggerer "
                "there or leave deferrable=False, or use a target every worker reaches (Docker, SSH)"
            )
        return Path(job_dir_under(str(self.jobs_root), handle))

    def mount_input(self, name: str, path: str, field: str) -> str:
        """A ``mount`` input of a local run is the path itself (this machine sees it)."""
        if not os.path.exists(path):
            raise ConfigurationError(f"{field}.uri", f"{path!r} does not exist on this machine.",
                                     "check the path (a retry helps only once the data is there).")
        return path

    def stage(self, job_id: str, snapshot: Snapshot, store: SnapshotStore, extras: Mapping[str, bytes],
              environment: PreparedEnvironment) -> JobHandle:
        job_dir = self.jobs_root / check_job_id(job_id)
        private_folder(self.jobs_root)
        job_dir.mkdir(mode=0o700, exist_ok=True)
        (job_dir / job_runner.UPLOADS_DIR).mkdir(exist_ok=True)
        for relative, content in extras.items():
            path = job_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        work = job_dir / job_runner.WORK_DIR
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()
        store.materialize(snapshot, work)
        return JobHandle(self.kind, job_id, str(job_dir), host=socket.gethostname())

    def launch(self, handle: JobHandle, spec: JobSpec) -> None:
        job_dir = self.job_dir(handle)
        spec_path = job_dir / job_runner.JOB_SPEC
        descriptor = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle_file:
            json.dump({**spec.to_job_json(), **self.host_sharing.job_json(spec.resources)}, handle_file)
        try:
            self._runners[handle.job_id] = job_runner.start_supervisor(str(job_dir), _LAUNCH_TIMEOUT_SECONDS)
        except RuntimeError as exc:
            raise TargetError(str(exc)) from exc

    def find(self, job_id: str) -> JobHandle | None:
        job_dir = self.jobs_root / check_job_id(job_id)
        if not (job_dir / job_runner.JOB_SPEC).exists():
            return None
        return JobHandle(self.kind, job_id, str(job_dir), host=socket.gethostname())

    def poll(self, handle: JobHandle) -> JobStatus:
        job_dir = self.job_dir(handle)
        runner = self._runners.get(handle.job_id)
        if runner is not None:
            runner.poll()  # reap the supervisor when it has exited
        return JobStatus.from_job_state(job_runner.job_state(str(job_dir)))

    def read(self, handle: JobHandle, channel: Channel, offset: int, limit: int = 4 << 20) -> bytes:
        try:
            with open(self.job_dir(handle) / _CHANNEL_FILES[channel], "rb") as stream:
                stream.seek(offset)
                return stream.read(limit)
        except FileNotFoundError:
            return b""

    def fetch(self, handle: JobHandle, relative_path: str, scratch: Path) -> Path | None:
        path = self.job_dir(handle) / relative_path
        return path if path.exists() else None

    def cancel(self, handle: JobHandle, grace_seconds: float = 10.0, wait: bool = True) -> None:
        job_runner.cancel_job(str(self.job_dir(handle)), grace_seconds, wait)

    def cleanup(self, handle: JobHandle) -> None:
        self._runners.pop(handle.job_id, None)
        shutil.rmtree(self.job_dir(handle), ignore_errors=True)
