"""The Docker target's input cache: a named volume on the daemon's host that keeps the files of
downloaded data inputs by content, so a second run sends only the files that changed.

Staging a job whose snapshot holds data inputs (paths under ``.inputs/``) first runs a short-lived
sync container: the job's image, :data:`SYNC_PROGRAM` (the image's entrypoint bypassed), no
network, the volume read-write. Over its attach stream it is told every input blob the job needs,
answers which ones it lacks, receives only those (each checked against its sha256 before it is
kept, written under a name of its own and renamed: concurrent syncs and an interrupted one never
leave a partial blob), and makes the job's own folder of hard links to them (``jobs/<job id>/``).
It removes the folders of jobs whose containers are gone (an hour after they were made: another
submitter's job may be between its sync and its container), and blobs no job asked for in
:data:`KEEP_DAYS` days (a running job's links keep its files).

The job's container gets only its own folder, bound read-only at :data:`CACHE_MOUNT`: its input
files are links into it. A script cannot change what another run reads, nor see another run's data.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider.core.errors import ConfigurationError, TargetError
from airflow_provider.core.targets.docker_streams import close_stream, raw_socket
from airflow_provider.core.targets.tar_stream import file_chunks

__all__ = ["CACHE_MOUNT", "DEFAULT_VOLUME", "KEEP_DAYS", "SYNC_PROGRAM", "VOLUME_NAME", "CachedBlob", "SyncResult",
           "check_volume_name", "link_target", "sync_blobs"]

CACHE_MOUNT = "/var/cache/training-runs/inputs"
"""Where job containers see the cache (read-only) and the sync container writes it."""
DEFAULT_VOLUME = "training-runs-inputs"
"""The volume a target uses unless its connection names another (or ``none``)."""
KEEP_DAYS = 30
"""A blob no job asked for in this many days is removed by the next sync."""
SYNC_LABEL = "training.input_cache_sync"
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,127}\Z")  # Docker's rule for volume names
_IO_TIMEOUT_SECONDS = 300.0
"""The longest the sync container may stay silent or stop reading (a daemon gone, a stuck stream)."""
_FINAL_TIMEOUT_SECONDS = 1800.0
"""The longest its last answer may take (it links the job's files and evicts unused ones first)."""

SYNC_PROGRAM = r"""import hashlib, json, os, sys, time
root, keep_days, job, stream = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.stdin.buffer
blobs, partial, jobs = (os.path.join(root, name) for name in ("blobs", "partial", "jobs"))
for folder in (blobs, partial, jobs):
    os.makedirs(folder, exist_ok=True)
def where(digest):
    return os.path.join(blobs, digest[:2], digest)
def digest_of(text):
    if len(text) != 64 or text.strip("0123456789abcdef"):
        sys.exit("not a sha256 digest: %r" % (text[:80],))
    return text
request = json.loads(stream.readline())
now = time.time()
wanted, missing = set(), []
for digest, size in request["want"]:
    wanted.add(digest_of(digest))
    try:
        if os.stat(where(digest)).st_size == size:
            os.utime(where(digest), (now, now))
            continue
    except OSError:
        pass
    missing.append(digest)
sys.stdout.write(json.dumps(missing) + "\n")
sys.stdout.flush()
view = memoryview(bytearray(1 << 20))
while True:
    header = stream.readline().split()
    if header == [b"e"]:
        break
    if len(header) != 3 or header[0] != b"b":
        sys.exit("the blob stream was cut short or is malformed: %r" % (header[:3],))
    digest, size = digest_of(header[1].decode()), int(header[2])
    temporary = os.path.join(partial, "%s.%s" % (digest, os.urandom(8).hex()))
    check, left = hashlib.sha256(), size
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb", buffering=0) as out:
        while left:
            got = stream.readinto(view[:min(left, len(view))])
            if not got:
                sys.exit("the blob stream was cut short in %s" % digest)
            check.update(view[:got])
            out.write(view[:got])
            left -= got
    if check.hexdigest() != digest:
        os.unlink(temporary)
        sys.exit("blob %s arrived with another content: its file changed while it was sent" % digest)
    os.chmod(temporary, 0o444)
    os.makedirs(os.path.dirname(where(digest)), exist_ok=True)
    os.replace(temporary, where(digest))
links = os.path.join(jobs, job)
os.makedirs(links, mode=0o755, exist_ok=True)
for digest in wanted:
    try:
        os.link(where(digest), os.path.join(links, digest))
    except FileExistsError:
        pass
    except FileNotFoundError:  # evicted by a sync that read its time just before this one refreshed it
        sys.exit("blob %s was evicted while this job was staged: stage it again" % digest)
keep = set(request["keep_jobs"]) | {job}
evicted = freed = 0
for name in os.listdir(jobs):  # another sync may remove the same folder meanwhile
    try:
        if name in keep or os.stat(os.path.join(jobs, name)).st_mtime >= now - 3600:
            continue
        for link in os.listdir(os.path.join(jobs, name)):
            os.unlink(os.path.join(jobs, name, link))
        os.rmdir(os.path.join(jobs, name))
    except OSError:
        pass
for folder, cutoff in ((blobs, now - keep_days * 86400), (partial, now - 86400)):
    for path, _, names in os.walk(folder):
        for name in names:
            if name in wanted:
                continue
            try:
                info = os.stat(os.path.join(path, name))
                if info.st_mtime < cutoff:
                    os.unlink(os.path.join(path, name))
                    evicted, freed = evicted + 1, freed + info.st_size
            except OSError:
                pass
sys.stdout.write(json.dumps({"evicted": evicted, "freed": freed}) + "\n")
"""
"""The sync container's program (Python >= 3.9, standard library only): ``SYNC_PROGRAM CACHE_ROOT
KEEP_DAYS JOB_ID``. In: a JSON line ``{"want": [[digest, size], ...], "keep_jobs": [job id, ...]}``
(the jobs whose containers exist: the others' folders go once an hour old), then a ``b DIGEST
SIZE`` record with the content of each blob it said it lacks, then ``e``. Out: a JSON line of the
missing digests, then one of counts."""


@dataclass(frozen=True)
class CachedBlob:
    """An input file's content, to be found in the cache.

    :param digest: its sha256.
    :param size: its size.
    :param source: the blob file on this machine, read only when the cache lacks it.
    """

    digest: str
    size: int
    source: Path


@dataclass(frozen=True)
class SyncResult:
    """What a sync did.

    :param sent: blobs sent (the cache lacked them).
    :param bytes_sent: their bytes.
    :param evicted: blobs removed as unused for :data:`KEEP_DAYS` days.
    """

    sent: int
    bytes_sent: int
    evicted: int


def check_volume_name(name: str, field: str) -> str:
    """``name`` if Docker accepts it as a volume name.

    :param name: the volume's name.
    :param field: the setting, for the error.
    :raises ConfigurationError: it is not one.
    """
    if not isinstance(name, str) or not VOLUME_NAME.match(name):
        raise ConfigurationError(field, f"{name!r} is not a Docker volume name.",
                                 f'use letters, digits, "_", "." or "-", e.g. "{DEFAULT_VOLUME}"; "none" sends '
                                 "inputs with every job instead.")
    return name


def link_target(digest: str) -> str:
    """Where a job container finds the blob ``digest`` (the target of its input file's link).

    :param digest: the blob's sha256.
    """
    return f"{CACHE_MOUNT}/{digest}"


def sync_blobs(client: Any, image: str, python: str, volume: str, job_id: str, blobs: Mapping[str, CachedBlob],
               labels: Mapping[str, str], keep_jobs: Iterable[str] = ()) -> SyncResult:
    """Make ``volume`` hold every blob of ``blobs`` and the job's folder of links to them (see the
    module docstring).

    :param client: the docker SDK client.
    :param image: the job's image (it has ``python``).
    :param python: the interpreter in the image.
    :param volume: the cache volume (created by the daemon on first use).
    :param job_id: the job whose folder of links is made.
    :param blobs: by digest.
    :param labels: the sync container's labels (the target's own).
    :param keep_jobs: the jobs whose folders stay (their containers exist); the others' go.
    :raises TargetError: the sync container failed or stopped answering (its last words are in the
        message); a retry may help.
    """
    _remove_leftovers(client)
    container = client.containers.create(
        image, ["-I", "-S", "-c", SYNC_PROGRAM, CACHE_MOUNT, str(KEEP_DAYS), job_id], entrypoint=[python],
        user="0", network_disabled=True, stdin_open=True, volumes=[f"{volume}:{CACHE_MOUNT}:rw"],
        labels={**labels, SYNC_LABEL: "true"})
    try:
        stream = client.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        try:
            client.api.start(container.id)
            return _exchange(raw_socket(stream), blobs, sorted({*keep_jobs, job_id}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            close_stream(stream)  # the program sees its input end, and stops
            raise TargetError(f"the input cache volume {volume!r} could not be updated ({type(exc).__name__}: "
                              f"{exc}): {_stderr_of(client, container.id)}; a retry may help") from exc
        finally:
            close_stream(stream)
    finally:
        with contextlib.suppress(Exception):  # gone already (another process removed it as a leftover)
            container.remove(force=True)


def _remove_leftovers(client: Any) -> None:
    """Remove sync containers that ended without being removed (their process was killed)."""
    for container in client.containers.list(all=True, filters={"label": SYNC_LABEL, "status": "exited"}):
        with contextlib.suppress(Exception):  # another process removes it at the same time
            container.remove(force=True)


def _exchange(sock: Any, blobs: Mapping[str, CachedBlob], keep_jobs: list[str]) -> SyncResult:
    sock.settimeout(_IO_TIMEOUT_SECONDS)
    replies = _Replies(sock)
    want = [[digest, blob.size] for digest, blob in blobs.items()]
    sock.sendall(json.dumps({"want": want, "keep_jobs": keep_jobs}).encode() + b"\n")
    missing = json.loads(replies.line())
    sent = 0
    for digest in missing:
        blob = blobs[digest]
        sock.sendall(b"b %s %d\n" % (digest.encode(), blob.size))
        for chunk in file_chunks(blob.source, blob.size):
            sock.sendall(chunk)
        sent += blob.size
    sock.sendall(b"e\n")
    sock.settimeout(_FINAL_TIMEOUT_SECONDS)  # linking and eviction over a large cache, in silence
    counts = json.loads(replies.line())
    return SyncResult(len(missing), sent, int(counts["evicted"]))


class _Replies:
    """The lines the sync program writes on stdout, from the attach stream's frames (an 8-byte
    header: the stream, three zeros, the size; then the data). Read with plain ``recv``: on a TLS
    connection, data already decrypted waits in the SSL object where a ``poll`` on the socket does
    not see it (docker's own frame reader would wait for ever there).

    :param sock: the attach socket (plain or TLS), with a timeout.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._stdout = b""

    def line(self) -> bytes:
        """The next whole line on stdout (its stderr is skipped: the daemon's logs keep it)."""
        while b"\n" not in self._stdout:
            header = self._exactly(8)
            data = self._exactly(int.from_bytes(header[4:], "big"))
            if header[0] == 1:
                self._stdout += data
        line, self._stdout = self._stdout.split(b"\n", 1)
        return line

    def _exactly(self, count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            chunk = self._sock.recv(count - len(data))
            if not chunk:
                raise ValueError("the sync container stopped before it answered")
            data += chunk
        return bytes(data)


def _stderr_of(client: Any, container_id: str) -> str:
    try:
        client.api.wait(container_id, timeout=30)
        text = bytes(client.api.logs(container_id, stdout=False, stderr=True, tail=5)).decode(errors="replace")
    except Exception as exc:  # the daemon went away: say so
        return f"its output could not be read ({type(exc).__name__})"
    return text.strip() or "it printed nothing"
