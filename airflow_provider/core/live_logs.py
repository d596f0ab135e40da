"""``./logs`` while the run goes on: what its files gained, uploaded as parts, and put back together
on the reading side (TensorBoard follows a run live, ``training-runs tensorboard``).

MLflow artifacts cannot be appended to, so a watcher uploads, at each interval, only the bytes each
file of ``./logs`` gained since its last upload, as the artifact
``live/logs/<file>/<generation>-<start>-<end>.part`` (offsets zero-padded, so names sort in byte
order). A file that shrank (rewritten, not appended to) starts a new generation from byte 0. When the
run ends, ``logs/`` holds the whole files, as before; the parts stay beside them (they cost the
size of the logs once more).

:class:`LiveLogReader` rebuilds each file in a local folder from the newest generation's parts it
lacks, or from ``logs/`` once the run has ended, so a reader sends each byte once.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from airflow_provider.core.collect import uploadable_files

if TYPE_CHECKING:
    from airflow_provider.core.tracking import Tracker

__all__ = ["GROWN_LIMIT", "LIVE_LOGS", "Grown", "LiveLogReader", "LiveLogUploader", "Part", "grown_files", "part_name"]

LIVE_LOGS = "live/logs"
"""Where the parts of ``./logs`` go while the run goes on."""
_PART = re.compile(r"(\d{4})-(\d{16})-(\d{16})\.part\Z")


@dataclass(frozen=True)
class Part:
    """One uploaded part of a file: bytes ``start`` to ``end`` of generation ``generation``."""

    generation: int
    start: int
    end: int

    @classmethod
    def parse(cls, name: str) -> Part | None:
        """The part a file name describes, or None for another name.

        :param name: an artifact's base name.
        """
        match = _PART.match(name)
        return None if match is None else cls(int(match.group(1)), int(match.group(2)), int(match.group(3)))


def part_name(part: Part) -> str:
    """The artifact base name of ``part``.

    :param part: the part.
    """
    return f"{part.generation:04d}-{part.start:016d}-{part.end:016d}.part"


@dataclass(frozen=True)
class Grown:
    """What a file gained: ``data`` from byte ``start`` (0 for a new or rewritten file)."""

    start: int
    data: bytes


GROWN_LIMIT = 64 << 20
"""The most bytes of one file read in one interval (the rest comes at the next)."""


def grown_files(folder: Path, sent: Mapping[str, int], limit: int = GROWN_LIMIT) -> dict[str, Grown]:
    """What the files of a local ``folder`` gained past ``sent`` (a rewritten, smaller file: all of
    it from byte 0); files that gained nothing are left out.

    :param folder: the folder (a job's ``work/logs``, here or fetched from its target).
    :param sent: the bytes already sent of each file, by its path inside the folder.
    :param limit: the most bytes read of one file.
    """
    grown: dict[str, Grown] = {}
    files, _notes = uploadable_files(folder, "logs")  # noted once, when the run is finalized
    for path, key in files:
        size = path.stat().st_size
        start = sent.get(key, 0)
        if size < start:
            start = 0
        if size == start:
            continue
        with open(path, "rb") as stream:
            stream.seek(start)
            data = stream.read(min(size - start, limit))
        grown[key] = Grown(start, data)
    return grown


class LiveLogUploader:
    """Uploads what the files of a run's ``./logs`` gained, as parts.

    :param tracker: the run's tracker.
    :param run_id: the run.
    """

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self._sent: dict[str, tuple[int, int]] = {}  # file -> (generation, bytes sent)
        self.bytes_sent = 0

    @property
    def sent(self) -> dict[str, int]:
        """The bytes sent of each file (of its current generation), by its path inside ``./logs``."""
        return {key: end for key, (_generation, end) in self._sent.items()}

    def upload(self, grown: Mapping[str, Grown]) -> int:
        """Upload what each file gained (from :func:`grown_files` or a target's
        :meth:`~airflow_provider.core.targets.base.ComputeTarget.read_grown`); return the bytes sent.

        :param grown: by the file's path inside ``./logs``.
        """
        sent = 0
        with tempfile.TemporaryDirectory(prefix="live-logs-") as scratch:
            for key, piece in sorted(grown.items()):
                generation, end = self._sent.get(key, (0, 0))
                if piece.start != end:
                    if piece.start != 0:
                        continue  # not what follows what was sent: read again at the next interval
                    generation += 1  # rewritten: its parts start again
                part = Path(scratch) / part_name(Part(generation, piece.start, piece.start + len(piece.data)))
                part.write_bytes(piece.data)
                self.tracker.log_artifact(self.run_id, part, f"{LIVE_LOGS}/{key}")
                part.unlink()
                self._sent[key] = (generation, piece.start + len(piece.data))
                sent += len(piece.data)
        self.bytes_sent += sent
        return sent


class LiveLogReader:
    """Keeps a local copy of a run's ``./logs`` up to date, from its live parts or, once the run has
    ended, its whole files.

    :param tracker: the run's tracker.
    :param run_id: the run.
    :param destination: the local folder (e.g. one run's folder under TensorBoard's ``--logdir``).
    """

    def __init__(self, tracker: Tracker, run_id: str, destination: Path) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.destination = destination
        self._have: dict[str, tuple[int, int]] = {}  # file -> (generation, bytes written)

    def sync(self, ended: bool) -> int:
        """Bring the local copy up to date; return the bytes written.

        :param ended: the run has ended (its ``logs/`` holds the whole files).
        """
        self.destination.mkdir(parents=True, exist_ok=True)
        if ended:
            return self._sync_final()
        written = 0
        for key, parts in self._parts().items():
            written += self._apply(key, parts)
        return written

    # ------------------------------------------------------------------ internals
    def _parts(self) -> dict[str, list[Part]]:
        """Every file's parts, by the file's path inside ``./logs``."""
        found: dict[str, list[Part]] = {}
        for path, _size in self._files(LIVE_LOGS):
            part = Part.parse(path.name)
            if part is not None:
                found.setdefault(str(path.parent.relative_to(LIVE_LOGS)), []).append(part)
        return found

    def _files(self, folder: str) -> Iterator[tuple[PurePosixPath, int]]:
        """Every artifact file under ``folder`` (recursively), with its size."""
        pending = [folder]
        while pending:
            for entry in self.tracker.client.list_artifacts(self.run_id, pending.pop()):
                if entry.is_dir:
                    pending.append(entry.path)
                else:
                    yield PurePosixPath(entry.path), int(entry.file_size or 0)

    def _apply(self, key: str, parts: list[Part]) -> int:
        generation = max(part.generation for part in parts)
        have_generation, have = self._have.get(key, (generation, 0))
        local = self._local(key)
        if have_generation != generation:  # the file was rewritten: start again
            have = 0
            local.unlink(missing_ok=True)
        written = 0
        for part in sorted((p for p in parts if p.generation == generation), key=lambda p: p.start):
            if part.end <= have:
                continue
            if part.start != have:  # a gap: a part not listed yet (an upload in flight); next sync
                break
            data = self._download(f"{LIVE_LOGS}/{key}/{part_name(part)}")
            with open(local, "ab") as stream:
                stream.write(data)
            have = part.end
            written += len(data)
        self._have[key] = (generation, have)
        return written

    def _sync_final(self) -> int:
        written = 0
        for path, size in self._files("logs"):
            key = str(path.relative_to("logs"))
            local = self._local(key)
            if local.exists() and local.stat().st_size == size:
                continue
            data = self._download(str(path))
            local.write_bytes(data)
            self._have[key] = (self._have.get(key, (0, 0))[0], len(data))
            written += len(data)
        return written

    def _local(self, key: str) -> Path:
        local = self.destination.joinpath(*PurePosixPath(key).parts)
        if not local.resolve().is_relative_to(self.destination.resolve()):
            raise ValueError(f"artifact path {key!r} leaves {self.destination}")
        local.parent.mkdir(parents=True, exist_ok=True)
        return local

    def _download(self, artifact: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="live-logs-") as scratch:
            return Path(self.tracker.download_artifact(self.run_id, artifact, scratch)).read_bytes()
