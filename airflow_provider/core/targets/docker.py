"""The Docker target: each job runs in its own container of a Docker daemon (local or remote).

Nothing is bind-mounted, so a daemon reached over TCP works like the local socket. A container's
command is :mod:`~airflow_provider.runtime.container_entry`: launching attaches to the container,
starts it and streams the job folder (snapshot, run-context runtime, supervisor, ``job.json``) to
its stdin, which unpacks it and runs :mod:`job_runner` in the same process, as on every target.
The supervisor echoes ``driver.log`` on the container's stdout and prints its exit line on
stderr; the launching process reads both from the attach stream it keeps (:class:`ContainerOutput`),
so the driver log never has to be copied out at the end. Any other process (a retried task, a
trigger) reads files with ``get_archive`` (or ``exec`` while the container runs, for a large log).
Containers carry the labels ``training.run_id`` and ``training.managed`` so a retried task finds
its container again.

Environments become images once per fingerprint (:mod:`docker_images`): a base image as it is, or
one built from a Dockerfile and/or pip requirements.

Errors: docker's own exceptions never leave this target. :func:`_docker_errors` (on every method of
the target contract) maps them onto the error tree: the daemon unreachable or answering 5xx is a
:class:`TargetError` (retryable), a request the daemon refuses as invalid (4xx but 404/409) a
:class:`TargetConfigurationError`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Concatenate, ParamSpec, TypeVar

from airflow_provider.core.background import BackgroundCall
from airflow_provider.core.collect import tolerant_tar_filter
from airflow_provider.core.data.inputs import INPUTS_DIR
from airflow_provider.core.environments.conda_builder import CondaMode, translated_when_unreachable
from airflow_provider.core.environments.docker_images import IMAGE_REPOSITORY
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError, TargetConfigurationError, TargetError, TrainingRunError
from airflow_provider.core.resources import Resources
from airflow_provider.core.snapshot import Snapshot, SnapshotStore
from airflow_provider.core.targets.base import Channel, ComputeTarget, JobHandle, JobSpec, JobStatus
from airflow_provider.core.targets.docker_input_cache import (
    CACHE_MOUNT,
    DEFAULT_VOLUME,
    CachedBlob,
    check_volume_name,
    link_target,
    sync_blobs,
)
from airflow_provider.core.targets.docker_resources import (
    LABEL_MEMORY_LIMIT,
    check_gpu_runtime,
    container_limits,
    memory_limit_source,
    out_of_memory_message,
)
from airflow_provider.core.targets.docker_streams import (
    END,
    ENTRY_PROGRAM,
    ContainerOutput,
    FileRecord,
    close_stream,
    last_exit_line,
    raw_socket,
    record,
)
from airflow_provider.runtime import compiled_supervisor, host_files, job_runner

__all__ = ["DEFAULT_IMAGE", "DockerTarget"]

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "training-runs/python:3.11"
JOB_ROOT = "/job"
LABEL_RUN_ID = "training.run_id"
LABEL_MANAGED = "training.managed"
_FILES: dict[str, str] = {"driver": job_runner.DRIVER_LOG, "events": job_runner.EVENTS_FILE}
_COPY_WHOLE_BELOW = 1 << 20
"""A running job's log smaller than this is read whole (``get_archive``); a larger one by ``exec tail``."""
_TLS_FILES: dict[str, tuple[str, str]] = {"ca_cert": ("TLS CA certificate", "tls_ca_cert"),
                                           "client_cert": ("TLS client certificate", "tls_client_cert"),
                                           "client_key": ("TLS client key", "tls_client_private_key")}
"""tls key: what it is, and the connection's extra field that sets it."""
_INLINE_BYTES = 256 * 1024
"""Snapshot files up to this size are read when the job is staged; larger ones (data inputs) while
the job folder is sent."""
_UNREACHABLE_FIX = "Fix: start dockerd there, or fix the connection's daemon URL (host)."
_P = ParamSpec("_P")
_R = TypeVar("_R")


def docker_error(exc: BaseException, target: DockerTarget, call: str) -> TargetError:
    """The error of the tree for an exception the docker SDK raised (raise it ``from exc``).

    :param exc: what docker (or requests below it) raised.
    :param target: the target, for the message.
    :param call: what failed, for the message.
    """
    message = f"{target.describe()}: {call} failed ({type(exc).__name__}: {_first_line(exc)})"
    status = int(getattr(getattr(exc, "response", None), "status_code", 0) or 0)
    if 400 <= status < 500 and status not in (404, 409):  # the daemon refuses the request as it is
        return TargetConfigurationError(f"{message}. Fix: check the connection's run options.")
    return TargetError(f"{message}; the daemon may be restarting or unreachable: a retry may help.")


def _docker_errors(method: Callable[Concatenate[DockerTarget, _P], _R]) -> Callable[Concatenate[DockerTarget, _P], _R]:
    """Let only errors of the tree out of a :class:`DockerTarget` method; the original is the cause."""

    @functools.wraps(method)
    def translated(self: DockerTarget, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        import docker
        import requests

        try:
            return method(self, *args, **kwargs)
        except TrainingRunError:
            raise
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise docker_error(exc, self, method.__name__) from exc

    return translated


class DockerTarget(ComputeTarget):
    """Run jobs in containers.

    :param base_url: the daemon, e.g. ``unix:///var/run/docker.sock`` or ``tcp://127.0.0.1:2375``.
    :param image: the image for runs whose environment names none.
    :param python: the interpreter inside the image.
    :param run_options: extra ``containers.create`` options (network, user, mem_limit, shm_size,
        nano_cpus, device_requests, volumes, labels).
    :param tls: TLS to a ``tcp://`` daemon: ``ca_cert``, ``client_cert`` and ``client_key`` (paths of
        PEM files), ``verify`` (check the daemon's certificate against ``ca_cert``; default True) and
        ``assert_hostname`` (the name the daemon's certificate must carry when it is not the URL's host).
        Kept in :meth:`to_spec` (paths only).
    :param registry_auth: credentials for pulling base images (``username``, ``password``,
        ``serveraddress``). Never part of :meth:`to_spec`: the spec ends up on a command line.
    :param conda: how conda specifications are built: ``"rattler"`` (a real conda environment in the
        image, installed offline by py-rattler during the build), ``"translate"`` (a virtual
        environment from PyPI) or ``"auto"`` (``"rattler"`` when py-rattler is installed here).
    :param input_cache_volume: the volume on the daemon's host that keeps downloaded inputs by
        content, so a run sends only the input files the volume lacks (see
        :mod:`~airflow_provider.core.targets.docker_input_cache`); None sends them with every job.
    """

    kind: ClassVar[str] = "docker"
    wakes_on_end: ClassVar[bool] = True
    build_timeout_seconds: float = 1800.0
    """An image build that prints nothing for this long fails."""

    def __init__(self, base_url: str | None = None, image: str = DEFAULT_IMAGE, python: str = "python3",
                 run_options: dict[str, Any] | None = None, *, tls: dict[str, Any] | None = None,
                 registry_auth: dict[str, str] | None = None, conda: CondaMode = "auto",
                 input_cache_volume: str | None = DEFAULT_VOLUME) -> None:
        if conda not in ("auto", "rattler", "translate"):
            raise ConfigurationError("conda", f"is {conda!r}.", 'use "auto", "rattler" or "translate".')
        self.conda = conda
        self.input_cache_volume = (None if input_cache_volume is None
                                   else check_volume_name(input_cache_volume, "input_cache_volume"))
        self.blob_bytes_sent = 0
        """Bytes of data input files sent to the daemon by this target object (to its cache volume,
        or with the job when there is none)."""
        self.base_url = base_url
        self.image = image
        self.python = python
        self.run_options = dict(run_options or {})
        self.tls: dict[str, Any] | None = dict(tls) if tls else None
        self.registry_auth: dict[str, str] | None = dict(registry_auth) if registry_auth else None
        self._client: Any = None
        self._unsent: dict[str, list[bytes | FileRecord]] = {}  # staged job folders (records) launch streams
        self._states: dict[str, str] = {}  # container status at the last poll
        self._ended_files: dict[str, dict[str, bytes | None]] = {}  # files of stopped containers
        self._sizes: dict[tuple[str, str], int] = {}  # size of a log file at its last read
        self._outputs: dict[str, ContainerOutput] = {}  # attach streams of containers launched here

    # ------------------------------------------------------------------ plumbing
    @property
    def client(self) -> Any:
        """The docker SDK client, connected on first use (over TLS when :attr:`tls` is set)."""
        if self._client is None:
            import docker

            where = self.base_url or "DOCKER_HOST / the local socket"
            tls = self._tls_config(where)
            try:
                if tls is not None:
                    self._client = _tls_client(str(self.base_url), tls, (self.tls or {}).get("assert_hostname"))
                else:
                    self._client = docker.DockerClient(base_url=self.base_url) if self.base_url else docker.from_env()
                self._client.ping()
            except Exception as exc:
                self._client = None
                fix = _connection_fix(exc, self.tls)
                error = TargetError if fix == _UNREACHABLE_FIX else TargetConfigurationError  # TLS: a setting
                raise error(f"the Docker daemon at {where} cannot be reached ({_first_line(exc)}). {fix}") from exc
        return self._client

    def _tls_config(self, where: str) -> Any:
        """The ``docker.tls.TLSConfig`` for :attr:`tls` (None without TLS), after checking its files.

        :param where: the daemon URL, for error messages.
        """
        if not self.tls:
            return None
        import docker.tls

        if not (self.base_url or "").startswith(("tcp://", "https://")):
            raise TargetConfigurationError(
                f"the Docker daemon at {where}: TLS settings need a tcp:// daemon URL. Fix: set the connection's "
                "host to e.g. tcp://127.0.0.1:2376, or remove the tls_* extra fields.")
        for key, (label, field) in _TLS_FILES.items():
            path = self.tls.get(key)
            if path and not (Path(path).is_file() and os.access(path, os.R_OK)):
                raise TargetConfigurationError(
                    f"the Docker daemon at {where}: the {label} {path} (connection extra {field}) is not a readable "
                    "file. Fix: give the path of a PEM file on this machine, or the PEM text itself.")
        cert_path, key_path = self.tls.get("client_cert"), self.tls.get("client_key")
        if bool(cert_path) != bool(key_path):
            raise TargetConfigurationError(
                f"the Docker daemon at {where}: a TLS client certificate needs its key and the other way round. "
                "Fix: set both tls_client_cert and tls_client_private_key, or neither.")
        return docker.tls.TLSConfig(client_cert=(cert_path, key_path) if cert_path and key_path else None,
                                    ca_cert=self.tls.get("ca_cert"), verify=bool(self.tls.get("verify", True)))

    def to_spec(self) -> dict[str, Any]:
        # registry_auth stays out on purpose: the spec is passed on a command line.
        return {"kind": self.kind, "base_url": self.base_url, "image": self.image, "python": self.python,
                "run_options": self.run_options, "tls": self.tls, "conda": self.conda,
                "input_cache_volume": self.input_cache_volume}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> DockerTarget:
        return cls(spec.get("base_url"), spec.get("image", DEFAULT_IMAGE), spec.get("python", "python3"),
                   spec.get("run_options"), tls=spec.get("tls"), conda=spec.get("conda", "auto"),
                   input_cache_volume=spec.get("input_cache_volume", DEFAULT_VOLUME))

    def describe(self) -> str:
        return f"docker ({self.base_url or 'local daemon'}{', TLS' if self.tls else ''})"

    def check(self) -> None:
        _ = self.client

    def check_resources(self, resources: Resources | None, field: str = "ScriptRunConfig.resources") -> None:
        """Refuse what the daemon cannot give, before anything is created: a field Docker does not
        honour, or GPUs (the run's, or the connection's ``gpus``) on a daemon without a GPU runtime.

        :param resources: what the run asks for.
        :param field: how the caller names the resources in messages.
        """
        super().check_resources(resources, field)
        if resources is not None and resources.gpus:
            asking = f"{field}.gpus"
        elif (resources is None or resources.gpus is None) and self.run_options.get("device_requests"):
            asking = "the connection's gpus"
        else:
            return
        check_gpu_runtime(self.client.info(), self.base_url or "the local socket", asking)

    # ------------------------------------------------------------------ environment and staging
    @_docker_errors
    def prepare_environment(self, environment: Environment | None) -> PreparedEnvironment:
        """Find or build the environment's image on the daemon (see :mod:`docker_images`)."""
        if environment is not None and environment.kind == "conda" and self.conda == "auto":
            return translated_when_unreachable("auto", lambda: self._prepare(environment, "auto"),
                                               lambda: self._prepare(environment, "translate"))
        return self._prepare(environment, self.conda)

    def _prepare(self, environment: Environment | None, conda: CondaMode) -> PreparedEnvironment:
        from airflow_provider.core.environments.docker_images import ImageBuilder

        builder = ImageBuilder(self.client, self.image, self.python, self.registry_auth,
                               self.build_timeout_seconds, conda=conda)
        resolved = builder.resolve(environment)
        how = ""  # a base image used as it is is neither built nor cached by us
        if resolved.image.startswith(f"{IMAGE_REPOSITORY}:"):
            how = ", built now" if resolved.built else ", cached"
        description = f"image {resolved.image} ({resolved.image_id[:19]}{how}), interpreter {resolved.python}"
        lock = resolved.lock
        if resolved.conda_lock is not None:
            count = sum(1 for line in resolved.conda_lock.splitlines() if "#sha256:" in line)
            description += (f", a conda environment of {count} packages solved here with py-rattler, sent in the "
                            "build context and installed offline")
        if lock is not None:
            description += f", from a lock of {len(lock.packages)} packages, " + (
                "wheels sent in the build context and installed offline" if lock.install_from == "submitter"
                else "installed from the image's package index")
        if environment is not None and environment.kind == "conda" and resolved.conda_lock is None:
            description += ", conda specification translated to a virtual environment from PyPI (extra conda)"
        return PreparedEnvironment(environment.kind if environment is not None else "current", resolved.python,
                                   resolved.fingerprint, resolved.built, resolved.build_log, description,
                                   resolved.image, build_log_artifact="image_build.log",
                                   lock=resolved.conda_lock if lock is None else lock.text())

    binds_mounts = True
    stages_resources = True
    supported_resources: ClassVar[frozenset[str]] = frozenset({"gpus", "cpus", "memory_gb", "shm_size_gb"})

    def mount_input(self, name: str, path: str, field: str) -> str:
        """A ``mount`` input is a read-only bind mount of ``path`` on the daemon's host, at
        ``/mnt/inputs/<name>`` in the container."""
        if not path.startswith("/"):
            raise ConfigurationError(f"{field}.uri", f"{path!r} is not an absolute path on the Docker host.",
                                     "give the absolute path the Docker daemon's host sees.")
        return f"/mnt/inputs/{name}"

    @_docker_errors
    def stage(self, job_id: str, snapshot: Snapshot, store: SnapshotStore, extras: Mapping[str, bytes],
              environment: PreparedEnvironment, mounts: Mapping[str, str] | None = None,
              resources: Resources | None = None) -> JobHandle:
        """Create the job's container from the environment's image (not started) and put the job
        folder into it.

        :param mounts: ``{path on the daemon's host: path in the container}``, bound read-only.
        :param resources: the run's own limits, over the connection's (:func:`container_limits`).
        """
        import docker

        image = environment.image or self.image
        binds = [f"{host}:{inside}:ro" for host, inside in (mounts or {}).items()]
        links, cache_folder = self._cached_inputs(image, job_id, snapshot, store)
        try:
            container = self._create(image, job_id, binds, cache_folder if links else None, resources)
        except docker.errors.APIError as exc:
            if not links:
                raise
            # a daemon that cannot bind its own volume's folder (Docker Desktop shares only the host's paths)
            log.warning("Job %s: the input cache folder %s cannot be bound (%s); its inputs are sent with it",
                        job_id, cache_folder, _first_line(exc))
            links = {}
            container = self._create(image, job_id, binds, resources=resources)
        records: list[bytes | FileRecord] = [record("d", 0o755, folder)
                                             for folder in (job_runner.UPLOADS_DIR, job_runner.WORK_DIR)]
        for entry in snapshot.entries:
            mode, path = 0o755 if entry.executable else 0o644, f"{job_runner.WORK_DIR}/{entry.path}"
            if entry.path in links:  # a data input's file: a link into the read-only cache volume
                records.append(record("s", 0o444, path, links[entry.path].encode()))
                continue
            if entry.path.startswith(f"{INPUTS_DIR}/"):
                self.blob_bytes_sent += entry.size
            if entry.size > _INLINE_BYTES:  # read while it is sent (a data input of gigabytes)
                records.append(FileRecord(mode, path, store.blob_path(entry.digest), entry.size))
                continue
            with open(store.blob_path(entry.digest), "rb") as blob:
                records.append(record("f", mode, path, blob.read()))
        supervisor_pyc, compiled = compiled_supervisor()
        supervisor_files = {name: host_files()[name] for name in ("job_runner.py", "system_metrics.py")}
        for relative, content in {**extras, **supervisor_files, supervisor_pyc: compiled}.items():
            records.append(record("f", 0o644, relative, content))
        self._unsent[str(container.id)] = records  # launch adds job.json and streams them
        return JobHandle(self.kind, job_id, str(container.id))

    def _create(self, image: str, job_id: str, binds: list[str], cache_folder: str | None = None,
                resources: Resources | None = None) -> Any:
        """Create the job's container (not started), with ``binds`` added to the run options' volumes
        and the job's input cache folder bound read-only (a bind mount: refused when the folder is
        missing, never replaced by an empty one)."""
        import docker

        options = {**self.run_options, **container_limits(resources)}
        if cache_folder is not None:
            options["mounts"] = [*options.get("mounts", []),
                                 docker.types.Mount(CACHE_MOUNT, cache_folder, type="bind", read_only=True)]
        if binds:
            given = options.get("volumes") or []
            if isinstance(given, dict):  # docker-py's {host: {"bind": ..., "mode": ...}} form
                given = [f"{host}:{spec['bind']}:{spec.get('mode', 'rw')}" for host, spec in given.items()]
            options["volumes"] = [*given, *binds]
        labels = {**options.pop("labels", {}), LABEL_RUN_ID: job_id, LABEL_MANAGED: "true",
                  LABEL_MEMORY_LIMIT: memory_limit_source(resources, self.run_options)}
        # stdin open, and closed once the launching process has sent the job folder (StdinOnce).
        return self.client.containers.create(
            image, [self.python, "-I", "-S", "-c", ENTRY_PROGRAM, JOB_ROOT], labels=labels,
            name=f"training-run-{job_id}", stdin_open=True, detach=False, **options,
        )

    def _cached_inputs(self, image: str, job_id: str, snapshot: Snapshot,
                       store: SnapshotStore) -> tuple[dict[str, str], str]:
        """Bring the cache volume up to date with the job's data input files and make the job's folder
        of links to them; return each file's link target (by snapshot path) and that folder on the
        daemon's host. Nothing without inputs or a cache volume; when the sync fails, the inputs go
        with the job (as without a cache), and the log says why."""
        import docker
        import requests

        inputs = [entry for entry in snapshot.entries
                  if entry.path.startswith(f"{INPUTS_DIR}/") and not entry.executable]  # a link keeps no mode
        if not inputs or self.input_cache_volume is None:
            return {}, ""
        blobs = {entry.digest: CachedBlob(entry.digest, entry.size, store.blob_path(entry.digest)) for entry in inputs}
        try:
            attributes = self.client.volumes.get(self.input_cache_volume).attrs
        except docker.errors.NotFound:
            attributes = {"Driver": "local"}  # the sync creates it
        if attributes.get("Driver") != "local" or attributes.get("Options"):
            log.warning("Job %s: the input cache volume %s is not a plain local volume (driver %s, options %s): its "
                        "folder is not there while no container uses it, so inputs are sent with the job", job_id,
                        self.input_cache_volume, attributes.get("Driver"), attributes.get("Options"))
            return {}, ""
        running = {str(c.labels.get(LABEL_RUN_ID)) for c in
                   self.client.containers.list(all=True, filters={"label": LABEL_RUN_ID})}
        try:
            result = sync_blobs(self.client, image, self.python, self.input_cache_volume, job_id, blobs,
                                {LABEL_MANAGED: "true"}, keep_jobs=running)
            mountpoint = self.client.volumes.get(self.input_cache_volume).attrs["Mountpoint"]
        except (TargetError, docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            log.warning("Job %s: the input cache volume %s is not used, its inputs are sent with it: %s", job_id,
                        self.input_cache_volume, exc)
            return {}, ""
        self.blob_bytes_sent += result.bytes_sent
        log.info("Input cache %s: %d of %d input files sent (%d bytes), %d unused ones evicted",
                 self.input_cache_volume, result.sent, len(blobs), result.bytes_sent, result.evicted)
        return {entry.path: link_target(entry.digest) for entry in inputs}, f"{mountpoint}/jobs/{job_id}"

    @_docker_errors
    def launch(self, handle: JobHandle, spec: JobSpec) -> None:
        import docker

        records = self._unsent.pop(handle.location, None)
        if records is None:
            raise TargetError(f"the container of job {handle.job_id} was staged by another process (or launched "
                              "already): only the process that staged it holds its files; submit the run again")
        job_json = json.dumps(dict(spec.to_job_json(with_secrets=False), echo_output=True)).encode()
        launch = job_runner.encode_launch(spec.to_job_json())
        records += [record("f", 0o600, job_runner.JOB_SPEC, job_json), record("l", 0, "", launch), END]
        try:  # both before the start: no output is missed
            output = self.client.api.attach_socket(handle.location, params={"stdout": 1, "stderr": 1, "stream": 1})
            stdin = self.client.api.attach_socket(handle.location, params={"stdin": 1, "stream": 1})
        except docker.errors.NotFound as exc:
            raise TargetError(f"the container of job {handle.job_id} is gone before it started") from exc
        # The job folder goes out while the daemon starts the container: the supervisor finds it
        # waiting on its stdin. The end of stdin is the end of the folder: it then starts the job.
        sending = BackgroundCall(f"send-{handle.job_id}", lambda: _send_and_close(stdin, records))
        try:
            self.client.api.start(handle.location)
        except Exception as exc:
            close_stream(stdin)
            close_stream(output)
            with contextlib.suppress(Exception):
                sending.result()
            raise TargetError(f"the container of job {handle.job_id} did not start: {exc}") from exc
        sending.result()
        self._outputs[handle.location] = ContainerOutput(output)
        self._states[handle.location] = "running"

    def job_paths(self, handle: JobHandle) -> dict[str, str]:
        return {"job_dir": JOB_ROOT, "events": f"{JOB_ROOT}/{job_runner.EVENTS_FILE}",
                "uploads": f"{JOB_ROOT}/{job_runner.UPLOADS_DIR}"}

    @_docker_errors
    def find(self, job_id: str) -> JobHandle | None:
        found = self.client.containers.list(all=True, filters={"label": f"{LABEL_RUN_ID}={job_id}"})
        return JobHandle(self.kind, job_id, str(found[0].id)) if found else None

    # ------------------------------------------------------------------ watching
    @_docker_errors
    def poll(self, handle: JobHandle) -> JobStatus:
        import docker

        try:
            attrs = self.client.api.inspect_container(handle.location)
        except docker.errors.NotFound:
            return JobStatus("not_found")
        state = attrs.get("State", {})
        self._states[handle.location] = str(state.get("Status"))
        if state.get("Status") == "running":
            return JobStatus("running")
        exit_state = self._exit_line(handle) or self._file(handle, f"{JOB_ROOT}/{job_runner.EXIT_STATE}")
        if exit_state is not None:
            status = JobStatus.from_exit_json(json.loads(exit_state))
            if state.get("OOMKilled"):
                return JobStatus(status.state, status.exit_code, status.signal, status.reason,
                                 f"{status.message}: {out_of_memory_message(attrs)}")
            return status
        if state.get("OOMKilled"):
            return JobStatus("lost", message=f"{out_of_memory_message(attrs)} (exit code {state.get('ExitCode')})")
        if state.get("Status") == "created":
            if state.get("Error"):
                return JobStatus("lost", message=f"the container never started: {state['Error']}")
            return JobStatus("running")  # launched a moment ago
        return JobStatus("lost", message=f"the container exited with code {state.get('ExitCode')} before its "
                                         f"supervisor recorded an ending: {state.get('Error') or 'no error reported'}")

    def _exit_line(self, handle: JobHandle) -> bytes | None:
        """The ending the supervisor printed last (its ``exit.json``), from the attach stream or the
        container's log (stderr; stdout for containers of earlier versions); None when neither has it
        (killed, or a log driver that keeps nothing)."""
        output = self._outputs.get(handle.location)
        if output is not None and output.ended.is_set():
            line = output.exit_line()
            if line is not None:
                return line
        for stdout in (False, True):
            try:
                tail = bytes(self.client.api.logs(handle.location, stdout=stdout, stderr=not stdout, tail=3))
            except Exception:
                return None
            line = last_exit_line(tail)
            if line is not None:
                return line
        return None

    @_docker_errors
    def wait(self, handle: JobHandle, timeout: float) -> None:
        """Block until the container stops (the daemon's wait), or ``timeout`` seconds pass."""
        if self._states.get(handle.location) != "running":
            time.sleep(timeout)
            return
        started = time.monotonic()
        try:
            self.client.api.wait(handle.location, timeout=max(timeout, 0.001))
        except Exception:  # the timeout (a read timeout), or a daemon error the next poll reports
            time.sleep(max(0.0, timeout - (time.monotonic() - started)))

    @_docker_errors
    def read(self, handle: JobHandle, channel: Channel, offset: int, limit: int = 4 << 20) -> bytes:
        path = f"{JOB_ROOT}/{_FILES[channel]}"
        key = (handle.location, path)
        streamed = self._streamed_driver_log(handle) if channel == "driver" else None
        if streamed is not None:
            return streamed[offset : offset + limit]
        if self._states.get(handle.location) == "running" and self._sizes.get(key, 0) > _COPY_WHOLE_BELOW:
            tail = self._tail_running(handle, path, offset)  # a large file: only its new part
            if tail is not None:
                self._sizes[key] = offset + len(tail)
                return tail[:limit]
        content = self._file(handle, path) or b""  # a small file: one request, no process in the container
        self._sizes[key] = len(content)
        return content[offset : offset + limit]

    @_docker_errors
    def fetch(self, handle: JobHandle, relative_path: str, scratch: Path) -> Path | None:
        streamed = self._streamed_driver_log(handle) if relative_path == job_runner.DRIVER_LOG else None
        archive = None if streamed is not None else self._archive(handle, f"{JOB_ROOT}/{relative_path}")
        if archive is None and streamed is None:
            return None
        destination = scratch / "fetched" / relative_path.replace("/", "_")
        if destination.exists():
            shutil.rmtree(destination)
        destination.mkdir(parents=True)
        if streamed is not None:
            (destination / job_runner.DRIVER_LOG).write_bytes(streamed)
            return destination / job_runner.DRIVER_LOG
        assert archive is not None
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(destination, filter=tolerant_tar_filter)
        return destination / Path(relative_path).name

    def _streamed_driver_log(self, handle: JobHandle) -> bytes | None:
        """The driver log as far as the attach stream has brought it: while the container runs,
        what has arrived; once it stopped, all of it, or None when the stream is not complete (this
        process did not launch it, or the stream broke): then the file is read."""
        output = self._outputs.get(handle.location)
        if output is None:
            return None
        if self._states.get(handle.location) == "running":
            return output.driver_log_so_far()
        complete = output.complete_driver_log()
        if complete is None:
            output.close()
            del self._outputs[handle.location]
        return complete

    def _tail_running(self, handle: JobHandle, path: str, offset: int) -> bytes | None:
        """The bytes of ``path`` from ``offset`` on, read by ``exec`` in the running container;
        None when that failed (it stopped since the last poll: the caller reads its filesystem)."""
        import docker

        try:
            exec_id = self.client.api.exec_create(handle.location, ["tail", "-c", f"+{offset + 1}", path],
                                                  stdout=True, stderr=False)
            return bytes(self.client.api.exec_start(exec_id) or b"")
        except docker.errors.APIError:
            return None

    def _archive(self, handle: JobHandle, path: str) -> bytes | None:
        """``get_archive`` of ``path`` (a tar), None when missing. A stopped container's files no
        longer change, so they are fetched once."""
        import docker

        ended = self._states.get(handle.location) in ("exited", "dead")
        cache = self._ended_files.setdefault(handle.location, {})
        if ended and path in cache:
            return cache[path]
        if ended and path in self._reported_absent(handle):
            return None
        try:
            stream, _ = self.client.api.get_archive(handle.location, path)
            archive: bytes | None = b"".join(stream)
        except docker.errors.NotFound:
            archive = None
        if ended:
            cache[path] = archive
        return archive

    def _reported_absent(self, handle: JobHandle) -> set[str]:
        """The paths the supervisor's exit line says did not exist at the end (the container has
        stopped: nothing creates them since); empty when this process has no exit line."""
        output = self._outputs.get(handle.location)
        line = output.exit_line() if output is not None and output.ended.is_set() else None
        if line is None:
            return set()
        try:
            absent = json.loads(line).get("absent", [])
        except ValueError:
            return set()
        return {f"{JOB_ROOT}/{name}" for name in absent if isinstance(name, str)}

    def _file(self, handle: JobHandle, path: str) -> bytes | None:
        archive = self._archive(handle, path)
        if archive is None:
            return None
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            member = tar.next()
            extracted = tar.extractfile(member) if member is not None else None
            return extracted.read() if extracted is not None else None

    # ------------------------------------------------------------------ control
    @_docker_errors
    def cancel(self, handle: JobHandle, grace_seconds: float = 10.0, wait: bool = True) -> None:
        import docker

        try:
            if self.client.api.inspect_container(handle.location)["State"]["Status"] != "running":
                return
            # The supervisor (PID 1) stops the whole tree (SIGTERM, its grace, SIGKILL), records it, exits.
            self.client.api.kill(handle.location, signal="SIGTERM")
        except docker.errors.NotFound:
            return  # removed: whoever removed it collected it
        except docker.errors.APIError:
            if self.poll(handle).state != "running":
                return  # it ended between the inspect and the signal
            raise
        if not wait:
            return
        try:
            self.client.api.wait(handle.location, timeout=grace_seconds + 10)
            return
        except docker.errors.NotFound:
            return
        except Exception:  # the supervisor did not stop in time (read timeout): kill the container
            pass
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.kill(handle.location)
            self.client.api.wait(handle.location, timeout=30)
            self._ended_files.pop(handle.location, None)
            _put_file(self.client.containers.get(handle.location), f"{JOB_ROOT}/{job_runner.EXIT_STATE}", json.dumps({
                "exit_code": None, "signal": 9, "reason": job_runner.REASON_CANCELED,
                "message": "the run was canceled (its container had to be killed)", "ended_at": time.time(),
            }).encode(), 0o644)

    @_docker_errors
    def cleanup(self, handle: JobHandle) -> None:
        import docker

        self._ended_files.pop(handle.location, None)
        self._states.pop(handle.location, None)
        output = self._outputs.pop(handle.location, None)
        if output is not None:
            output.close()
        for key in [key for key in self._sizes if key[0] == handle.location]:
            del self._sizes[key]
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(handle.location, force=True)


def _tls_client(base_url: str, tls: Any, assert_hostname: str | None) -> Any:
    """A ``docker.DockerClient`` for a daemon behind TLS.

    Two details docker-py leaves out: ``REQUESTS_CA_BUNDLE`` (and the like) must not replace
    ``tls.ca_cert`` or ``verify=False`` (requests prefers them to the session's setting), and docker-py 7 has no
    ``assert_hostname``. Both are set on the session before the first request, so the API version is
    asked by a first client made with a fixed version.

    :param base_url: the ``tcp://`` daemon URL.
    :param tls: its ``docker.tls.TLSConfig``.
    :param assert_hostname: the name the daemon's certificate must carry, when not the URL's host.
    """
    import docker
    import requests.adapters
    import requests.utils

    def configured(version: str) -> Any:
        client = docker.DockerClient(base_url=base_url, tls=tls, version=version)
        if client.api.verify is not True:  # a CA file, or no verification: not the environment's bundle
            client.api.trust_env = False
            client.api.proxies = requests.utils.get_environ_proxies(base_url.replace("tcp://", "https://", 1))
        if assert_hostname:
            adapter = requests.adapters.HTTPAdapter(pool_connections=docker.constants.DEFAULT_NUM_POOLS)
            adapter.poolmanager.connection_pool_kw["assert_hostname"] = assert_hostname
            client.api.mount("https://", adapter)
        return client

    probe = configured(docker.constants.MINIMUM_DOCKER_API_VERSION)
    try:
        version = str(probe.version(api_version=False)["ApiVersion"])
    finally:
        probe.close()
    return configured(version)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:400] if text else type(exc).__name__


def _connection_fix(exc: BaseException, tls: dict[str, Any] | None) -> str:
    """What to do about a daemon that could not be reached, from the error chain of ``exc``."""
    chain: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    text = " | ".join(chain)
    if "HTTP request to an HTTPS server" in text:
        return ("Fix: this daemon speaks TLS: set the connection's tls_ca_cert, tls_client_cert and "
                "tls_client_private_key extra fields.")
    if not tls:
        return _UNREACHABLE_FIX
    if "hostname" in text.lower() and ("match" in text.lower() or "not valid" in text.lower()):
        return ("Fix: the daemon's certificate does not carry this host name: connect by a name it carries, or set "
                "tls_hostname to one of them.")
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return ("Fix: TLS handshake failed, the daemon's certificate is not signed by tls_ca_cert (CA mismatch): set "
                "tls_ca_cert to the CA that signed the daemon's certificate.")
    if any(marker in text.lower() for marker in ("certificate required", "bad certificate", "unknown ca", "ssl",
                                                 "tls", "connection reset", "eof occurred")):
        return ("Fix: the daemon refused the TLS handshake (client cert/CA mismatch): it wants a client certificate "
                "signed by the CA it trusts; set tls_client_cert and tls_client_private_key to such a pair.")
    return _UNREACHABLE_FIX


def _send_and_close(stream: Any, records: list[bytes | FileRecord]) -> None:
    """Send the job folder's records (consecutive small ones in one call), then close the stream."""
    try:
        sock = raw_socket(stream)
        batch: list[bytes] = []
        for item in records:
            if isinstance(item, bytes):
                batch.append(item)
                continue
            if batch:
                sock.sendall(b"".join(batch))
                batch = []
            for chunk in item.chunks():
                sock.sendall(chunk)
        if batch:
            sock.sendall(b"".join(batch))
    finally:
        close_stream(stream)


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

