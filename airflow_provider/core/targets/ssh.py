"""The SSH target: jobs run detached on a remote Linux host, driven over one paramiko connection.

The remote side is :mod:`remote_agent` and :mod:`job_runner`, copied once per version into
``<root>/runtime/<version>/``: the command that starts the agent checks that its file is there
(no SFTP session, no extra round trip), and only when it is missing are the files sent over SFTP
and the agent started again. A run costs few round trips: which of the snapshot's blobs the
host's content-addressed store lacks (one call for the whole snapshot), those blobs in one tar
stream, then one call that materializes the job folder from the store (checked copies), writes
the run-context files and ``job.json`` and starts the supervisor in its own session, so the job
survives the connection. Between polls the watcher waits on the agent, which answers as soon as
the job's ``exit.json`` appears: the end of a job is seen within milliseconds. Logs are read over
SFTP from a byte offset; a dropped connection is reopened with backoff and reading resumes at the
same offset. The supervisor enforces ``max_run_duration_seconds`` on the host itself.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import getpass
import hashlib
import io
import json
import logging
import os
import shlex
import shutil
import stat
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

from airflow_provider.core.collect import tolerant_tar_filter
from airflow_provider.core.data.inputs import INPUTS_DIR
from airflow_provider.core.environments.conda_builder import CondaMode, rattler_available, translated_when_unreachable
from airflow_provider.core.environments.fingerprint import environment_fingerprint
from airflow_provider.core.environments.interpreters import check_interpreter
from airflow_provider.core.environments.locking import InstallFrom, Lock, TargetPlatform, find_uv, lock_requirements
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import MANAGED_KINDS, Environment
from airflow_provider.core.environments.wheels import WheelStore, files_to_install
from airflow_provider.core.errors import (
    ConfigurationError,
    EnvironmentBuildError,
    TargetConfigurationError,
    TargetError,
)
from airflow_provider.core.live_logs import GROWN_LIMIT, Grown
from airflow_provider.core.paths import state_dir
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
from airflow_provider.core.targets.openssh import OpenSSHUnavailable, openssh_request
from airflow_provider.core.targets.ssh_connection import SSHConnection, SSHSettings
from airflow_provider.core.targets.tar_stream import BlobTarStream
from airflow_provider.runtime import host_files, host_files_version, job_runner

__all__ = ["SECRETS_VARIABLE", "SSHTarget"]

OPENSSH_VARIABLE = "TRAINING_RUNS_OPENSSH"
"""``0`` keeps every transfer on paramiko (default: large blob streams go through ``ssh`` when it can)."""
_OPENSSH_MIN_BYTES = 64 << 20
"""Blob streams at least this large go through the system's ``ssh`` (its start costs ~50 ms)."""
log = logging.getLogger(__name__)

SECRETS_VARIABLE = "TRAINING_RUNS_SSH_SECRETS"
"""Where a detached finalizer finds the key, passphrase and password (never in its command line)."""
_CHANNEL_FILES: dict[str, str] = {"driver": job_runner.DRIVER_LOG, "events": job_runner.EVENTS_FILE}
_SECRET_FIELDS = ("private_key", "passphrase", "password")


class SSHTarget(ComputeTarget):
    """Run jobs on a remote host over SSH.

    :param settings: where and how to connect (see :class:`SSHSettings`).
    :param work_root: the remote folder for blobs, jobs and environments (``~`` is the remote home).
    :param python: the remote interpreter that runs the supervisor and, without an environment, the script.
    :param keep_failed_job_folders: keep a failed run's job folder on the host for debugging (removed
        after ``cache_limits["kept_job_max_age_days"]``).
    :param cache_limits: ``blob_cache_max_bytes`` (default 10 GiB; blobs are snapshot files and
        wheels), ``env_cache_max_count`` (20), ``env_cache_max_bytes`` (50 GiB),
        ``kept_job_max_age_days`` (7): least recently used blobs and environments beyond them are
        evicted (an environment a running job uses never is), logged to ``logs/evictions.log`` there.
    :param build_timeout_seconds: an environment build step that runs longer fails.
    :param conda: how conda specifications are built on the host (see :meth:`conda_mode`): ``"auto"``,
        ``"rattler"`` (a real conda environment; the ``conda`` extra here, nothing there) or
        ``"translate"`` (a virtual environment from PyPI).
    :param host_sharing: the host's GPUs and reservation file (GPUs, CPUs and memory of runs:
        :mod:`~airflow_provider.core.targets.host_sharing`).
    """

    kind: ClassVar[str] = "ssh"
    supported_resources: ClassVar[frozenset[str]] = HOST_RESOURCE_FIELDS
    wakes_on_end: ClassVar[bool] = True

    def __init__(self, settings: SSHSettings, work_root: str = "~/.training-runs", python: str = "python3",
                 keep_failed_job_folders: bool = True, cache_limits: dict[str, float] | None = None,
                 build_timeout_seconds: float = 1800.0, conda: CondaMode = "auto",
                 host_sharing: HostSharing | None = None) -> None:
        if conda not in ("auto", "rattler", "translate"):
            raise ConfigurationError("conda", f"is {conda!r}.", 'use "auto", "rattler" or "translate".')
        self.settings = settings
        self.host_sharing = host_sharing or HostSharing()
        self.conda = conda
        self.work_root = work_root
        self.python = python
        self.keep_failed_job_folders = keep_failed_job_folders
        self.cache_limits = dict(cache_limits or {})
        self.build_timeout_seconds = build_timeout_seconds
        self.connection = SSHConnection(settings)
        self.bytes_sent = 0
        """Bytes of blob streams (tar framing included) sent to the host by this object."""
        self.blob_bytes_sent = 0
        """Content bytes of the blobs sent to the host by this object."""
        self.damaged_blobs_resent = 0
        """Blobs found altered on the host and sent again (see :meth:`launch`)."""
        self.openssh_bytes_sent = 0
        """Of :attr:`bytes_sent`, what went through the system's ``ssh`` client (see :mod:`.openssh`)."""
        self._use_openssh = os.environ.get(OPENSSH_VARIABLE, "1") != "0"
        self._root: str | None = None
        self._hello: dict[str, Any] | None = None
        self._pending: dict[str, tuple[list[list[Any]], dict[str, str], SnapshotStore]] = {}
        self._agent_session: _AgentSession | None = None
        self._lock = threading.Lock()
        self._ended: dict[str, JobStatus] = {}

    # ------------------------------------------------------------------ spec
    def to_spec(self) -> dict[str, Any]:
        fields = {k: v for k, v in vars(self.settings).items() if k not in _SECRET_FIELDS}
        return {"kind": self.kind, "settings": fields, "work_root": self.work_root, "python": self.python,
                "keep_failed_job_folders": self.keep_failed_job_folders, "cache_limits": self.cache_limits,
                "build_timeout_seconds": self.build_timeout_seconds, "conda": self.conda,
                "host_sharing": self.host_sharing.to_spec()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], secrets: dict[str, str] | None = None) -> SSHTarget:
        """Rebuild from :meth:`to_spec` output; the secrets come from ``secrets`` or, by default,
        from the variable :data:`SECRETS_VARIABLE` (see :meth:`secret_environment`).

        :param spec: the serialised target.
        :param secrets: the private key, passphrase and password.
        """
        import os

        if secrets is None:
            secrets = json.loads(os.environ.get(SECRETS_VARIABLE) or "{}")
        settings = SSHSettings(**{**spec["settings"], **{k: v for k, v in secrets.items() if k in _SECRET_FIELDS}})
        return cls(settings, spec.get("work_root", "~/.training-runs"), spec.get("python", "python3"),
                   bool(spec.get("keep_failed_job_folders", True)), spec.get("cache_limits"),
                   float(spec.get("build_timeout_seconds", 1800.0)), spec.get("conda", "auto"),
                   HostSharing.from_spec(spec.get("host_sharing")))

    def check_resources(self, resources: Resources | None, field: str = "ScriptRunConfig.resources") -> None:
        """Refuse what the host can never give (more GPUs than its connection declares); a host that
        declares none is asked by the job's supervisor (``nvidia-smi -L``), which fails at once when
        it has too few."""
        super().check_resources(resources, field)
        self.host_sharing.check(resources, f"the host {self.settings.address}", field)

    def secrets(self) -> dict[str, str]:
        """The private key, passphrase and password this target was given (never in its spec)."""
        return {k: getattr(self.settings, k) for k in _SECRET_FIELDS if getattr(self.settings, k)}

    def secret_environment(self) -> dict[str, str]:
        """Variables a detached process needs to rebuild this target from :meth:`to_spec`."""
        secrets = self.secrets()
        return {SECRETS_VARIABLE: json.dumps(secrets)} if secrets else {}

    def describe(self) -> str:
        return f"ssh ({self.settings.username + '@' if self.settings.username else ''}{self.settings.address})"

    def check(self) -> None:
        self.hello()

    # ------------------------------------------------------------------ the remote helper
    @property
    def root(self) -> str:
        """The absolute remote working root (a root under ``~`` is resolved by the agent's hello)."""
        if self._root is None:
            under_home = _under_home(self.work_root)
            self._root = str(self.hello()["home"]) + self.work_root[1:] if under_home else self.work_root
        return self._root

    @property
    def runtime_dir(self) -> str:
        """Where this version's agent and supervisor live on the host."""
        return f"{self.root}/runtime/{_RUNTIME_VERSION}"

    def hello(self) -> dict[str, Any]:
        """Start the agent (installing this version of it first if the host lacks it) and ask the host
        about its Python (once per object)."""
        if self._hello is None:
            self._hello = self.agent("hello", {})
        return self._hello

    def _install_runtime(self) -> None:
        """Copy this version's agent and supervisor to the host over SFTP (each file renamed into place),
        when the agent's start found them missing: once per version and host."""
        sftp = self.connection.sftp
        if self._root is None and _under_home(self.work_root):  # before any hello: ask SFTP for the home
            self._root = sftp.normalize(".") + self.work_root[1:]
        _makedirs(sftp, self.runtime_dir)
        # The agent last: its start takes the version as installed once the agent file is there.
        for name, content in sorted(_RUNTIME_FILES.items(), key=lambda item: item[0] == _AGENT_FILE):
            temporary = f"{self.runtime_dir}/.{name}.{uuid.uuid4().hex}.tmp"  # two installers never share one
            with sftp.open(temporary, "wb") as out:
                out.write(content)
            sftp.posix_rename(temporary, f"{self.runtime_dir}/{name}")

    def agent(self, operation: str, request: dict[str, Any], payload: bytes | _FilePayload = b"",
              timeout: float = 600.0) -> dict[str, Any]:
        """Run one agent operation and return its answer (retried on a new connection when it drops).

        :param operation: the operation's name (see :mod:`~airflow_provider.runtime.remote_agent`).
        :param request: its arguments.
        :param payload: bytes (or a file) streamed after the request.
        :param timeout: the longest the answer may take, in seconds.
        :return: the answer; its payload, if any, under the key ``"payload"``.
        :raises TargetError: the operation failed on the host.
        """
        def call() -> dict[str, Any]:
            with self._lock:
                try:
                    return self._session().request(operation, request, payload, timeout)
                except _RuntimeMissingError:
                    log.info("Installing the remote helper (version %s) on %s", _RUNTIME_VERSION,
                             self.settings.address)
                    self._install_runtime()
                try:
                    return self._session().request(operation, request, payload, timeout)
                except _RuntimeMissingError as exc:
                    raise TargetError(f"the remote helper was installed in {self.runtime_dir} on "
                                      f"{self.settings.address} but is missing again") from exc

        answer = self.connection.retrying(call, what=f"the remote {operation}")
        if not answer.get("ok"):
            raise TargetError(f"the remote {operation} on {self.settings.address} failed: {answer.get('error')}")
        return answer

    def _session(self) -> _AgentSession:
        client = self.connection.client
        if self._agent_session is None or self._agent_session.client is not client or self._agent_session.closed:
            self._agent_session = _AgentSession(client, self._agent_command(), self.settings.address, self.python)
        return self._agent_session

    def _agent_command(self) -> str:
        """The shell command that starts the agent, or exits with :data:`_RUNTIME_MISSING_STATUS`
        when this version of it is not on the host: no SFTP session and no extra round trip to
        check. A root under ``~`` is spelled with ``$HOME`` until the agent has told its home."""
        relative = f"/runtime/{_RUNTIME_VERSION}/{_AGENT_FILE}"
        if self._root is None and _under_home(self.work_root):
            agent = '"$HOME"' + shlex.quote(self.work_root[1:] + relative)
        else:
            agent = shlex.quote(self.root + relative)
        return f"test -f {agent} && exec {shlex.quote(self.python)} -I -S {agent} serve; exit {_RUNTIME_MISSING_STATUS}"

    # ------------------------------------------------------------------ environment
    def prepare_environment(self, environment: Environment | None) -> PreparedEnvironment:
        hello = self.hello()
        where = f"on {self.settings.address}"
        if environment is None or environment.kind not in MANAGED_KINDS:
            python = (environment.python.interpreter_path if environment is not None else None) or self.python
            if environment is not None and environment.python.interpreter_path:
                self._check_interpreter(python)
            version = str(hello["python_version"])
            return PreparedEnvironment(environment.kind if environment is not None else "current", python,
                                       environment_fingerprint(environment, version), False, None,
                                       f"remote interpreter {python} (Python {version.split()[0]}) {where}")
        if environment.kind == "conda" and self.conda_mode() == "rattler":
            from airflow_provider.core.targets.ssh_conda import prepare_conda_environment

            return translated_when_unreachable(self.conda, lambda: prepare_conda_environment(self, environment),
                                               lambda: self.prepare_pip_environment(environment))
        return self.prepare_pip_environment(environment)

    def conda_mode(self) -> Literal["rattler", "translate"]:
        """How conda specifications are built on this host: ``"rattler"`` (a real conda environment,
        solved here and installed there with py-rattler) or ``"translate"`` (a virtual environment
        from PyPI); ``"auto"`` is ``"rattler"`` when py-rattler (the ``conda`` extra) is installed here."""
        if self.conda == "auto":
            return "rattler" if rattler_available() else "translate"
        return self.conda

    def prepare_pip_environment(self, environment: Environment) -> PreparedEnvironment:
        """Build a managed environment as a virtual environment on the host, from its lock.

        :param environment: a pip environment, or a conda one translated to PyPI.
        """
        hello = self.hello()
        where = f"on {self.settings.address}"
        check_interpreter(environment.required_python(), str(hello["python_version"]), f"{where} ({self.python})",
                          f"set the connection's python (extra 'python') to an interpreter of that version on "
                          f"{self.settings.address}")
        lock = self.lock(environment)
        fingerprint = environment_fingerprint(environment, str(hello["python_version"]), lock)
        request = {"root": self.root, "requirements": lock.requirement_lines(), "fingerprint": fingerprint,
                   "timeout": self.build_timeout_seconds, "offline": lock.install_from == "submitter",
                   "limits": dict(self.cache_limits), "complete": True,
                   "wheels": {p.filename: p.sha256 for p in lock.packages
                              if lock.install_from == "submitter" or p.local}}
        uv = self.uv_to_send()
        if uv is not None:
            request["uv_blob"] = uv[0]
        answer = self.agent("env", request, timeout=self.build_timeout_seconds + 60)
        if answer.get("missing"):  # not built yet, and the host lacks some wheels: send them, then build
            files = files_to_install(lock, WheelStore())
            by_digest = {p.sha256: files[p.filename] for p in lock.packages if p.filename in files}
            if uv is not None:
                by_digest[uv[0]] = uv[1]
            self.send_blobs(list(answer["missing"]), lambda digest: by_digest[digest])
            answer = self.agent("env", request, timeout=self.build_timeout_seconds + 60)
        log_path = self.build_outcome(answer, f"the environment {environment.name!r}",
                                      "environment.python.pip_packages")
        how = ("built now" if answer["built"] else "cached") + f", from a lock of {len(lock.packages)} packages, " + (
            "wheels sent from the submitting side and installed offline" if lock.install_from == "submitter"
            else "installed from the host's package index")
        if environment.kind == "conda":
            how += ", conda specification translated to a virtual environment from PyPI (connection extra conda)"
        return PreparedEnvironment(environment.kind, str(answer["python"]), str(answer["fingerprint"]),
                                   bool(answer["built"]),
                                   log_path, f"virtual environment {answer['python']} {where} ({how})",
                                   lock=lock.text())

    def build_outcome(self, answer: dict[str, Any], what: str, field: str) -> Path | None:
        """The build log of an agent's environment answer (fetched here), after logging its evictions.

        :param answer: the agent's answer to ``env`` or ``conda_env``.
        :param what: what was built, for the error (``the environment 'train'``).
        :param field: the environment field the error names.
        :raises EnvironmentBuildError: the build failed, or files are still missing (with the log's tail).
        """
        for line in answer.get("evicted") or []:
            log.info("Evicted environment %s on %s", line, self.settings.address)
        log_path = self.fetch_log(answer["log_path"]) if answer.get("log_path") else None
        if answer.get("error") or answer.get("missing"):
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:]) if log_path else ""
            why = f"files missing on the host: {answer['missing']}" if answer.get("missing") else "the install failed"
            raise EnvironmentBuildError(f"building {what} on {self.settings.address} failed ({field}): {why}", tail,
                                        log_path)
        return log_path

    def uv_to_send(self) -> tuple[str, Path] | None:
        """This machine's uv (digest, path), for a host that has none and runs it: the same machine
        type with glibc (uv's Linux build needs glibc 2.17). Sent once per host and uv version, it
        builds environments in seconds where ``venv`` + pip take tens of seconds."""
        hello = self.hello()
        here = TargetPlatform.current()
        same_kind = (hello.get("system", "linux") == "linux" and hello.get("machine") == here.machine
                     and str(hello.get("libc") or "").startswith("glibc") and str(here.libc or "").startswith("glibc"))
        if hello.get("uv") or not same_kind:
            return None
        found = find_uv()
        return None if found is None else (_file_digest(found), Path(found))

    def platform(self) -> TargetPlatform:
        """The host's Python and system, as its agent reports them (asked once per object)."""
        hello = self.hello()
        return TargetPlatform.from_facts(str(hello["python_version"]), str(hello.get("machine") or "x86_64"),
                                         hello.get("libc"), str(hello.get("system") or "linux"),
                                         str(hello.get("implementation") or "cpython"))

    def lock(self, environment: Environment) -> Lock:
        """The resolved lock of a pip environment for this host (cached on the submitting machine).

        :param environment: a pip environment.
        """
        install_from: InstallFrom = "target" if environment.python.install_from == "target" else "submitter"
        return lock_requirements(environment.requirements(), self.platform(), install_from,
                                 timeout=self.build_timeout_seconds)

    def _check_interpreter(self, python: str) -> None:
        if self.agent("which", {"program": python})["path"] is None:
            raise ConfigurationError("environment.python.interpreter_path",
                                     f"{python!r} does not exist on {self.settings.address}.",
                                     "install it there or fix the path.")

    def fetch_log(self, remote_path: str) -> Path:
        """Copy a build log of the host into this machine's ``<state>/logs/`` and return its path.

        :param remote_path: the log's path on the host.
        """
        folder = state_dir() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        local = folder / f"ssh-{Path(remote_path).name}"
        self.connection.retrying(lambda: self.connection.sftp.get(remote_path, str(local)), what="fetching a log")
        return local

    # ------------------------------------------------------------------ staging and launching
    def stage(self, job_id: str, snapshot: Snapshot, store: SnapshotStore, extras: Mapping[str, bytes],
              environment: PreparedEnvironment) -> JobHandle:
        """Send the blobs the host lacks (one question, one stream); the job folder is made at launch."""
        self.hello()
        self.send_blobs(sorted({entry.digest for entry in snapshot.entries}),
                         store.blob_path)
        # data inputs are hard links to the host's blobs (read-only; see remote_agent), the rest copies
        manifest = [[entry.path, entry.digest, entry.executable, entry.path.startswith(f"{INPUTS_DIR}/")]
                    for entry in snapshot.entries]
        self._pending[job_id] = (manifest, {k: base64.b64encode(v).decode() for k, v in extras.items()}, store)
        return JobHandle(self.kind, job_id, f"{self.root}/jobs/{check_job_id(job_id)}")

    def _job_dir(self, handle: JobHandle) -> str:
        return job_dir_under(f"{self.root}/jobs", handle)

    def send_blobs(self, digests: list[str], content: Callable[[str], bytes | Path]) -> None:
        """Send the blobs of ``digests`` the host lacks, in one tar stream made while it is sent (gigabytes
        of data or wheels never sit in memory nor in a temporary file).

        :param digests: the sha256 of each blob needed on the host.
        :param content: a blob's bytes, or the path of its file, by digest.
        """
        if not digests:
            return
        missing = self.agent("missing", {"root": self.root, "digests": digests})["missing"]
        if not missing:
            return
        archive = BlobTarStream(missing, content)
        if not (archive.content_bytes >= _OPENSSH_MIN_BYTES and self._put_blobs_through_openssh(archive)):
            self.agent("put_blobs", {"root": self.root}, _FilePayload(archive, archive.size))
        self.blob_bytes_sent += archive.content_bytes
        self.bytes_sent += archive.size

    def _put_blobs_through_openssh(self, archive: BlobTarStream) -> bool:
        """Send a large blob stream with the system's ``ssh`` (see :mod:`.openssh`); False when it
        cannot be used here (the caller sends it with paramiko, and so does every later call)."""
        if not self._use_openssh:
            return False
        transport = self.connection.client.get_transport()
        assert transport is not None
        try:
            answer = openssh_request(self.settings, transport.get_remote_server_key(),
                                     self.settings.username or getpass.getuser(), self._agent_command(),
                                     {"op": "put_blobs", "root": self.root}, archive, archive.size, 3600.0)
        except OpenSSHUnavailable as exc:
            log.info("Sending blobs to %s with paramiko: %s", self.settings.address, exc)
            self._use_openssh = False
            return False
        if not answer.get("ok"):
            raise TargetError(f"the remote put_blobs on {self.settings.address} failed: {answer.get('error')}")
        self.openssh_bytes_sent += archive.size
        return True

    def launch(self, handle: JobHandle, spec: JobSpec) -> None:
        answer = self._with_damaged_blobs_resent("launch", handle, spec, with_secrets=True)
        if answer.get("error"):
            raise TargetError(f"the job on {self.settings.address} did not start: {answer['error']}")

    def materialize(self, handle: JobHandle, spec: JobSpec, with_secrets: bool = False) -> None:
        """Make the staged job's folder without starting it (another node of a multi-node run, or a
        job a scheduler starts).

        :param handle: the staged job.
        :param spec: its launch specification (written as ``job.json``).
        :param with_secrets: write the secret variables too (the supervisor that reads the file
            removes them at once); a node whose ranks get them from the launcher needs none.
        """
        self._with_damaged_blobs_resent("materialize", handle, spec, with_secrets=with_secrets)

    def _with_damaged_blobs_resent(self, operation: str, handle: JobHandle, spec: JobSpec,
                                   with_secrets: bool) -> dict[str, Any]:
        """Make the job folder (``launch`` or ``materialize``). Every file is copied out of the host's
        blob store and checked against its hash; a blob something wrote to since it was stored is
        removed there, sent again from the snapshot store here, and the folder made once more."""
        pending = self._pending.pop(handle.job_id, None)
        if pending is None:
            raise TargetError(f"job {handle.job_id} was not staged by this process; submit it again")
        manifest, extras, store = pending
        request = {"root": self.root, "job_dir": self._job_dir(handle), "manifest": manifest,
                   "extras": {k: base64.b64decode(v).decode() for k, v in extras.items()},
                   "job_json": {**spec.to_job_json(with_secrets),
                                # this host's GPUs, CPUs and memory: for a job its own supervisor runs here,
                                # not a folder a scheduler's job (Slurm) or another node's launcher uses
                                **(self.host_sharing.job_json(spec.resources) if operation == "launch" else {})}}
        answer = self.agent(operation, request)
        if answer.get("damaged"):
            log.warning("%s: %d blob(s) of job %s were altered on the host; sending them again", self.settings.address,
                        len(answer["damaged"]), handle.job_id)
            self.damaged_blobs_resent += len(answer["damaged"])
            self.send_blobs(list(answer["damaged"]), store.blob_path)
            answer = self.agent(operation, request)
            if answer.get("damaged"):
                raise TargetError(f"blobs {answer['damaged']} on {self.settings.address} were altered again while "
                                  "the job folder was made; something on the host writes to its blob store")
        return answer

    def read_file(self, path: str) -> bytes | None:
        """A whole remote file, through the agent in one round trip (None when missing or not a
        regular file).

        :param path: its absolute path on the host.
        """
        self.hello()
        folder, name = path.rstrip("/").rsplit("/", 1)
        answer = self.agent("pack", {"job_dir": folder or "/", "relative_path": name})  # no SFTP session
        if answer["missing"]:
            return None
        with tarfile.open(fileobj=io.BytesIO(answer["payload"])) as tar:
            member = tar.next()
            content = tar.extractfile(member) if member is not None and member.isfile() else None
            return content.read() if content is not None else None

    def append_once(self, path: str, data: bytes, marker: str) -> bool:
        """Append ``data`` to a remote file unless ``marker`` exists (then create it).

        :return: True when appended now.
        """
        self.hello()
        answer = self.agent("append_once", {"path": path, "data": base64.b64encode(data).decode(), "marker": marker})
        return bool(answer["appended"])

    def stop_strays(self, job_dir: str, grace_seconds: float = 5.0) -> list[int]:
        """Stop every process on the host whose working folder is inside ``job_dir``.

        :return: pids that survived even SIGKILL (normally none).
        """
        self.hello()
        answer = self.agent("stop_strays", {"job_dir": job_dir, "grace_seconds": grace_seconds},
                             timeout=2 * grace_seconds + 60)
        return [int(pid) for pid in answer["remaining"]]

    def find(self, job_id: str) -> JobHandle | None:
        location = f"{self.root}/jobs/{check_job_id(job_id)}"

        def exists() -> bool:
            try:
                self.connection.sftp.stat(f"{location}/{job_runner.JOB_SPEC}")
                return True
            except FileNotFoundError:
                return False

        found = self.connection.retrying(exists, what="finding a job")
        return JobHandle(self.kind, job_id, location) if found else None

    # ------------------------------------------------------------------ watching
    def wait(self, handle: JobHandle, timeout: float) -> None:
        """Block until the job ends (the agent watches for it on the host) or ``timeout`` seconds pass.

        Not retried: after a dropped connection it just sleeps, and the next poll reconnects and
        reports.
        """
        started = time.monotonic()
        try:
            with self._lock:
                answer = self._session().request("wait", {"job_dir": self._job_dir(handle), "timeout": timeout},
                                                 b"", timeout + 60)
            if answer.get("ok"):
                return
            log.debug("waiting for the job on %s: %s", self.settings.address, answer.get("error"))
        except Exception as exc:  # whatever it was, the next poll meets it again and says so
            log.debug("waiting for the job on %s: %s", self.settings.address, exc)
        time.sleep(max(0.0, timeout - (time.monotonic() - started)))

    def poll(self, handle: JobHandle) -> JobStatus:
        self.hello()
        status = JobStatus.from_job_state(self.agent("poll", {"job_dir": self._job_dir(handle)}))
        if status.state not in ("running", "not_found", "lost"):
            self._ended[self._job_dir(handle)] = status
        return status

    def read(self, handle: JobHandle, channel: Channel, offset: int, limit: int = 4 << 20) -> bytes:
        path = f"{self._job_dir(handle)}/{_CHANNEL_FILES[channel]}"

        def read_from_offset() -> bytes:
            try:
                with self.connection.sftp.open(path, "rb") as remote:
                    remote.seek(offset)
                    return bytes(remote.read(limit))
            except FileNotFoundError:
                return b""

        return self.connection.retrying(read_from_offset, what="reading the job's log")

    def read_grown(self, handle: JobHandle, relative_dir: str, sent: Mapping[str, int],
                   scratch: Path) -> dict[str, Grown]:
        """Only the new bytes of each file, read in place over SFTP (links and special files are
        never followed)."""
        root = f"{self._job_dir(handle)}/{relative_dir}"

        def walk() -> dict[str, Grown]:
            sftp = self.connection.sftp
            grown: dict[str, Grown] = {}
            pending = [""]
            while pending:
                prefix = pending.pop()
                try:
                    entries = sftp.listdir_attr(f"{root}/{prefix}" if prefix else root)
                except FileNotFoundError:
                    continue
                for entry in entries:
                    key = f"{prefix}/{entry.filename}" if prefix else entry.filename
                    mode = entry.st_mode or 0
                    if stat.S_ISDIR(mode):
                        pending.append(key)
                        continue
                    size = entry.st_size or 0
                    start = sent.get(key, 0) if size >= sent.get(key, 0) else 0
                    if not stat.S_ISREG(mode) or size == start:
                        continue
                    with sftp.open(f"{root}/{key}", "rb") as remote:
                        remote.seek(start)
                        grown[key] = Grown(start, bytes(remote.read(min(size - start, GROWN_LIMIT))))
            return grown

        return self.connection.retrying(walk, what="reading the job's logs")

    def fetch(self, handle: JobHandle, relative_path: str, scratch: Path) -> Path | None:
        self.hello()
        answer = self.agent("pack", {"job_dir": self._job_dir(handle), "relative_path": relative_path})
        if answer["missing"]:
            return None
        destination = scratch / "fetched" / relative_path.replace("/", "_")
        if destination.exists():
            shutil.rmtree(destination)
        destination.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(answer["payload"])) as tar:
            tar.extractall(destination, filter=tolerant_tar_filter)
        return destination / Path(relative_path).name

    # ------------------------------------------------------------------ control
    def cancel(self, handle: JobHandle, grace_seconds: float = 10.0, wait: bool = True) -> None:
        self.hello()
        request = {"job_dir": self._job_dir(handle), "grace_seconds": grace_seconds, "wait": wait}
        if not self._lock.acquire(blocking=False):
            # A wait holds this object's agent session: maybe this very thread, interrupted by a task's
            # on_kill in the middle of it. The cancel goes over an agent session of its own instead.
            self._agent_aside("cancel", request, timeout=grace_seconds + 60)
            return
        self._lock.release()
        self.agent("cancel", request, timeout=grace_seconds + 60)

    def _agent_aside(self, operation: str, request: dict[str, Any], timeout: float) -> None:
        """Run one agent operation on a new agent session of the same connection, then close it.

        :param operation: the agent operation.
        :param request: its request.
        :param timeout: seconds to wait for the answer.
        :raises TargetError: the agent answered with an error.
        """
        def call() -> dict[str, Any]:
            session = _AgentSession(self.connection.client, self._agent_command(), self.settings.address,
                                    self.python)
            try:
                return session.request(operation, request, b"", timeout)
            finally:
                session.close()

        answer = self.connection.retrying(call, what=f"the remote {operation}")
        if not answer.get("ok"):
            raise TargetError(f"the remote {operation} on {self.settings.address} failed: {answer.get('error')}")

    def ended_status(self, handle: JobHandle) -> JobStatus | None:
        """How the job ended, as this object last polled it (None: not seen ending)."""
        return self._ended.get(self._job_dir(handle))

    def cleanup(self, handle: JobHandle, ended: JobStatus | None = None) -> None:
        """Remove the job folder (kept, marked, when the job failed and the policy says so).

        :param handle: the job.
        :param ended: how it ended, when another object polled it (a multi-node run).
        """
        ended = self._ended.pop(self._job_dir(handle), None) or ended
        keep = self.keep_failed_job_folders and (ended is None or not ended.succeeded)
        self.hello()
        limits = {k: v for k, v in self.cache_limits.items()}
        self.agent("cleanup", {"root": self.root, "job_dir": self._job_dir(handle), "keep": keep, "limits": limits})


_AGENT_FILE = "remote_agent.py"
_RUNTIME_MISSING_STATUS = 97
"""Exit status of the agent's start command when this version of the agent is not on the host."""


class _RuntimeMissingError(Exception):
    """The host lacks this version of the agent (the target installs it and starts it again)."""


def _under_home(work_root: str) -> bool:
    return work_root.startswith("~")


@functools.lru_cache(maxsize=4)
def _file_digest_cached(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_digest(path: str) -> str:
    """The sha256 of a file, computed once per process while it is unchanged."""
    info = os.stat(path)
    return _file_digest_cached(path, info.st_size, info.st_mtime)


@dataclass(frozen=True)
class _FilePayload:
    """A request's payload read from a file (sent in chunks, from its start on every attempt)."""

    file: IO[bytes] | BlobTarStream
    size: int


class _AgentSession:
    """One ``remote_agent.py serve`` process on the host, spoken to over one SSH channel."""

    def __init__(self, client: Any, command: str, address: str, python: str) -> None:
        self.client = client
        self.address = address
        self.python = python
        self.channel = client.get_transport().open_session()
        self.channel.exec_command(command)
        self.reader = self.channel.makefile("rb")
        self.closed = False

    def request(self, operation: str, request: dict[str, Any], payload: bytes | _FilePayload,
                timeout: float) -> dict[str, Any]:
        """Send one request and read its answer.

        :raises EOFError: the agent or the channel went away (the caller reconnects and retries).
        """
        try:
            self.channel.settimeout(timeout)
            size = payload.size if isinstance(payload, _FilePayload) else len(payload)
            header = {**request, "op": operation, "payload_size": size}
            try:
                if isinstance(payload, _FilePayload):
                    self.channel.sendall(json.dumps(header).encode() + b"\n")
                    payload.file.seek(0)  # from the start again when a retry sends it anew
                    for chunk in iter(lambda: payload.file.read(1 << 20), b""):
                        self.channel.sendall(chunk)
                else:
                    self.channel.sendall(json.dumps(header).encode() + b"\n" + payload)
            except OSError:
                if self.channel.exit_status_ready():  # it ended before reading: say why
                    self._raise_ended()
                raise
            line = self.reader.readline()
            if not line:
                self._raise_ended()
            answer: dict[str, Any] = json.loads(line)
            size = int(answer.get("payload_size", 0))
            if size:
                answer["payload"] = self.reader.read(size)
            return answer
        except BaseException:
            self.close()
            raise

    def _raise_ended(self) -> None:
        status = self.channel.recv_exit_status()  # follows the end of its output
        if status == _RUNTIME_MISSING_STATUS:
            raise _RuntimeMissingError(self.address)
        error = ""
        while self.channel.recv_stderr_ready():
            error += self.channel.recv_stderr(65536).decode(errors="replace")
        error = error.strip()
        if status == 127 or (self.python in error and ("not found" in error or "No such file" in error)):
            raise TargetConfigurationError(
                f"the remote Python {self.python!r} was not found on {self.address} ({error[-300:]}): install "
                "Python 3.9+ there or set the connection's extra 'python' to its path."
            )
        raise EOFError(f"the remote helper ended (exit status {status}): {error[-2000:]}")

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):  # already broken
            self.channel.close()


def _makedirs(sftp: Any, path: str) -> None:
    parts = path.strip("/").split("/")
    current = ""
    for part in parts:
        current += "/" + part
        try:
            sftp.stat(current)
        except FileNotFoundError:
            sftp.mkdir(current, 0o700)


_RUNTIME_FILES = host_files()
_RUNTIME_VERSION = host_files_version()
