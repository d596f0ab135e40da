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

Every file is written under a temporary name next to its final place, then moved with
``os.replace``, so readers never see a partial file (``.*.tmp`` leftovers of a crash are garbage).
Blobs are written before the manifest naming them: an existing manifest means all its blobs exist.
Empty directories are not part of a snapshot (as in git); sockets, FIFOs and devices are skipped,
and so is the store itself when it lies inside the source directory.

The stat cache lets an unchanged directory be snapshotted without reading any file. An entry is
trusted only when size, mtime, inode and ctime all match, and it is recorded only for a file whose
mtime is more than two seconds older than the snapshot, so a file written in the same clock tick
as a snapshot is hashed again next time ("racy git").
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathspec import GitIgnoreSpec

from airflow_provider.core.bulk_copy import copy_new_file, run_in_threads
from airflow_provider.core.errors import SnapshotError
from airflow_provider.core.paths import state_dir

__all__ = ["ManifestEntry", "Snapshot", "SnapshotResult", "SnapshotStore"]

SOURCE_FIELD = "ScriptRunConfig.source_directory"
DEFAULT_MAX_BYTES = 300 * 1024 * 1024
_CHUNK = 1024 * 1024
_RACY_NS = 2_000_000_000
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_tmp_counter = itertools.count()

# (folder prefix such as "pkg/", its ignore spec, a regex matching when any of its patterns does)
_Specs = tuple[tuple[str, GitIgnoreSpec, "re.Pattern[str]"], ...]
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
    """An immutable snapshot: the manifest entries sorted by path, and the id derived from them.

    :param id: sha256 hex digest of :meth:`manifest_json`.
    :param entries: the files, sorted by path.
    """

    id: str
    entries: tuple[ManifestEntry, ...]

    @classmethod
    def from_entries(cls, entries: Iterable[ManifestEntry]) -> Snapshot:
        """Sort ``entries`` by path and compute the snapshot id.

        :param entries: the files of the snapshot, in any order.
        """
        ordered = tuple(sorted(entries, key=lambda entry: entry.path))
        return cls(hashlib.sha256(_canonical(ordered).encode()).hexdigest(), ordered)

    @property
    def total_size(self) -> int:
        """Total size in bytes of the files."""
        return sum(entry.size for entry in self.entries)

    def manifest_json(self) -> str:
        """Return the canonical manifest ``{"entries": [[path, digest, size, exec], ...], "version": 1}``."""
        return _canonical(self.entries)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-compatible dict: the manifest plus ``id``; see :meth:`from_dict`."""
        return {"id": self.id, **json.loads(self.manifest_json())}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        """Rebuild a snapshot from :meth:`to_dict` output (or a bare manifest), checking its id.

        :param data: the dict; ``id`` is optional and, when present, must match the entries.
        :raises SnapshotError: when ``data`` is not a valid manifest or its id does not match.
        """
        try:
            entries = [ManifestEntry(str(p), str(d), int(s), bool(x)) for p, d, s, x in data["entries"]]
            bad = next((entry.digest for entry in entries if not _HEX64.match(entry.digest)), None)
            if bad is not None:
                raise ValueError(f"digest {bad!r} is not a sha256 hex digest")
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError("snapshot", f"not a snapshot manifest ({exc}).") from exc
        snapshot = cls.from_entries(entries)
        if data.get("id", snapshot.id) != snapshot.id:
            raise SnapshotError("snapshot", f"id {data['id']} does not match its entries ({snapshot.id}).")
        return snapshot


@dataclass(frozen=True)
class SnapshotResult:
    """What :meth:`SnapshotStore.take` did.

    :param snapshot: the snapshot taken.
    :param new_blobs: how many blobs this call wrote to the store.
    :param new_bytes: how many bytes those blobs hold.
    :param skipped_links: links to a directory that contains them (loops); not followed.
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
        self._made_dirs: set[str] = set()
        self._external: dict[str, str] = {}  # digest -> a file read where it is (take(copy_blobs=False))

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

    def take(self, source_dir: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
             ignore_files: bool = True, copy_blobs: bool = True) -> SnapshotResult:
        """Snapshot ``source_dir``, storing only the blobs the store does not hold yet.

        :param source_dir: the directory to snapshot.
        :param max_bytes: largest total size of the included files.
        :param ignore_files: apply ``.amlignore`` / ``.gitignore`` (False for data: every file counts).
        :param copy_blobs: False reads the files where they are instead of copying them into the store
            (a data input of gigabytes): this store object serves them as blobs (:meth:`blob_path`)
            for as long as it lives, and no manifest is written. The files must not change meanwhile.
        :raises SnapshotError: missing directory, too big, link leaving it, unreadable file.
        """
        source = Path(source_dir)
        if not source.is_dir():
            problem = "is not a directory" if source.exists() else "does not exist"
            raise SnapshotError(SOURCE_FIELD, f"{str(source)!r} {problem}.", "Pass the script's folder.")
        racy_ns = time.time_ns() - _RACY_NS
        ignore_name = ".amlignore" if (source / ".amlignore").is_file() else ".gitignore"
        if not ignore_files:
            ignore_name = "\0"  # no file has this name
        found, skipped = _walk(str(source), ignore_name, _node(self.root))
        total = sum(st.st_size for _, _, st in found)
        if total > max_bytes:
            raise _too_big(source, found, total, max_bytes, ignore_name)

        real = os.path.realpath(source)
        cache_path = self.root / "statcache" / f"{hashlib.sha256(real.encode()).hexdigest()}.json"
        old_cache = _read_cache(cache_path, real)
        found.sort()  # by relative path (unique), so entries are built in manifest order
        digests: list[str] = []
        unknown: list[int] = []  # files the stat cache cannot vouch for: hashed, on every core
        for index, (rel, _, st) in enumerate(found):
            cached = old_cache.get(rel)
            if cached is not None and cached[:4] == _stamp(st) and st.st_mtime_ns < racy_ns:
                digests.append(cached[4])
            else:
                digests.append("")
                unknown.append(index)
        hashed = run_in_threads(lambda index: _hash_file(*found[index][:2], found[index][2].st_size), unknown)
        for index, digest in zip(unknown, hashed, strict=True):
            digests[index] = digest
        new_cache = {rel: [*_stamp(st), digest] for (rel, _, st), digest in zip(found, digests, strict=True)
                     if st.st_mtime_ns < racy_ns}
        snapshot = Snapshot.from_entries(
            ManifestEntry(rel, digest, st.st_size, bool(st.st_mode & stat.S_IXUSR))
            for (rel, _, st), digest in zip(found, digests, strict=True)
        )

        new_blobs = new_bytes = 0
        manifest = self.root / "manifests" / f"{snapshot.id}.json"
        if not copy_blobs:
            for (_, path, _st), digest in zip(found, digests, strict=True):
                self._external.setdefault(digest, path)
            new_bytes = sum(found[index][2].st_size for index in unknown)  # what was read (hashed)
        elif not manifest.is_file():
            first_with: dict[str, int] = {}  # one file per distinct content
            for index, digest in enumerate(digests):
                first_with.setdefault(digest, index)
            for shard in sorted({digest[:2] for digest in first_with}):
                self._make_shard(shard)
            written = run_in_threads(lambda index: self._store_blob(*found[index], digests[index]),
                                     list(first_with.values()), group=lambda index: digests[index][:2])
            new_blobs = sum(written)
            new_bytes = sum(found[index][2].st_size for index, wrote in zip(first_with.values(), written, strict=True)
                            if wrote)
            _atomic_write(manifest, snapshot.manifest_json().encode())
        if new_cache != old_cache:
            payload = {"version": 1, "source": real, "entries": new_cache}
            _atomic_write(cache_path, json.dumps(payload, separators=(",", ":")).encode())
        return SnapshotResult(snapshot, new_blobs, new_bytes, tuple(skipped))

    def add_stream(self, read: Callable[[int], bytes], size: int | None = None) -> tuple[str, int]:
        """Store what ``read`` returns until it returns nothing, as one blob; return its digest and size.

        The content goes to a temporary file first and becomes the blob only once it is whole (and,
        when ``size`` is given, of that size), so an interrupted copy never leaves a partial blob.

        :param read: called with a chunk size, like a binary file's ``read``.
        :param size: the expected size; a different one is refused with :class:`OSError`.
        """
        digest, total = hashlib.sha256(), 0
        folder = f"{self._blobs}/incoming"
        os.makedirs(folder, exist_ok=True)
        tmp = f"{folder}/.{os.getpid()}.{next(_tmp_counter)}.tmp"
        try:
            with open(tmp, "wb") as handle:
                while chunk := read(_CHUNK):
                    digest.update(chunk)
                    handle.write(chunk)
                    total += len(chunk)
            if size is not None and total != size:
                raise OSError(f"received {total} bytes of {size}: the copy was cut short")
            name = digest.hexdigest()
            self._make_shard(name[:2])
            os.chmod(tmp, 0o600)
            os.replace(tmp, self._stored(name))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return name, total

    def load(self, snapshot_id: str) -> Snapshot:
        """Read the manifest of ``snapshot_id``.

        :param snapshot_id: an id returned by :meth:`take`.
        :raises SnapshotError: when the store holds no such snapshot.
        """
        manifest = self.root / "manifests" / f"{snapshot_id}.json"
        if not _HEX64.match(snapshot_id) or not manifest.is_file():
            raise SnapshotError(
                "snapshot_id",
                f"no snapshot {snapshot_id!r} in the snapshot store {self.root}.",
                "Use an id returned by SnapshotStore.take() with the same state folder.",
            )
        snapshot = Snapshot.from_dict(json.loads(manifest.read_text(encoding="utf-8")))
        if snapshot.id != snapshot_id:
            raise SnapshotError("snapshot_id", f"manifest {manifest} is corrupt (its id is {snapshot.id}).")
        return snapshot

    def materialize(self, snapshot: Snapshot, dest: str | Path) -> None:
        """Write the files of ``snapshot`` into ``dest`` as independent copies (never hard links).

        :param snapshot: the snapshot to write out.
        :param dest: target folder; created when missing, must be empty when it exists.
        :raises FileExistsError: when ``dest`` exists and is not an empty directory.
        :raises SnapshotError: when a path is unsafe or a blob is missing from the store.
        """
        root = Path(dest)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise FileExistsError(f"cannot materialize snapshot {snapshot.id}: {root} is not empty")
        root.mkdir(parents=True, exist_ok=True)
        targets: list[str] = []
        folders: set[str] = set()
        for entry in snapshot.entries:
            parts = entry.path.split("/")
            if any(part in ("", ".", "..") for part in parts):
                raise SnapshotError("snapshot", f"unsafe path {entry.path!r} in snapshot {snapshot.id}.")
            targets.append(os.path.join(root, *parts))
            folders.add(os.path.dirname(targets[-1]))
        for folder in sorted(folders):
            os.makedirs(folder, exist_ok=True)

        def copy(index: int) -> None:
            entry, blob = snapshot.entries[index], self._blob(snapshot.entries[index].digest)
            try:
                copy_new_file(blob, targets[index], executable=entry.executable)
            except FileNotFoundError as exc:
                if exc.filename != blob:
                    raise
                raise SnapshotError(
                    "snapshot",
                    f"the content of {entry.path} ({entry.digest}) is missing from the store {self.root}.",
                    "Take the snapshot again (submit the run again).",
                ) from exc

        run_in_threads(copy, range(len(targets)), group=lambda index: os.path.dirname(targets[index]))

    def restore(self, snapshot_id: str, dest: str | Path) -> Path:
        """Load ``snapshot_id`` and materialize it into ``dest``; return ``dest``.

        :param snapshot_id: an id returned by :meth:`take`.
        :param dest: target folder, missing or empty.
        """
        self.materialize(self.load(snapshot_id), dest)
        return Path(dest)

    def _stored(self, digest: str) -> str:
        """Where the store keeps the blob of ``digest`` (the only path ever written)."""
        return f"{self._blobs}/{digest[:2]}/{digest}"

    def _blob(self, digest: str) -> str:
        """Where to read the blob of ``digest``: the store's copy, else a file read where it is."""
        stored = self._stored(digest)
        external = self._external.get(digest)
        if external is not None and not os.path.isfile(stored):
            return external
        return stored

    def _make_shard(self, shard: str) -> None:
        if (folder := f"{self._blobs}/{shard}") not in self._made_dirs:
            os.makedirs(folder, exist_ok=True)
            self._made_dirs.add(folder)

    def _store_blob(self, rel: str, path: str, st: os.stat_result, digest: str) -> bool:
        """Copy ``path`` into the blob of ``digest`` unless the store holds it; tell whether it wrote.

        Its shard folder must exist (:meth:`_make_shard`). Refuses a file changed since ``st`` was taken.
        """
        final = self._stored(digest)
        if os.path.isfile(final):
            return False
        tmp = f"{self._blobs}/{digest[:2]}/.{digest}.{os.getpid()}.{next(_tmp_counter)}.tmp"
        try:
            try:
                # private to the state folder's owner, whatever the umask: it is source code
                copy_new_file(path, tmp, mode=0o600)
                after = os.stat(path)
            except OSError as exc:
                raise _unreadable(rel, exc) from exc
            if _stamp(after) != _stamp(st):
                raise _changed(rel)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return True


def _node(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _stamp(st: os.stat_result) -> list[int]:
    """What the stat cache compares: size, mtime, inode, ctime."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _canonical(entries: Iterable[ManifestEntry]) -> str:
    rows = [[entry.path, entry.digest, entry.size, entry.executable] for entry in entries]
    return json.dumps({"entries": rows, "version": 1}, separators=(",", ":"), sort_keys=True)


def _walk(root: str, ignore_name: str, store: tuple[int, int] | None) -> tuple[list[_Found], list[str]]:
    """Return the included files and the directory links skipped because they loop.

    The folder ``store`` (device, inode) is skipped: a store inside the source must not snapshot itself.
    """
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
            if any(entry.name == ignore_name and entry.is_file() for entry in entries):
                specs = (*specs, *_read_spec(os.path.join(path, ignore_name), prefix))
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
                if is_dir and (st.st_dev, st.st_ino) in ancestors:
                    skipped.append(rel)
                elif is_dir and (st.st_dev, st.st_ino) != store:
                    stack.append((entry.path, rel + "/", specs, ancestors | {(st.st_dev, st.st_ino)}))
                elif stat.S_ISREG(st.st_mode):
                    found.append((rel, entry.path, st))
            elif entry.is_dir(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                if (st.st_dev, st.st_ino) != store and not (specs and _ignored(specs, rel, True)):
                    stack.append((entry.path, rel + "/", specs, ancestors | {(st.st_dev, st.st_ino)}))
            elif entry.is_file(follow_symlinks=False) and not (specs and _ignored(specs, rel, False)):
                found.append((rel, entry.path, entry.stat(follow_symlinks=False)))
    return found, skipped


def _read_spec(path: str, prefix: str) -> _Specs:
    """Parse one ignore file; also build one regex telling fast whether any pattern matches."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    try:
        spec = GitIgnoreSpec.from_lines(lines)
    except ValueError:  # an invalid pattern (e.g. a trailing backslash) never matches, as in git
        spec = GitIgnoreSpec.from_lines([line for line in lines if _valid_pattern(line)])
    regexes = [p.regex.pattern for p in spec.patterns if p.include is not None and p.regex is not None]
    if not regexes:
        return ()
    try:  # named groups would clash once joined; matching does not need them
        quick = re.compile("|".join(re.sub(r"\(\?P<\w+>", "(?:", str(r)) for r in regexes))
    except re.error:
        quick = re.compile("")  # always "maybe": fall back to pathspec for every path
    return ((prefix, spec, quick),)


def _valid_pattern(line: str) -> bool:
    try:
        GitIgnoreSpec.from_lines([line])
    except ValueError:
        return False
    return True


def _ignored(specs: _Specs, rel: str, is_dir: bool) -> bool:
    """Apply the ignore files from the deepest up: the deepest one with a matching pattern decides."""
    for prefix, spec, quick in reversed(specs):
        path = rel[len(prefix) :]
        if is_dir:
            decision = _folder_decision(spec, path)
            if decision is not None:
                return decision
        elif quick.search(path) and (include := spec.check_file(path).include) is not None:
            return include
    return False


def _folder_decision(spec: GitIgnoreSpec, folder: str) -> bool | None:
    """Whether ``folder`` itself is excluded, as git decides it: the last pattern that applies to
    the folder itself wins (a pattern matching only what is inside it, like ``foo/**``, does not).

    pathspec's ``check_file("foo/")`` also counts patterns that match the folder's contents, and
    would prune folders git walks into (``*`` + ``!*/``, ``foo/**`` + ``!foo/bar``).
    """
    decision: bool | None = None
    with_slash = folder + "/"
    for pattern in spec.patterns:
        regex = pattern.regex
        if pattern.include is None or regex is None:
            continue
        if regex.pattern == ".":  # "*": matches every path
            applies = True
        else:
            whole = regex.match(folder)
            candidates = [regex.match(with_slash)] if regex.pattern.startswith("^") else regex.finditer(with_slash)
            applies = (whole is not None and whole.end() == len(folder)) or (
                "ps_d" in regex.groupindex
                and any(m is not None and m.group("ps_d") is not None and m.end("ps_d") == len(with_slash)
                        for m in candidates)
            )
        if applies:
            decision = bool(pattern.include)
    return decision


def _hash_file(rel: str, path: str, size: int) -> str:
    digest, read = hashlib.sha256(), 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                read += len(chunk)
    except OSError as exc:
        raise _unreadable(rel, exc) from exc
    if read != size:
        raise _changed(rel)
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
    folders: dict[str, int] = {}
    for rel, _, st in found:
        if "/" in rel:
            top = rel.split("/", 1)[0] + "/"
            folders[top] = folders.get(top, 0) + st.st_size
    files = sorted(((rel, st.st_size) for rel, _, st in found), key=lambda item: -item[1])[:5]
    tops = sorted(folders.items(), key=lambda item: -item[1])[:5]
    listing = [", ".join(f"{name} ({_human(size)})" for name, size in top) or "none" for top in (files, tops)]
    return SnapshotError(
        SOURCE_FIELD,
        f"{source} holds {len(found)} files totalling {_human(total)} (after applying {ignore_name}), "
        f"more than the snapshot limit of {_human(limit)}. Largest files: {listing[0]}. "
        f"Largest top-level folders: {listing[1]}.",
        f"add what the run does not need to {source / '.amlignore'} (or .gitignore when there is no "
        f".amlignore), e.g. a line `{(tops or files)[0][0]}`, or raise the limit with "
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


def _changed(rel: str) -> SnapshotError:
    return SnapshotError(
        SOURCE_FIELD,
        f"{rel} changed while it was being snapshotted.",
        f"add {rel} to .amlignore if the run does not need it, or submit again once nothing writes to it.",
    )
