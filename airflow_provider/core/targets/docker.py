"""The Docker target: each job runs in its own container of a Docker daemon (local or remote).

Nothing is bind-mounted: the job folder (snapshot, run-context runtime, supervisor) goes into a
fresh container with ``put_archive`` and files come back with ``get_archive`` (or ``exec`` while
the container runs), so a daemon reached over TCP works like the local socket. The container's
main process is :mod:`job_runner`, as on every target; containers carry the labels
``training.run_id`` and ``training.managed`` so a retried task finds its container again.

This first version runs environments whose image exists on the daemon (``docker.base_image``,
or the target's default image) as they are; images built from pip requirements come next.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from airflow_provider.core.environment import Environment
from airflow_provider.core.environment_cache import PreparedEnvironment, environment_fingerprint
from airflow_provider.core.errors import ConfigurationError, TargetError
from airflow_provider.core.snapshot import Snapshot, SnapshotStore
from airflow_provider.core.targets import job_runner
from airflow_provider.core.targets.base import Channel, ComputeTarget, JobHandle, JobSpec, JobStatus

__all__ = ["DEFAULT_IMAGE", "DockerTarget"]

DEFAULT_IMAGE = "training-runs/python:3.11"
JOB_ROOT = "/job"
LABEL_RUN_ID = "training.run_id"
LABEL_MANAGED = "training.managed"
_FILES: dict[str, str] = {"driver": job_runner.DRIVER_LOG, "events": job_runner.EVENTS_FILE}


class DockerTarget(ComputeTarget):
    """Run jobs in containers.

    :param base_url: the daemon, e.g. ``unix:///var/run/docker.sock`` or ``tcp://127.0.0.1:2375``.
    :param image: the image for runs whose environment names none.
    :param python: the interpreter inside the image.
    :param run_options: extra ``containers.create`` options (network, user, mem_limit, shm_size,
        nano_cpus, device_requests, volumes, labels).
    """

    kind: ClassVar[str] = "docker"

    def __init__(self, base_url: str | None = None, image: str = DEFAULT_IMAGE, python: str = "python3",
                 run_options: dict[str, Any] | None = None) -> None:
        self.base_url = base_url
        self.image = image
        self.python = python
        self.run_options = dict(run_options or {})
        self._client: Any = None

    # ------------------------------------------------------------------ plumbing
    @property
    def client(self) -> Any:
        """The docker SDK client, connected on first use."""
        if self._client is None:
            import docker

            try:
                self._client = docker.DockerClient(base_url=self.base_url) if self.base_url else docker.from_env()
                self._client.ping()
            except Exception as exc:
                self._client = None
                raise TargetError(
                    f"the Docker daemon at {self.base_url or 'DOCKER_HOST / the local socket'} cannot be reached "
                    f"({exc}). Start dockerd, or fix the connection's daemon URL."
                ) from exc
        return self._client

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "base_url": self.base_url, "image": self.image, "python": self.python,
                "run_options": self.run_options}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> DockerTarget:
        return cls(spec.get("base_url"), spec.get("image", DEFAULT_IMAGE), spec.get("python", "python3"),
                   spec.get("run_options"))

    def describe(self) -> str:
        return f"docker ({self.base_url or 'local daemon'})"

    def check(self) -> None:
        _ = self.client

    def _container(self, handle: JobHandle) -> Any:
        import docker

        try:
            return self.client.containers.get(handle.location)
        except docker.errors.NotFound:
            return None

    # ------------------------------------------------------------------ environment and staging
    def prepare_environment(self, environment: Environment | None) -> PreparedEnvironment:
        if environment is not None and environment.kind == "pip":
            raise ConfigurationError(
                "environment.python.pip_packages",
                "images built from pip requirements are not available on the Docker target in this version.",
                "bake the packages into an image and set environment.docker.base_image with "
                "python.user_managed_dependencies=True.",
            )
        image = (environment.docker.base_image if environment is not None else None) or self.image
        python = (environment.python.interpreter_path if environment is not None else None) or self.python
        try:
            image_id = str(self.client.images.get(image).id)
        except Exception as exc:
            raise ConfigurationError(
                "environment.docker.base_image", f"image {image!r} is not on the Docker daemon ({exc}).",
                "build or load it on the daemon first (no registry is reachable from here).",
            ) from exc
        fingerprint = environment_fingerprint(environment, image_id)
        return PreparedEnvironment(environment.kind if environment is not None else "current", python, fingerprint,
                                   False, None, f"image {image} ({image_id[:19]}), interpreter {python}", image)

    def stage(self, job_id: str, snapshot: Snapshot, store: SnapshotStore, extras: Mapping[str, bytes],
              environment: PreparedEnvironment) -> JobHandle:
        """Create the job's container from the environment's image (not started) and put the job
        folder into it."""
        image = environment.image or self.image
        options = dict(self.run_options)
        labels = {**options.pop("labels", {}), LABEL_RUN_ID: job_id, LABEL_MANAGED: "true"}
        container = self.client.containers.create(
            image, [self.python, "-I", "-S", f"{JOB_ROOT}/job_runner.py", JOB_ROOT], labels=labels,
            name=f"training-run-{job_id}", detach=True, **options,
        )
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            _add_folder(tar, "job")
            for folder in (job_runner.UPLOADS_DIR, job_runner.WORK_DIR):
                _add_folder(tar, f"job/{folder}")
            for entry in snapshot.entries:
                info = tarfile.TarInfo(f"job/{job_runner.WORK_DIR}/{entry.path}")
                info.size = entry.size
                info.mode = 0o755 if entry.executable else 0o644
                with open(store.blob_path(entry.digest), "rb") as blob:
                    tar.addfile(info, blob)
            runner = Path(job_runner.__file__).read_bytes()
            for relative, content in {**extras, "job_runner.py": runner}.items():
                info = tarfile.TarInfo(f"job/{relative}")
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        container.put_archive("/", archive.getvalue())
        return JobHandle(self.kind, job_id, str(container.id))

    def launch(self, handle: JobHandle, spec: JobSpec) -> None:
        container = self._container(handle)
        if container is None:
            raise TargetError(f"the container of job {handle.job_id} is gone before it started")
        _put_file(container, f"{JOB_ROOT}/{job_runner.JOB_SPEC}", json.dumps(spec.to_job_json()).encode(), 0o600)
        try:
            container.start()
        except Exception as exc:
            raise TargetError(f"the container of job {handle.job_id} did not start: {exc}") from exc

    def job_paths(self, handle: JobHandle) -> dict[str, str]:
        return {"job_dir": JOB_ROOT, "events": f"{JOB_ROOT}/{job_runner.EVENTS_FILE}",
                "uploads": f"{JOB_ROOT}/{job_runner.UPLOADS_DIR}"}

    def find(self, job_id: str) -> JobHandle | None:
        found = self.client.containers.list(all=True, filters={"label": f"{LABEL_RUN_ID}={job_id}"})
        return JobHandle(self.kind, job_id, str(found[0].id)) if found else None

    # ------------------------------------------------------------------ watching
    def poll(self, handle: JobHandle) -> JobStatus:
        container = self._container(handle)
        if container is None:
            return JobStatus("not_found")
        state = container.attrs.get("State", {})
        if state.get("Status") == "running":
            return JobStatus("running")
        exit_state = _get_file(container, f"{JOB_ROOT}/{job_runner.EXIT_STATE}")
        if exit_state is not None:
            status = JobStatus.from_exit_json(json.loads(exit_state))
            if state.get("OOMKilled"):
                return JobStatus(status.state, status.exit_code, status.signal, status.reason,
                                 f"{status.message}: the container ran out of memory (OOMKilled at its limit of "
                                 f"{container.attrs['HostConfig'].get('Memory')} bytes); raise mem_limit")
            return status
        if state.get("OOMKilled"):
            return JobStatus("lost", message=f"the container ran out of memory and was killed (OOMKilled, exit code "
                                             f"{state.get('ExitCode')}); raise the memory limit (mem_limit)")
        if state.get("Status") == "created":
            if state.get("Error"):
                return JobStatus("lost", message=f"the container never started: {state['Error']}")
            return JobStatus("running")  # launched a moment ago
        return JobStatus("lost", message=f"the container exited with code {state.get('ExitCode')} before its "
                                         f"supervisor recorded an ending: {state.get('Error') or 'no error reported'}")

    def read(self, handle: JobHandle, channel: Channel, offset: int, limit: int = 4 << 20) -> bytes:
        container = self._container(handle)
        if container is None:
            return b""
        path = f"{JOB_ROOT}/{_FILES[channel]}"
        if container.status == "running":
            tail = _tail_running(container, path, offset)
            if tail is not None:
                return tail[:limit]
        content = _get_file(container, path)  # works whether the container runs or not
        return (content or b"")[offset : offset + limit]

    def fetch(self, handle: JobHandle, relative_path: str, scratch: Path) -> Path | None:
        container = self._container(handle)
        if container is None:
            return None
        import docker

        try:
            stream, _ = container.get_archive(f"{JOB_ROOT}/{relative_path}")
        except docker.errors.NotFound:
            return None
        destination = scratch / "fetched" / relative_path.replace("/", "_")
        if destination.exists():
            shutil.rmtree(destination)
        destination.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            tar.extractall(destination, filter="data")
        return destination / Path(relative_path).name

    # ------------------------------------------------------------------ control
    def cancel(self, handle: JobHandle, grace_seconds: float = 10.0, wait: bool = True) -> None:
        container = self._container(handle)
        if container is None or container.status != "running":
            return
        container.kill(signal="SIGTERM")  # the supervisor (PID 1) stops the tree, records it, exits
        if not wait:
            return
        deadline = time.monotonic() + grace_seconds + 10
        while time.monotonic() < deadline:
            container.reload()
            if container.status != "running":
                return
            time.sleep(0.1)
        container.kill()
        container.wait(timeout=30)
        _put_file(container, f"{JOB_ROOT}/{job_runner.EXIT_STATE}", json.dumps({
            "exit_code": None, "signal": 9, "reason": job_runner.REASON_CANCELED,
            "message": "the run was canceled (its container had to be killed)", "ended_at": time.time(),
        }).encode(), 0o644)

    def cleanup(self, handle: JobHandle) -> None:
        container = self._container(handle)
        if container is not None:
            container.remove(force=True)


def _add_folder(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def _put_file(container: Any, path: str, content: bytes, mode: int) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(Path(path).name)
        info.size = len(content)
        info.mode = mode
        tar.addfile(info, io.BytesIO(content))
    container.put_archive(str(Path(path).parent), archive.getvalue())


def _tail_running(container: Any, path: str, offset: int) -> bytes | None:
    """The bytes of ``path`` from ``offset`` on, read by ``exec`` in the running container;
    None when the container stopped meanwhile (the caller reads the file from its filesystem)."""
    import docker

    try:
        code, output = container.exec_run(["tail", "-c", f"+{offset + 1}", path], demux=False)
    except docker.errors.APIError:
        container.reload()
        if container.status != "running":  # it ended between the poll and this read
            return None
        raise
    return bytes(output or b"") if code == 0 else b""


def _get_file(container: Any, path: str) -> bytes | None:
    import docker

    try:
        stream, _ = container.get_archive(path)
    except docker.errors.NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.next()
        handle = tar.extractfile(member) if member is not None else None
        return handle.read() if handle is not None else None
