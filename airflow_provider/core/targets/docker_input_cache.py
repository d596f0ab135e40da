"""The Docker target's input cache: a named volume on the daemon's host that keeps the files of
downloaded data inputs by content, so a second run sends only the files that changed.

Staging a job whose snapshot holds data inputs (paths under ``.inputs/``) first runs a short-lived
sync container: the job's image, :data:`SYNC_PROGRAM`, no network, the volume read-write. Over its
attach stream it is told every input blob the job needs, answers which ones it lacks, receives only
those (each checked against its sha256 before it is kept, written under a temporary name and renamed:
concurrent syncs and an interrupted one never leave a partial blob), refreshes the others' times and
evicts blobs no job asked for in :data:`KEEP_DAYS` days. The job's container mounts the volume
read-only at :data:`CACHE_MOUNT`, and its input files are links into it: a script cannot change what
another run reads, and nothing is copied on the daemon's host.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
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
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")  # Docker's rule for volume names

SYNC_PROGRAM = r"""import hashlib, json, os, sys, time
root, keep_days, stream = sys.argv[1], float(sys.argv[2]), sys.stdin.buffer
blobs, partial = os.path.join(root, "blobs"), os.path.join(root, "partial")
os.makedirs(blobs, exist_ok=True)
os.makedirs(partial, exist_ok=True)
def where(digest):
    return os.path.join(blobs, digest[:2], digest)
def digest_of(text):
    if len(text) != 64 or text.strip("0123456789abcdef"):
        sys.exit("not a sha256 digest: %r" % (text[:80],))
    return text
now = time.time()
wanted, missing = set(), []
for digest, size in json.loads(stream.readline()):
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
stored = received = 0
view = memoryview(bytearray(1 << 20))
while True:
    header = stream.readline().split()
    if header == [b"e"]:
        break
    if len(header) != 3 or header[0] != b"b":
        sys.exit("the blob stream was cut short or is malformed: %r" % (header[:3],))
    digest, size = digest_of(header[1].decode()), int(header[2])
    temporary = os.path.join(partial, "%s.%d" % (digest, os.getpid()))
    check, left = hashlib.sha256(), size
    with open(temporary, "wb", buffering=0) as out:
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
    stored, received = stored + 1, received + size
evicted = freed = 0
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
sys.stdout.write(json.dumps({"stored": stored, "received": received, "evicted": evicted, "freed": freed}) + "\n")
"""
"""The sync container's program (Python >= 3.9, standard library only): ``SYNC_PROGRAM CACHE_ROOT
KEEP_DAYS``. In: a JSON line ``[[digest, size], ...]``, then a ``b DIGEST SIZE`` record with the
content for each blob it said it lacks, then ``e``. Out: a JSON line of the missing digests, then
one of counts."""


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
    return f"{CACHE_MOUNT}/blobs/{digest[:2]}/{digest}"


def sync_blobs(client: Any, image: str, python: str, volume: str, blobs: Mapping[str, CachedBlob],
               labels: Mapping[str, str], timeout_seconds: float = 3600.0) -> SyncResult:
    """Make ``volume`` hold every blob of ``blobs`` (see the module docstring).

    :param client: the docker SDK client.
    :param image: the job's image (it has ``python``).
    :param python: the interpreter in the image.
    :param volume: the cache volume (created by the daemon on first use).
    :param blobs: by digest.
    :param labels: the sync container's labels (the target's own, to find what it left).
    :param timeout_seconds: the most a sync may take.
    :raises TargetError: the sync container failed (its last words are in the message).
    """
    container = client.containers.create(
        image, [python, "-I", "-S", "-c", SYNC_PROGRAM, CACHE_MOUNT, str(KEEP_DAYS)], user="0",
        network_disabled=True, stdin_open=True, volumes=[f"{volume}:{CACHE_MOUNT}:rw"],
        labels={**labels, SYNC_LABEL: "true"})
    try:
        stream = client.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        try:
            client.api.start(container.id)
            return _exchange(stream, blobs)
        except (OSError, ValueError) as exc:
            errors = _stderr_of(client, container.id)
            raise TargetError(f"the input cache volume {volume!r} could not be updated ({exc}): {errors}; a retry may "
                              "help") from exc
        finally:
            close_stream(stream)
    finally:
        try:
            client.api.wait(container.id, timeout=timeout_seconds)
        finally:
            container.remove(force=True)


def _exchange(stream: Any, blobs: Mapping[str, CachedBlob]) -> SyncResult:
    sock = raw_socket(stream)
    sock.sendall(json.dumps([[digest, blob.size] for digest, blob in blobs.items()]).encode() + b"\n")
    lines = _stdout_lines(stream)
    missing = json.loads(next(lines))
    sent = 0
    for digest in missing:
        blob = blobs[digest]
        sock.sendall(b"b %s %d\n" % (digest.encode(), blob.size))
        for chunk in file_chunks(blob.source, blob.size):
            sock.sendall(chunk)
        sent += blob.size
    sock.sendall(b"e\n")
    counts = json.loads(next(lines))
    return SyncResult(len(missing), sent, int(counts["evicted"]))


def _stdout_lines(stream: Any) -> Iterator[bytes]:
    """The lines the sync program writes on stdout, from the multiplexed attach stream."""
    from docker.utils.socket import frames_iter

    pending = b""
    for stream_id, data in frames_iter(stream, tty=False):
        if stream_id != 1:
            continue
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line
    raise ValueError("the sync container stopped before it answered")


def _stderr_of(client: Any, container_id: str) -> str:
    try:
        client.api.wait(container_id, timeout=30)
        text = bytes(client.api.logs(container_id, stdout=False, stderr=True, tail=5)).decode(errors="replace")
    except Exception as exc:  # the daemon went away: say so
        return f"its output could not be read ({type(exc).__name__})"
    return text.strip() or "it printed nothing"
