"""The SSH target's helper on the remote host: standard library only, runnable as a plain file.

The SSH target copies this file and :mod:`job_runner` once per version into
``<root>/runtime/<version>/`` and starts ``python3 remote_agent.py serve`` once per SSH connection:
requests and answers then cost one round trip each, not a shell and an interpreter start (see
:func:`serve`). Every operation is idempotent, so a watcher that lost its connection asks again.

Layout under the root: ``blobs/ab/<sha256>`` (the content-addressed store; a job folder gets
independent copies, each checked against its hash while it is copied, so a job can never change
what another job will read; wheels sent for environments are blobs too, so the store is the host's
wheel cache), ``jobs/<job id>/`` (as on every target), ``envs/<fingerprint>/`` (virtual environments,
built once under a lock from a lock's wheels), ``logs/``.

Data inputs (manifest entries marked ``link``) are the exception: gigabytes copied for every run
would cost a full write each time, so the job gets read-only hard links to the blobs. A blob's
content is checked once (on arrival, or the first time it is linked) and its signature (size,
mtime, inode) kept beside it (``<sha256>.ok``); a blob whose signature changed (something wrote
to it) is hashed again before it is linked, and removed and sent again when damaged.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

try:
    from airflow_provider.runtime import conda_installer, job_runner, venv_builder
except ImportError:  # on the remote host: plain files copied next to this one
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import conda_installer  # type: ignore[no-redef]
    import job_runner  # type: ignore[no-redef]
    import venv_builder  # type: ignore[no-redef]

KEPT_MARKER = ".kept"
_LAUNCH_TIMEOUT_SECONDS = 30.0
_GC_EVERY_SECONDS = 600.0
_WAIT_LIMIT_SECONDS = 60.0
_WAIT_STEP_SECONDS = 0.01


class DamagedBlobError(ValueError):
    """A blob of the store no longer has the content its name promises (something wrote to it)."""


_LINKED_MIN_BYTES = 64 * 1024
"""Blobs at least this large are marked as checked on arrival (see the module docstring)."""

def _blob_path(root: str, digest: str) -> str:
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return os.path.join(root, "blobs", digest[:2], digest)


def _copy_verified(source: str, target: str, digest: str) -> None:
    """Copy a blob into a job folder (a new, independent file), checking its hash on the way; a
    damaged blob is removed from the store (the client sends it again) and nothing is copied."""
    hasher = hashlib.sha256()
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while True:
            chunk = reader.read(1 << 20)
            if not chunk:
                break
            hasher.update(chunk)
            writer.write(chunk)
    if hasher.hexdigest() != digest:
        os.unlink(target)
        with contextlib.suppress(OSError):
            os.unlink(source)
        raise DamagedBlobError(digest)


_VERIFIED_SUFFIX = ".ok"


def _signature(path: str) -> str:
    info = os.stat(path)
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"


def _mark_verified(path: str) -> None:
    """Remember that the blob at ``path`` was checked against its hash, as it is now."""
    with contextlib.suppress(OSError):
        temporary = f"{path}{_VERIFIED_SUFFIX}.{os.getpid()}.tmp"
        with open(temporary, "w") as out:
            out.write(_signature(path))
        os.replace(temporary, path + _VERIFIED_SUFFIX)


def _still_verified(path: str) -> bool:
    try:
        with open(path + _VERIFIED_SUFFIX) as handle:
            return handle.read() == _signature(path)
    except OSError:
        return False


def _link_verified(source: str, target: str, digest: str) -> None:
    """Hard-link a blob into a job folder (a data input: read-only, shared with the store), checking
    its hash first unless it is unchanged since it was last checked; a damaged blob is removed."""
    if not _still_verified(source):
        hasher = hashlib.sha256()
        with open(source, "rb") as reader:
            for chunk in iter(lambda: reader.read(1 << 20), b""):
                hasher.update(chunk)
        if hasher.hexdigest() != digest:
            with contextlib.suppress(OSError):
                os.unlink(source)
            raise DamagedBlobError(digest)
        _mark_verified(source)
    try:
        os.link(source, target)
    except OSError:  # a job folder on another filesystem, or links refused: an independent copy
        _copy_verified(source, target, digest)


def _inside(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or below it, once both are resolved."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _check_job_dir(root: str, job_dir: str) -> None:
    """Refuse a job folder that is not ``<root>/jobs/<one name>`` (never remove anything else)."""
    name = os.path.basename(job_dir.rstrip("/"))
    if (os.path.dirname(job_dir.rstrip("/")) != os.path.join(root, "jobs") or name in ("", ".", "..")
            or not _inside(job_dir, os.path.join(root, "jobs")) or os.path.islink(job_dir)):
        raise ValueError(f"refusing job folder {job_dir!r}: not a folder of {os.path.join(root, 'jobs')}")


def _host_uv() -> str | None:
    """This host's own uv, if it has one."""
    return shutil.which("uv") or next((p for p in (os.path.expanduser("~/.local/bin/uv"), "/usr/local/bin/uv")
                                       if os.access(p, os.X_OK)), None)


def op_hello(request: dict[str, Any]) -> dict[str, Any]:
    """What the target needs to know about this host and its Python."""
    uv = _host_uv()
    try:
        libc: str | None = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        libc = None
    return {"python_version": sys.version, "executable": sys.executable, "home": os.path.expanduser("~"),
            "uv": uv, "hostname": os.uname().nodename, "machine": os.uname().machine, "libc": libc,
            "system": sys.platform, "implementation": sys.implementation.name,
            "kernel": os.uname().release, "cuda_driver": _cuda_driver_version()}


def _cuda_driver_version() -> str | None:
    """The CUDA version the driver supports ("12.4"), from ``nvidia-smi``; None without a GPU driver."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return None
    try:
        done = subprocess.run([program], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in done.stdout.splitlines():
        if "CUDA Version:" in line:
            return line.split("CUDA Version:")[1].split()[0].strip("| ")
    return None


def op_which(request: dict[str, Any]) -> dict[str, Any]:
    """The executable a name or path resolves to on this host (None when there is none)."""
    return {"path": shutil.which(request["program"])}


def op_missing(request: dict[str, Any]) -> dict[str, Any]:
    """Which of the snapshot's blobs the store lacks (one round trip for the whole snapshot)."""
    root = request["root"]
    return {"missing": [d for d in request["digests"] if not os.path.exists(_blob_path(root, d))]}


def _read_exactly(stream: IO[bytes], count: int) -> bytes:
    data = stream.read(count)
    while len(data) < count:
        more = stream.read(count - len(data))
        if not more:
            raise EOFError(f"the blob stream ended {count - len(data)} bytes early")
        data += more
    return data


def op_put_blobs(request: dict[str, Any], stream: IO[bytes]) -> dict[str, Any]:
    """Store the blobs of a tar stream (members named by their sha256), each checked and renamed
    into place, so a half-sent blob is never seen. The stream is read member by member straight
    into the blob files (tarfile's stream reader copies every buffer several times: a third of the
    speed for gigabytes of data)."""
    root = request["root"]
    stored = 0
    view = memoryview(bytearray(1 << 20))
    while True:
        try:
            header = _read_exactly(stream, tarfile.BLOCKSIZE)
        except EOFError:
            break
        if header.count(0) == tarfile.BLOCKSIZE:
            break  # the end-of-archive blocks (or the end of the stream)
        member = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        padding = -member.size % tarfile.BLOCKSIZE
        digest = member.name
        if not member.isfile() or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"unexpected member {digest!r} in the blob stream")
        final = _blob_path(root, digest)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        hasher = hashlib.sha256()
        descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(final), prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb", buffering=0) as out:
                left = member.size
                while left:
                    got = stream.readinto(view[:min(left, len(view))])  # type: ignore[attr-defined]
                    if not got:
                        raise EOFError(f"the blob stream ended inside blob {digest}")
                    hasher.update(view[:got])
                    out.write(view[:got])
                    left -= got
            _read_exactly(stream, padding)
            if hasher.hexdigest() != digest:
                raise ValueError(f"blob {digest} arrived damaged")
            os.chmod(temporary, 0o444)
            os.replace(temporary, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        if member.size >= _LINKED_MIN_BYTES:
            _mark_verified(final)  # checked on arrival: linking it as a data input needs no second read
        stored += 1
    return {"stored": stored}


def op_launch(request: dict[str, Any]) -> dict[str, Any]:
    """Materialize the job folder from the store, write its files and start its supervisor
    detached; a second call for the same job only reports that it was launched."""
    job_dir = request["job_dir"]
    _check_job_dir(request["root"], job_dir)
    os.makedirs(os.path.join(job_dir, job_runner.UPLOADS_DIR), mode=0o700, exist_ok=True)
    try:
        os.close(os.open(os.path.join(job_dir, job_runner.LAUNCH_MARKER), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return {"launched": False}
    materialized = op_materialize(request)
    if materialized.get("damaged"):
        os.unlink(os.path.join(job_dir, job_runner.LAUNCH_MARKER))  # the client resends them and launches again
        return {"launched": False, **materialized}
    try:
        job_runner.start_supervisor(job_dir, _LAUNCH_TIMEOUT_SECONDS)
    except RuntimeError as exc:
        return {"launched": False, "error": str(exc)}
    return {"launched": True}


def op_materialize(request: dict[str, Any]) -> dict[str, Any]:
    """Make the job folder from the store (checked copies) and write its files, without starting
    it (the other nodes of a multi-node run). Damaged blobs are removed and named in the answer
    (``damaged``); the client sends them again and asks once more."""
    root, job_dir = request["root"], request["job_dir"]
    _check_job_dir(root, job_dir)
    os.makedirs(os.path.join(job_dir, job_runner.UPLOADS_DIR), mode=0o700, exist_ok=True)
    work = os.path.join(job_dir, job_runner.WORK_DIR)
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    damaged = []
    for item in request["manifest"]:
        relative, digest, executable = item[:3]
        linked = len(item) > 3 and bool(item[3])
        parts = relative.split("/")
        if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"unsafe path in the snapshot: {relative!r}")
        target = os.path.join(work, *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        source = _blob_path(root, digest)
        try:
            if linked:
                _link_verified(source, target, digest)
            else:
                _copy_verified(source, target, digest)
        except (DamagedBlobError, FileNotFoundError):
            damaged.append(digest)
            continue
        if executable and not linked:
            with contextlib.suppress(OSError):
                os.chmod(target, 0o755)
        with contextlib.suppress(OSError):  # recently used: eviction keeps it (mtime kept: the signature)
            os.utime(source, ns=(time.time_ns(), os.stat(source).st_mtime_ns))
    if damaged:
        return {"damaged": sorted(set(damaged))}
    for relative, text in request["extras"].items():
        path = os.path.join(job_dir, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
    descriptor = os.open(os.path.join(job_dir, job_runner.JOB_SPEC), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(request["job_json"], out)
    return {}


def op_run(request: dict[str, Any]) -> dict[str, Any]:
    """Run a program of this host (a scheduler's ``sbatch``, ``squeue``, ``sacct``, ``scancel``) and
    answer its exit code and output; ``files`` (path: text) are written first (a batch script).

    Not through a shell: ``argv`` is the program and its arguments as they are.
    """
    for path, text in (request.get("files") or {}).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(path, 0o700)
    try:
        done = subprocess.run(list(request["argv"]), capture_output=True, text=True, errors="replace",
                              timeout=float(request.get("timeout", 60)), cwd=request.get("cwd"),
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return {"code": 127, "stdout": "", "stderr": f"{request['argv'][0]}: command not found"}
    except subprocess.TimeoutExpired:
        limit = request.get("timeout", 60)
        return {"code": -1, "stdout": "", "stderr": f"{request['argv'][0]} took longer than {limit} s"}
    return {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def op_append_once(request: dict[str, Any]) -> dict[str, Any]:
    """Append base64 ``data`` to ``path`` unless ``marker`` exists, then create it (idempotent)."""
    try:
        os.close(os.open(request["marker"], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return {"appended": False}
    with open(request["path"], "ab") as out:
        out.write(base64.b64decode(request["data"]))
    return {"appended": True}


def op_stop_strays(request: dict[str, Any]) -> dict[str, Any]:
    """Stop every process working inside a job folder (ranks a remote launcher left behind)."""
    job_dir = os.path.realpath(request["job_dir"])
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                cwd = os.readlink(f"/proc/{entry}/cwd")
                if cwd == job_dir or cwd.startswith(job_dir + "/"):
                    found.add(int(entry))
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signum)
        deadline = time.monotonic() + float(request.get("grace_seconds", 5))
        while time.monotonic() < deadline and any(job_runner.process_start_ticks(p) is not None for p in found):
            time.sleep(0.05)
        found = {p for p in found if job_runner.process_start_ticks(p) is not None}
        if not found:
            break
    return {"remaining": sorted(found)}


def op_poll(request: dict[str, Any]) -> dict[str, Any]:
    """How the job is doing (:func:`job_runner.job_state`)."""
    return job_runner.job_state(request["job_dir"])


def op_wait(request: dict[str, Any]) -> dict[str, Any]:
    """Return as soon as the job has ended (its ``exit.json`` exists), or after ``timeout`` seconds
    (at most :data:`_WAIT_LIMIT_SECONDS`): the watcher learns of the end within milliseconds, without
    polling over the network."""
    ended = os.path.join(request["job_dir"], job_runner.EXIT_STATE)
    deadline = time.monotonic() + max(0.0, min(float(request["timeout"]), _WAIT_LIMIT_SECONDS))
    while not os.path.exists(ended) and time.monotonic() < deadline:
        time.sleep(min(_WAIT_STEP_SECONDS, max(0.0, deadline - time.monotonic())))
    return {"ended": os.path.exists(ended)}


def op_cancel(request: dict[str, Any]) -> dict[str, Any]:
    job_runner.cancel_job(request["job_dir"], float(request["grace_seconds"]), bool(request["wait"]))
    return {}


def pack(request: dict[str, Any]) -> bytes | None:
    """A tar of one file or folder of the job; None when it is missing. Links are packed as links
    (the client never follows one out of the folder)."""
    relative = request["relative_path"]
    if relative.startswith("/") or any(part in ("", ".", "..") for part in relative.split("/")):
        raise ValueError(f"refusing path {relative!r}: not a path inside the job folder")
    path = os.path.join(request["job_dir"], relative)
    if not os.path.lexists(path):
        return None
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(path, arcname=os.path.basename(path))
    return archive.getvalue()


def op_cleanup(request: dict[str, Any]) -> dict[str, Any]:
    """Remove a finished job's folder (or keep it, marked, for debugging), then evict old caches."""
    job_dir = request["job_dir"]
    _check_job_dir(request["root"], job_dir)
    if request.get("keep"):
        with contextlib.suppress(OSError, ValueError):
            _remove_secrets(os.path.join(job_dir, job_runner.JOB_SPEC))
        with contextlib.suppress(OSError):
            open(os.path.join(job_dir, KEPT_MARKER), "w").close()
    else:
        shutil.rmtree(job_dir, ignore_errors=True)
    return {"evicted": _collect_garbage(request["root"], request.get("limits") or {})}


def _remove_secrets(spec_path: str) -> None:
    """Leave no secret value in a kept job's ``job.json`` (the supervisor removes them when it
    starts; a job that never started still has them)."""
    spec = job_runner.read_json(spec_path)
    if spec is None:
        return
    secret = set(spec.get("secret_env", ()))
    if secret & set(spec.get("env", {})):
        spec["env"] = {k: v for k, v in spec["env"].items() if k not in secret}
        job_runner.write_json_atomically(spec_path, spec)


def op_env(request: dict[str, Any]) -> dict[str, Any]:
    """The virtual environment of a lock, built once per fingerprint under a lock file.

    ``wheels`` (file name: sha256) are taken from the blob store; when some are missing there and the
    environment is not built yet, the answer lists them (``missing``) and the client sends them first.
    """
    root, fingerprint = request["root"], request["fingerprint"]
    built = _already_built(root, fingerprint)
    if built is not None:
        return built
    wheels = {name: _blob_path(root, digest) for name, digest in request.get("wheels", {}).items()}
    uv, missing = _needed_files(root, list(wheels.values()), request.get("uv_blob"))
    if missing:
        return {"fingerprint": fingerprint, "built": False, "missing": missing}

    def build(final: str, log: IO[bytes]) -> None:
        venv_builder.build_venv(final, list(request["requirements"]), sys.executable, uv, log,
                                float(request.get("timeout", 1800)), sys.version, wheels,
                                bool(request.get("offline")), bool(request.get("complete")))

    return _build_once(root, fingerprint, request.get("limits") or {}, (fingerprint,), build)


def op_conda_env(request: dict[str, Any]) -> dict[str, Any]:
    """The conda environment of a solved specification, built once per fingerprint under a lock file
    (see :mod:`conda_installer`).

    ``packages`` (each with ``file_name``, ``subdir``, ``name``, ``version``, ``build``, ``sha256``)
    and ``wheels`` (the ``pip:`` section's, file name: sha256) are taken from the blob store; when
    some are missing there and the environment is not built yet, the answer lists them (``missing``).
    ``tool_python`` is an interpreter with py-rattler (an environment the client had built first);
    with ``probe``, the answer only says whether the environment is built.
    """
    root, fingerprint = request["root"], request["fingerprint"]
    built = _already_built(root, fingerprint)
    if built is not None or request.get("probe"):  # probe: the client prepares the tool first
        return built or {"fingerprint": fingerprint, "built": False}
    packages = [dict(package, path=_blob_path(root, package["sha256"])) for package in request["packages"]]
    wheels = {name: _blob_path(root, digest) for name, digest in request.get("wheels", {}).items()}
    uv, missing = _needed_files(root, [*(package["path"] for package in packages), *wheels.values()],
                                request.get("uv_blob"))
    if missing:
        return {"fingerprint": fingerprint, "built": False, "missing": missing}

    def build(final: str, log: IO[bytes]) -> None:
        conda_installer.build_conda_env(final, packages, request["tool_python"], uv,
                                        list(request.get("pip_requirements") or []), wheels,
                                        os.path.join(root, "cache", "conda"), log, float(request.get("timeout", 1800)))

    return _build_once(root, fingerprint, request.get("limits") or {}, (fingerprint, request["tool_fingerprint"]),
                       build)


def _already_built(root: str, fingerprint: str) -> dict[str, Any] | None:
    """The answer for an environment already built (and now used), or None."""
    if len(fingerprint) != 64 or not all(c in "0123456789abcdef" for c in fingerprint):
        raise ValueError(f"not an environment fingerprint: {fingerprint!r}")
    final = os.path.join(root, "envs", fingerprint)
    if not venv_builder.is_built(final):
        return None
    os.utime(final)
    return {"fingerprint": fingerprint, "python": os.path.join(final, "bin", "python"), "built": False}


def _needed_files(root: str, blobs: list[str], uv_digest: str | None) -> tuple[str | None, list[str]]:
    """uv (this host's, or the one the client sent), and the digests of the blobs still missing."""
    missing = []
    for path in blobs:
        try:
            os.utime(path)  # a use: the blob collector keeps the recently used
        except OSError:
            missing.append(os.path.basename(path))
    uv = _host_uv()
    if uv is None and uv_digest:
        uv = _uv_from_blob(root, uv_digest)
        if uv is None:
            missing.append(uv_digest)
    return uv, sorted(set(missing))


def _build_once(root: str, fingerprint: str, limits: dict[str, Any], keep: tuple[str, ...],
                build: Callable[[str, IO[bytes]], None]) -> dict[str, Any]:
    """Build the environment ``fingerprint`` under its lock file (unless another build just did), with
    its log under ``logs/``, then evict the least recently used beyond the limits (never ``keep``)."""
    envs = os.path.join(root, "envs")
    final = os.path.join(envs, fingerprint)
    python = os.path.join(final, "bin", "python")
    os.makedirs(envs, exist_ok=True)
    os.makedirs(os.path.join(root, "logs"), exist_ok=True)
    with open(os.path.join(envs, fingerprint + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if venv_builder.is_built(final):
            return {"fingerprint": fingerprint, "python": python, "built": False}
        log_path = os.path.join(root, "logs", f"env-{fingerprint[:16]}-{int(time.time())}.log")
        try:
            with open(log_path, "ab") as log:
                build(final, log)
        except venv_builder.BuildFailedError:
            return {"fingerprint": fingerprint, "built": False, "error": True, "log_path": log_path}
    evicted = _evict_environments(root, limits, keep=keep)
    return {"fingerprint": fingerprint, "python": python, "built": True, "log_path": log_path, "evicted": evicted}


def _uv_from_blob(root: str, digest: str) -> str | None:
    """The uv executable the client sent (this host has none), made runnable once under ``tools/``;
    None while its blob has not arrived."""
    tool = os.path.join(root, "tools", f"uv-{digest[:16]}", "uv")
    if os.access(tool, os.X_OK):
        return tool
    blob = _blob_path(root, digest)
    if not os.path.exists(blob):
        return None
    os.makedirs(os.path.dirname(tool), exist_ok=True)
    temporary = f"{tool}.tmp.{os.getpid()}"
    try:
        _copy_verified(blob, temporary, digest)
    except (DamagedBlobError, FileNotFoundError):
        return None
    os.chmod(temporary, 0o755)
    os.replace(temporary, tool)
    return tool


CACHE_LIMIT_DEFAULTS: dict[str, float] = {
    "blob_cache_max_bytes": 10 << 30, "env_cache_max_count": 20, "env_cache_max_bytes": 50 << 30,
    "kept_job_max_age_days": 7,
}
"""The host's cache bounds when the connection sets none (the SSH connection form shows these)."""


def _limit(limits: dict[str, Any], name: str) -> float:
    return float(limits.get(name, CACHE_LIMIT_DEFAULTS[name]))


def _evict_environments(root: str, limits: dict[str, Any], keep: tuple[str, ...] = ()) -> list[str]:
    """Least recently used environments beyond ``env_cache_max_count`` / ``env_cache_max_bytes``
    (never one a running job uses), each logged to ``logs/evictions.log``."""
    removed = venv_builder.evict_environments(os.path.join(root, "envs"), int(_limit(limits, "env_cache_max_count")),
                                              int(_limit(limits, "env_cache_max_bytes")), keep)
    if removed:
        os.makedirs(os.path.join(root, "logs"), exist_ok=True)
        with open(os.path.join(root, "logs", "evictions.log"), "a", encoding="utf-8") as log:
            for line in removed:
                log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} evicted environment {line}\n")
    return removed


def _collect_garbage(root: str, limits: dict[str, Any]) -> int:
    """Evict least recently used blobs and environments over their bounds, and kept job folders
    past their age; at most every few minutes."""
    stamp = os.path.join(root, ".gc")
    try:
        if time.time() - os.stat(stamp).st_mtime < _GC_EVERY_SECONDS and not limits.get("now"):
            return 0
    except FileNotFoundError:
        pass
    open(stamp, "w").close()
    evicted = 0
    blob_max = int(_limit(limits, "blob_cache_max_bytes"))
    blobs = []
    for folder, _dirs, files in os.walk(os.path.join(root, "blobs")):
        for name in files:
            if name.endswith(_VERIFIED_SUFFIX):
                continue  # a blob's signature: goes with its blob
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                info = os.stat(path)
                blobs.append((max(info.st_atime, info.st_mtime), info.st_size, path))
    total = sum(size for _, size, _ in blobs)
    for _, size, path in sorted(blobs):
        if total <= blob_max:
            break
        with contextlib.suppress(OSError):
            os.unlink(path)  # a job that linked it keeps its own link
            total -= size
            evicted += 1
        with contextlib.suppress(OSError):
            os.unlink(path + _VERIFIED_SUFFIX)
    evicted += len(_evict_environments(root, limits))
    kept_days = float(_limit(limits, "kept_job_max_age_days"))
    jobs_dir = os.path.join(root, "jobs")
    if os.path.isdir(jobs_dir):
        for name in os.listdir(jobs_dir):
            marker = os.path.join(jobs_dir, name, KEPT_MARKER)
            with contextlib.suppress(OSError):
                if time.time() - os.stat(marker).st_mtime > kept_days * 86400:
                    shutil.rmtree(os.path.join(jobs_dir, name), ignore_errors=True)
                    evicted += 1
    return evicted


_OPERATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "hello": op_hello,
    "which": op_which,
    "missing": op_missing,
    "launch": op_launch,
    "materialize": op_materialize,
    "run": op_run,
    "append_once": op_append_once,
    "stop_strays": op_stop_strays,
    "poll": op_poll,
    "wait": op_wait,
    "cancel": op_cancel,
    "cleanup": op_cleanup,
    "env": op_env,
    "conda_env": op_conda_env,
}
"""The agent's operations by name (``put_blobs`` and ``pack`` carry payloads: :func:`serve`)."""


class _Limited(io.RawIOBase):
    """The next ``size`` bytes of a stream, as a file of their own."""

    def __init__(self, source: IO[bytes], size: int) -> None:
        super().__init__()
        self.source = source
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` (up to what is left) straight from the source: no intermediate copy, which
        cost half the speed of a data input's blobs."""
        count = min(len(buffer), self.left)
        if count <= 0:
            return 0
        view = memoryview(buffer)[:count]
        readinto = getattr(self.source, "readinto", None)
        if readinto is not None:
            got = readinto(view)
        else:
            data = self.source.read(count)
            got = len(data)
            view[:got] = data
        if not got:
            raise EOFError(f"the payload ended {self.left} bytes early")
        self.left -= got
        return int(got)

    def drain(self) -> None:
        while self.left > 0:
            if not self.read(min(self.left, 1 << 20)):
                break


def serve(source: IO[bytes], sink: IO[bytes]) -> int:
    """Answer requests until end of input: one JSON line each (``op``, ``payload_size`` and the
    operation's fields) followed by ``payload_size`` bytes; each answer is a JSON line (``ok``,
    ``payload_size``) followed by its payload. One process serves a whole SSH connection."""
    while True:
        line = source.readline()
        if not line:
            return 0
        request = json.loads(line)
        operation = request.pop("op")
        size = int(request.pop("payload_size", 0))
        incoming = _Limited(source, size)  # read by put_blobs as it goes; other operations take none
        data = b""
        try:
            if operation == "put_blobs":  # streamed: blobs of gigabytes never sit in memory
                answer = op_put_blobs(request, incoming)  # type: ignore[arg-type]
            elif operation == "pack":
                packed = pack(request)
                answer = {"missing": packed is None}
                data = packed or b""
            else:
                handler = _OPERATIONS.get(operation)
                if handler is None:
                    raise ValueError(f"unknown operation {operation!r}")
                answer = handler(request)
            answer["ok"] = True
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        incoming.drain()  # the rest of a payload an operation stopped reading (it failed)
        answer["payload_size"] = len(data)
        sink.write(json.dumps(answer).encode() + b"\n" + data)
        sink.flush()


def main(argv: list[str]) -> int:
    """``python3 remote_agent.py serve``: requests on stdin, answers on stdout."""
    if argv[1:] != ["serve"]:
        print("usage: remote_agent.py serve", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError, AttributeError):  # a pipe from sshd: 1 MiB, as the sender's (Linux)
        fcntl.fcntl(sys.stdin.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)  # gigabytes of blobs: ~25% faster here
    return serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
