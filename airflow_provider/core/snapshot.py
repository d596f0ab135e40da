"""Content-addressed snapshots of a training run's source directory (Azure ML's *snapshot*).

``SnapshotStore.take`` walks the source directory, hashes every included file and records the
result as a manifest; ``SnapshotStore.restore`` rebuilds the exact tree elsewhere. The store
(default ``state_dir() / "snapshots"``) is laid out as::

    <root>/
    ├── blobs/ab/abcdef0123…      one file per distinct content, named by its sha256 (sharded by the
    │                             first two hex digits); written once, never modified
    ├── manifests/<id>.json       canonical manifest of one snapshot; <id> is the sha256 of the file
    └── statcache/<key>.json      per source directory (<key> = sha256 of its resolved path):
                                  relative path -> [size, mtime_ns, inode, ctime_ns, digest]

Every file is written to a temporary name next to its final place and moved with ``os.replace``,
so readers never see a partial file; leftover ``.*.tmp`` files after a crash are garbage. Blobs are
written before the manifest that names them, so an existing manifest means all its blobs exist.
Empty directories are not part of a snapshot (as in git). Sockets, FIFOs and devices are skipped.

The stat cache lets an unchanged directory be snapshotted without reading file contents. An
entry is trusted only when size, mtime, inode and ctime all match, and entries are recorded only
for files whose mtime is more than two seconds older than the snapshot, so a file written in the
same clock tick as a snapshot is always hashed again ("racy git").
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathspec import GitIgnoreSpec

from airflow_provider.core.errors import SnapshotError
from airflow_provider.core.paths import state_dir

__all__ = ["ManifestEntry", "Snapshot", "SnapshotResult", "SnapshotStore"]

SOURCE_FIELD = "ScriptRunConfig.source_directory"
DEFAULT_MAX_BYTES = 300 * 1024 * 1024
_CHUNK = 1024 * 1024
_RACY_NS = 2_000_000_000
_ID_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_tmp_counter = itertools.count()

_Specs = tuple[tuple[str, GitIgnoreSpec], ...]
_Found = tuple[str, str, os.stat_result]  # (relative POSIX path, path to open, stat of the content)


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a snapshot.

    :param path: POSIX path relative to the source directory, e.g. ``"pkg/model.py"``.
    :param digest: sha256 hex digest of the content.
    :param size: size in bytes.
    :param executable: whether the owner-execute bit was set; restored by ``materialize``.
    """

    path: str
    digest: str
    size: int
    executable: bool


@dataclass(frozen=True)
class Snapshot:
    """An immutable snapshot: the sorted manifest entries and the id derived from them.

    :param id: sha256 hex digest of :meth:`manifest_json`.
    :param entries: the files, sorted by path.
    """

    id: str
    entries: tuple[ManifestEntry, ...]

    @classmethod
    def from_entries(cls, entries: Iterable[ManifestEntry]) -> Snapshot:
        """Sort ``entries`` and compute the snapshot id.

        :param entries: the files of the snapshot, in any order.
        """
        ordered = tuple(sorted(entries, key=lambda entry: entry.path))
        return cls(hashlib.sha256(_canonical(ordered).encode()).hexdigest(), ordered)

    @property
    def total_size(self) -> int:
        """Total size in bytes of the files in the snapshot."""
        return sum(entry.size for entry in self.entries)

    def manifest_json(self) -> str:
        """Return the canonical manifest ``{"version": 1, "entries": [[path, digest, size, exec]]}``."""
        return _canonical(self.entries)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict (the manifest plus ``id``); see :meth:`from_dict`."""
        return {"id": self.id, **json.loads(self.manifest_json())}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        """Rebuild a snapshot from :meth:`to_dict` output (or a manifest) and check its id.

        :param data: the dict; ``id`` is optional and, when present, must match the entries.
        :raises SnapshotError: when ``data`` is not a valid manifest or its id does not match.
        """
        try:
            snapshot = cls.from_entries(
                ManifestEntry(str(path), str(digest), int(size), bool(executable))
                for path, digest, size, executable in data["entries"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError("snapshot", f"not a snapshot manifest ({exc!r}).") from exc
        if data.get("id", snapshot.id) != snapshot.id:
            raise SnapshotError("snapshot", f"id {data['id']} does not match its entries ({snapshot.id}).")
        return snapshot


@dataclass(frozen=True)
class SnapshotResult:
    """What :meth:`SnapshotStore.take` did.

    :param snapshot: the snapshot taken.
    :param new_blobs: how many blobs this call wrote to the store.
    :param new_bytes: how many bytes those blobs hold.
    :param skipped_links: links to a directory containing them (loops), which were not followed.
    """

    snapshot: Snapshot
    new_blobs: int
    new_bytes: int
    skipped_links: tuple[str, ...]


class SnapshotStore:
    """A content-addressed store of source-directory snapshots.

    :param root: folder of the store; default ``state_dir() / "snapshots"``.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else state_dir() / "snapshots"
        self._blobs = str(self.root / "blobs")

    def blob_path(self, digest: str) -> Path:
        """Return where the blob of ``digest`` lives: ``root/blobs/ab/abcdef…``.

        :param digest: sha256 hex digest.
        """
        return Path(self._blob(digest))

    def has_blob(self, digest: str) -> bool:
        """Tell whether the store holds the blob of ``digest``.

        :param digest: sha256 hex digest.
        """
        return os.path.isfile(self._blob(digest))

    def take(self, source_dir: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> SnapshotResult:
        """Snapshot ``source_dir``, storing only blobs the store does not hold yet.

        :param source_dir: the directory to snapshot.
        :param max_bytes: largest total size of the included files.
        :raises SnapshotError: missing directory, too big, link leaving it, unreadable file.
        """
        source = Path(source_dir)
        if not source.is_dir():
            problem = "is not a directory" if source.exists() else "does not exist"
            raise SnapshotError(SOURCE_FIELD, f"{str(source)!r} {problem}.", "Pass the script's folder.")
        start_ns = time.time_ns()
        ignore_name = ".amlignore" if (source / ".amlignore").is_file() else ".gitignore"
        found, skipped = _walk(str(source), ignore_name)
        total = sum(st.st_size for _, _, st in found)
        if total > max_bytes:
            raise _too_big(source, found, total, max_bytes, ignore_name)

        real = os.path.realpath(source)
        cache_path = self.root / "statcache" / f"{hashlib.sha256(real.encode()).hexdigest()}.json"
        old_cache = _read_cache(cache_path, real)
        new_cache: dict[str, list[Any]] = {}
        racy_ns = start_ns - _RACY_NS
        digests: list[str] = []
        for rel, path, st in found:
            key = list(_stamp(st))
            cached = old_cache.get(rel)
            if cached is not None and cached[:4] == key and st.st_mtime_ns < racy_ns:
                digest: str = cached[4]
            else:
                digest = _hash_file(path, rel)
            if st.st_mtime_ns < racy_ns:
                new_cache[rel] = [*key, digest]
            digests.append(digest)
        snapshot = Snapshot.from_entries(
            ManifestEntry(rel, digest, st.st_size, bool(st.st_mode & stat.S_IXUSR))
            for (rel, _, st), digest in zip(found, digests, strict=True)
        )

        new_blobs = new_bytes = 0
        manifest = self.root / "manifests" / f"{snapshot.id}.json"
        if not manifest.is_file():
            for (rel, path, st), digest in zip(found, digests, strict=True):
                if not self.has_blob(digest):
                    self._write_blob(rel, path, st, digest)
                    new_blobs += 1
                    new_bytes += st.st_size
            _atomic_write(manifest, snapshot.manifest_json().encode())
        if new_cache != old_cache:
            payload = {"version": 1, "source": real, "entries": new_cache}
            _atomic_write(cache_path, json.dumps(payload, separators=(",", ":")).encode())
        return SnapshotResult(snapshot, new_blobs, new_bytes, tuple(skipped))

    def load(self, snapshot_id: str) -> Snapshot:
        """Read the manifest of ``snapshot_id``.

        :param snapshot_id: an id returned by :meth:`take`.
        :raises SnapshotError: when the store holds no such snapshot.
        """
        manifest = self.root / "manifests" / f"{snapshot_id}.json"
        if not _ID_PATTERN.match(snapshot_id) or not manifest.is_file():
            raise SnapshotError(
                "snapshot_id",
                f"no snapshot {snapshot_id!r} in the snapshot store {self.root}.",
                "Use an id returned by SnapshotStore.take() on this machine's state folder.",
            )
        snapshot = Snapshot.from_dict(json.loads(manifest.read_text(encoding="utf-8")))
        if snapshot.id != snapshot_id:
            raise SnapshotError("snapshot_id", f"manifest {manifest} is corrupt (id {snapshot.id}).")
        return snapshot

    def materialize(self, snapshot: Snapshot, dest: str | Path) -> None:
        """Write the files of ``snapshot`` into ``dest`` as independent copies (never hard links).

        :param snapshot: the snapshot to write out.
        :param dest: target folder; created when missing, must be empty when it exists.
        :raises FileExistsError: when ``dest`` exists and is not an empty directory.
        :raises SnapshotError: when a path is unsafe or a blob is missing from the store.
        """
        target_root = Path(dest)
        if target_root.exists() and (not target_root.is_dir() or any(target_root.iterdir())):
            raise FileExistsError(f"cannot materialize snapshot {snapshot.id}: {target_root} is not empty")
        target_root.mkdir(parents=True, exist_ok=True)
        made: set[str] = set()
        for entry in snapshot.entries:
            parts = entry.path.split("/")
            if any(part in ("", ".", "..") for part in parts):
                raise SnapshotError("snapshot", f"unsafe path {entry.path!r} in snapshot {snapshot.id}.")
            target = os.path.join(target_root, *parts)
            parent = os.path.dirname(target)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            try:
                shutil.copyfile(self._blob(entry.digest), target)
            except FileNotFoundError as exc:
                raise SnapshotError(
                    "snapshot",
                    f"the content of {entry.path} ({entry.digest}) is missing from the store {self.root}.",
                    "Take the snapshot again (submit the run again).",
                ) from exc
            if entry.executable:
                mode = os.stat(target).st_mode
                os.chmod(target, mode | ((mode & 0o444) >> 2))

    def restore(self, snapshot_id: str, dest: str | Path) -> Path:
        """Load ``snapshot_id`` and materialize it into ``dest``; return ``dest``.

        :param snapshot_id: an id returned by :meth:`take`.
        :param dest: target folder, missing or empty.
        """
        self.materialize(self.load(snapshot_id), dest)
        return Path(dest)

    def _blob(self, digest: str) -> str:
        return f"{self._blobs}/{digest[:2]}/{digest}"

    def _write_blob(self, rel: str, path: str, st: os.stat_result, digest: str) -> None:
        target = self._blob(digest)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{os.path.dirname(target)}/.{digest}.{os.getpid()}.{next(_tmp_counter)}.tmp"
        try:
            try:
                shutil.copyfile(path, tmp)
                after = os.stat(path)
            except OSError as exc:
                raise _unreadable(rel, exc) from exc
            if _stamp(after) != _stamp(st):
                raise SnapshotError(
                    SOURCE_FIELD,
                    f"{rel} changed while it was being snapshotted.",
                    "Submit again once nothing writes into the source directory.",
                )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def _canonical(entries: Iterable[ManifestEntry]) -> str:
    rows = [[e.path, e.digest, e.size, e.executable] for e in entries]
    return json.dumps({"entries": rows, "version": 1}, separators=(",", ":"), sort_keys=True)


def _walk(root: str, ignore_name: str) -> tuple[list[_Found], list[str]]:
    """Return the included files (sorted later) and the directory links skipped as loops."""
    root_real = os.path.realpath(root)
    root_stat = os.stat(root)
    found: list[_Found] = []
    skipped: list[str] = []
    stack: list[tuple[str, str, _Specs, frozenset[tuple[int, int]]]] = [
        (root, "", (), frozenset({(root_stat.st_dev, root_stat.st_ino)}))
    ]
    while stack:
        path, prefix, specs, ancestors = stack.pop()
        try:
            with os.scandir(path) as iterator:
                entries = list(iterator)
            for entry in entries:
                if entry.name == ignore_name and entry.is_file():
                    with open(entry.path, encoding="utf-8", errors="replace") as lines:
                        spec = GitIgnoreSpec.from_lines(lines)
                    if len(spec):
                        specs = (*specs, (prefix, spec))
        except OSError as exc:
            raise _unreadable(prefix or ".", exc) from exc
        for entry in entries:
            rel = prefix + entry.name
            if entry.name == ".git":
                continue
            if entry.is_symlink():
                try:
                    st: os.stat_result | None = os.stat(entry.path)
                except OSError:
                    st = None
                is_dir = st is not None and stat.S_ISDIR(st.st_mode)
                if specs and _ignored(specs, rel, is_dir):
                    continue
                target = os.path.realpath(entry.path)
                if st is None or not (target == root_real or target.startswith(root_real + os.sep)):
                    raise _link_error(rel, os.readlink(entry.path), target, dangling=st is None)
                if is_dir:
                    node = (st.st_dev, st.st_ino)
                    if node in ancestors:
                        skipped.append(rel)
                    else:
                        stack.append((entry.path, rel + "/", specs, ancestors | {node}))
                elif stat.S_ISREG(st.st_mode):
                    found.append((rel, entry.path, st))
            elif entry.is_dir(follow_symlinks=False):
                if not (specs and _ignored(specs, rel, True)):
                    st = entry.stat(follow_symlinks=False)
                    stack.append((entry.path, rel + "/", specs, ancestors | {(st.st_dev, st.st_ino)}))
            elif entry.is_file(follow_symlinks=False) and not (specs and _ignored(specs, rel, False)):
                found.append((rel, entry.path, entry.stat(follow_symlinks=False)))
    return found, skipped


def _ignored(specs: _Specs, rel: str, is_dir: bool) -> bool:
    """Apply the ignore files from the deepest up; the deepest one with a matching pattern wins."""
    for prefix, spec in reversed(specs):
        result = spec.check_file(rel[len(prefix) :] + ("/" if is_dir else ""))
        if result.include is not None:
            return result.include
    return False


def _hash_file(path: str, rel: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise _unreadable(rel, exc) from exc
    return digest.hexdigest()


def _read_cache(path: Path, source: str) -> dict[str, list[Any]]:
    try:
        payload = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(payload, dict) or payload.get("version") != 1 or payload.get("source") != source:
        return {}
    entries = payload.get("entries")
    return entries if isinstance(entries, dict) else {}


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _too_big(source: Path, found: list[_Found], total: int, limit: int, ignore_name: str) -> SnapshotError:
    largest = sorted(found, key=lambda item: item[2].st_size, reverse=True)[:5]
    folders: dict[str, int] = {}
    for rel, _, st in found:
        if "/" in rel:
            top = rel.split("/", 1)[0] + "/"
            folders[top] = folders.get(top, 0) + st.st_size
    top_folders = sorted(folders.items(), key=lambda item: item[1], reverse=True)[:5]
    files_text = ", ".join(f"{rel} ({_human(st.st_size)})" for rel, _, st in largest)
    folders_text = ", ".join(f"{name} ({_human(size)})" for name, size in top_folders) or "none"
    example = top_folders[0][0] if top_folders else largest[0][0]
    return SnapshotError(
        SOURCE_FIELD,
        f"{source} holds {len(found)} files totalling {_human(total)} (after applying {ignore_name}), "
        f"more than the snapshot limit of {_human(limit)}. Largest files: {files_text}. "
        f"Largest top-level folders: {folders_text}.",
        f"Add what the run does not need to {source / '.amlignore'} (or .gitignore when there is no "
        f".amlignore), e.g. a line `{example}`, or raise the limit with "
        "ScriptRunConfig(snapshot_size_limit_mb=...).",
    )


def _link_error(rel: str, points_to: str, resolved: str, *, dangling: bool) -> SnapshotError:
    where = "does not exist (dangling link)" if dangling else "is outside the source directory"
    return SnapshotError(
        SOURCE_FIELD,
        f"{rel} is a symbolic link to {points_to!r} (resolved: {resolved}), which {where}; "
        "links leaving the source directory are never followed.",
        f"add {rel} to .amlignore, or replace it by a copy of the file.",
    )


def _unreadable(rel: str, exc: OSError) -> SnapshotError:
    return SnapshotError(
        SOURCE_FIELD,
        f"cannot read {rel}: {exc.strerror or exc}.",
        f"make {rel} readable by this user, or add it to .amlignore.",
    )
