"""Inputs made ready for a run: checked, listed, and (``download`` mode) copied into the snapshot store.

A ``download`` input becomes manifest entries under ``work/.inputs/<name>/`` that travel with the
source snapshot through each target's content-addressed transfer, so a host that already holds a
file's content (from an earlier run, or the same file in the source folder) is not sent it again.

On this machine the copy is cached too: a local folder through the snapshot store's stat cache
(an unchanged folder is not read again), a remote one by each file's version as its filesystem
reports it (size with mtime, ETag or checksum), kept in ``<state>/data/index/``. A file is read
into a temporary file and becomes a blob only once it is whole, so an interrupted download is
restarted cleanly and never used half-written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider.core.data.bindings import Input, recordable_uri
from airflow_provider.core.data.credentials import resolve_options
from airflow_provider.core.data.locations import DataLocation, close_filesystem, open_filesystem, parse_location
from airflow_provider.core.errors import ConfigurationError, SnapshotError, TrainingRunError
from airflow_provider.core.paths import state_dir
from airflow_provider.core.snapshot import ManifestEntry, Snapshot, SnapshotStore

__all__ = ["INPUTS_DIR", "DataTransferError", "PlannedInput", "StagedInput", "plan_inputs", "stage_input"]

log = logging.getLogger(__name__)
INPUTS_DIR = ".inputs"
"""Where ``download`` inputs land, inside the job's ``work/`` folder."""
_VERSION_KEYS = ("size", "mtime", "ETag", "etag", "LastModified", "last_modified", "Last-Modified", "md5", "md5Hash",
                 "crc32c", "generation", "version_id", "content_settings", "checksum")


class DataTransferError(TrainingRunError):
    """Copying an input or output failed for now (a dropped connection, a server error): retryable."""


@dataclass
class PlannedInput:
    """An input checked before any compute is used.

    :param name: the input's name.
    :param binding: the input as given.
    :param location: its parsed URI.
    :param options: fsspec options (credentials; in memory only).
    :param files: for a remote ``download`` input: ``{relative path: info}`` as listed.
    :param single_file: the URI names one file, not a folder.
    :param total_size: the bytes listed (None when unknown, e.g. HTTP listings).
    """

    name: str
    binding: Input
    location: DataLocation
    options: dict[str, Any] = field(repr=False)
    files: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    single_file: bool = False
    total_size: int | None = None

    @property
    def field(self) -> str:
        """How messages name this input."""
        return f"inputs[{self.name!r}]"


@dataclass(frozen=True)
class StagedInput:
    """A ``download`` input copied into the snapshot store.

    :param name: the input's name.
    :param entries: manifest entries, under ``.inputs/<name>/``.
    :param relative_path: the path the script gets, relative to ``work/``.
    :param digest: a digest of the content (the manifest's sha256, 32 hex digits: MLflow keeps 36).
    :param size: total bytes.
    :param file_count: how many files.
    :param source: what was read (``models:/`` resolved to the version's artifacts).
    :param bytes_read: the bytes read from the source by this staging (the rest was cached here).
    """

    name: str
    entries: tuple[ManifestEntry, ...]
    relative_path: str
    digest: str
    size: int
    file_count: int
    source: str
    bytes_read: int = 0


def plan_inputs(inputs: dict[str, Input], owner: str = "ScriptRunConfig") -> list[PlannedInput]:
    """Parse every input, resolve its credentials, and check that a ``download`` source exists and
    fits its size limit, before any compute is used.

    :param inputs: the run's inputs by name.
    :param owner: how messages name the configuration.
    :raises ConfigurationError: naming the input (unknown scheme, missing package or source, too big).
    :raises DataTransferError: the source could not be reached (a retry may help).
    """
    planned = []
    for name, binding in inputs.items():
        where = f"{owner}.inputs[{name!r}]"
        location = parse_location(str(binding.uri), where)
        options = {} if location.is_mlflow else resolve_options(where, location.scheme, binding.connection,
                                                                 binding.storage_options)
        plan = PlannedInput(name, binding, location, options)
        if binding.mode == "download" and not location.is_mlflow:
            _list_source(plan, where)
        planned.append(plan)
    return planned


def _limit_bytes(binding: Input) -> int | None:
    limit = binding.max_size_mb
    if limit is None:
        configured = os.environ.get("TRAINING_RUNS_MAX_INPUT_MB")
        limit = float(configured) if configured else None
    return int(limit * 1024 * 1024) if limit is not None else None


def _list_source(plan: PlannedInput, where: str) -> None:
    location = plan.location
    shown = recordable_uri(location.uri)
    if location.is_local:
        path = Path(location.path)
        if not path.exists():
            raise ConfigurationError(f"{where}.uri", f"{shown!r} does not exist on this machine.",
                                     "check the path (a retry helps only once the data is there).")
        plan.single_file = path.is_file()
        plan.total_size = path.stat().st_size if plan.single_file else sum(
            os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names
            if os.path.isfile(os.path.join(folder, name)))
    else:
        filesystem: Any = None
        try:
            filesystem, path_text = open_filesystem(location, plan.options)
            folder_url = location.scheme in ("http", "https") and path_text.endswith("/")  # an index page
            info = {"type": "directory"} if folder_url else filesystem.info(path_text)
            if info.get("type") == "directory":
                listed = filesystem.find(path_text, detail=True)
                root = path_text.rstrip("/") + "/"
                plan.files = {_relative(name, root, filesystem): item for name, item in listed.items()
                              if item.get("type") != "directory"}
            else:
                plan.single_file = True
                plan.files = {location.basename or "data": info}
        except FileNotFoundError as exc:
            raise ConfigurationError(f"{where}.uri", f"{shown!r} does not exist.",
                                     "check the URI (a retry helps only once the data is there).") from exc
        except (ConfigurationError, TrainingRunError):
            raise
        except PermissionError as exc:
            raise ConfigurationError(f"{where}.connection", f"reading {shown!r} was refused: {exc}.",
                                     "check the credentials of the connection named on the input.") from exc
        except Exception as exc:
            raise DataTransferError(f"{where}: cannot list {shown!r} ({type(exc).__name__}: {exc}); "
                                    "a retry may help if the server was unreachable") from exc
        finally:
            close_filesystem(filesystem, location)
        sizes = [item.get("size") for item in plan.files.values()]
        plan.total_size = sum(int(size) for size in sizes if size is not None) if None not in sizes else None
    limit = _limit_bytes(plan.binding)
    if limit is not None and plan.total_size is not None and plan.total_size > limit:
        raise ConfigurationError(f"{where}.max_size_mb", f"{shown!r} holds {plan.total_size / 2**20:.1f} MB, "
                                 f"more than the limit of {limit / 2**20:.1f} MB.",
                                 "raise max_size_mb (or TRAINING_RUNS_MAX_INPUT_MB), or read it with mode='direct'.")


def _capped(read: Callable[[int], bytes], budget: list[int | None], where: str) -> Callable[[int], bytes]:
    """``read``, refusing the input once more than its size limit was read (sizes a server did not
    list: an HTTP index page, or an artifact store)."""

    def capped(count: int) -> bytes:
        data = read(count)
        if budget[0] is not None:
            budget[0] -= len(data)
            if budget[0] < 0:
                raise ConfigurationError(f"{where}.max_size_mb", "the input is larger than its size limit.",
                                         "raise max_size_mb (or TRAINING_RUNS_MAX_INPUT_MB), or read it with "
                                         "mode='direct'.")
        return data

    return capped


def _relative(name: str, root: str, filesystem: Any) -> str:
    stripped = filesystem._strip_protocol(root) if hasattr(filesystem, "_strip_protocol") else root
    for prefix in (root, stripped.rstrip("/") + "/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name.rsplit("/", 1)[-1]


def stage_input(plan: PlannedInput, store: SnapshotStore, tracking_uri: str) -> StagedInput:
    """Copy a ``download`` input into ``store``; only what changed since the last copy is read.

    :param plan: the input, as :func:`plan_inputs` checked it.
    :param store: the snapshot store the run's files travel from.
    :param tracking_uri: the MLflow tracking URI (for ``runs:/`` and ``models:/``).
    :raises ConfigurationError: the source is gone or holds something that cannot be copied.
    :raises DataTransferError: the copy failed for now (a retry may help).
    """
    where = f"ScriptRunConfig.{plan.field}"
    prefix = f"{INPUTS_DIR}/{plan.name}"
    source = plan.location.uri
    if plan.location.is_mlflow:
        entries, single, source = _stage_mlflow(plan, store, tracking_uri, where)
        read = sum(entry.size for entry in entries)
    elif plan.location.is_local:
        entries, read = _stage_local(plan, store, where)
        single = plan.single_file
    else:
        entries, read = _stage_remote(plan, store, where)
        single = plan.single_file
    placed = tuple(ManifestEntry(f"{prefix}/{entry.path}", entry.digest, entry.size, entry.executable)
                   for entry in entries)
    manifest = Snapshot.from_entries(entries)
    relative = f"{prefix}/{entries[0].path}" if single and len(entries) == 1 else prefix
    return StagedInput(plan.name, placed, relative, manifest.id[:32], manifest.total_size, len(entries), source, read)


def _stage_local(plan: PlannedInput, store: SnapshotStore, where: str) -> tuple[list[ManifestEntry], int]:
    path = Path(plan.location.path)
    try:
        if plan.single_file:
            with open(path, "rb") as handle:
                digest, size = store.add_stream(handle.read)
            return [ManifestEntry(path.name, digest, size, False)], size
        # read where they are, never copied here: the target's transfer reads them (see SnapshotStore.take)
        taken = store.take(path, max_bytes=2**62, ignore_files=False, copy_blobs=False)
        return list(taken.snapshot.entries), taken.new_bytes
    except SnapshotError as exc:
        raise ConfigurationError(where, exc.problem.replace(" source directory", " input folder"),
                                 "remove or replace the link, or make the file readable.") from exc
    except FileNotFoundError as exc:
        raise DataTransferError(f"{where}: {recordable_uri(plan.location.uri)!r} changed while it was copied; a "
                                "retry reads it again (once the data is complete)") from exc


class _RemoteIndex:
    """What was read from one remote folder before: ``{relative path: [version, digest, size]}``."""

    def __init__(self, uri: str) -> None:
        self.path = state_dir() / "data" / "index" / f"{hashlib.sha256(uri.encode()).hexdigest()}.json"
        try:
            self.entries: dict[str, list[Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.entries, sort_keys=True))
        os.replace(tmp, self.path)


def _version(info: dict[str, Any]) -> str | None:
    """A file's version as its filesystem tells it; None when nothing tells a change apart."""
    found = {key: str(info[key]) for key in _VERSION_KEYS if info.get(key) not in (None, "")}
    if set(found) <= {"size"}:
        return None  # a size alone cannot tell two versions apart: always read
    return json.dumps(found, sort_keys=True)


def _stage_remote(plan: PlannedInput, store: SnapshotStore, where: str) -> tuple[list[ManifestEntry], int]:
    index = _RemoteIndex(plan.location.uri)
    budget = [_limit_bytes(plan.binding)]  # what may still be read (None: no limit), for sizes not listed
    filesystem, path_text = open_filesystem(plan.location, plan.options)
    root = path_text.rstrip("/")
    entries: list[ManifestEntry] = []
    read_bytes = 0
    try:
        for relative, info in sorted(plan.files.items()):
            remote = path_text if plan.single_file else f"{root}/{relative}"
            version = _version(info)
            if version is None and plan.location.scheme in ("http", "https"):
                info = {**info, **filesystem.info(remote)}  # a HEAD: Last-Modified, ETag, Content-Length
                version = _version(info)
            known = index.entries.get(relative)
            if version is not None and known and known[0] == version and store.has_blob(known[1]):
                entries.append(ManifestEntry(relative, known[1], int(known[2]), False))
                continue
            size = info.get("size")
            with filesystem.open(remote, "rb") as handle:
                expected = int(size) if size is not None else None
                digest, got = store.add_stream(_capped(handle.read, budget, where), expected)
            read_bytes += got
            entries.append(ManifestEntry(relative, digest, got, False))
            if version is not None:
                index.entries[relative] = [version, digest, got]
    except FileNotFoundError as exc:
        raise DataTransferError(f"{where}: a file of {recordable_uri(plan.location.uri)!r} disappeared while it was "
                                f"read ({exc}); a retry reads it again (once the data is complete)") from exc
    except (ConfigurationError, TrainingRunError):
        raise
    except Exception as exc:
        raise DataTransferError(f"{where}: reading {recordable_uri(plan.location.uri)!r} failed "
                                f"({type(exc).__name__}: {exc}); what was read whole is kept, a retry reads the "
                                "rest") from exc
    finally:
        index.save()
        close_filesystem(filesystem, plan.location)
    log.info("Input %s: %d files, %d bytes read from %s (the rest unchanged since the last read)", plan.name,
             len(entries), read_bytes, recordable_uri(plan.location.uri))
    return entries, read_bytes


def _model_source(uri: str, tracking_uri: str) -> str:
    """Where the artifacts of ``models:/<name>@<alias>`` (or ``/<version>``, or a logged model id)
    are, asked of this run's registry: never through MLflow's process-wide registry URI, which
    ``mlflow.set_registry_uri`` also exports to every process started afterwards."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found = get_model_name_and_version(client, uri)  # type: ignore[no-untyped-call]
    if len(found) == 1:
        return str(client.get_logged_model(found[0]).artifact_location)
    return str(client.get_model_version_download_uri(found[0], found[1]))


def _stage_mlflow(plan: PlannedInput, store: SnapshotStore, tracking_uri: str,
                  where: str) -> tuple[list[ManifestEntry], bool, str]:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    uri = plan.location.uri
    source = uri
    try:
        if plan.location.scheme == "models":
            source = _model_source(uri, tracking_uri)
        with tempfile.TemporaryDirectory(prefix="input-") as scratch:
            downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=scratch,
                                                                  tracking_uri=tracking_uri))
            if downloaded.is_file():
                with open(downloaded, "rb") as handle:
                    digest, size = store.add_stream(handle.read)
                return [ManifestEntry(downloaded.name, digest, size, False)], True, source
            limit = _limit_bytes(plan.binding)
            total = sum(path.stat().st_size for path in downloaded.rglob("*") if path.is_file())
            if limit is not None and total > limit:
                raise ConfigurationError(f"{where}.max_size_mb", f"{uri!r} holds {total / 2**20:.1f} MB, more than "
                                         f"the limit of {limit / 2**20:.1f} MB.",
                                         "raise max_size_mb (or TRAINING_RUNS_MAX_INPUT_MB).")
            entries = list(store.take(downloaded, max_bytes=2**62, ignore_files=False).snapshot.entries)
            shutil.rmtree(downloaded, ignore_errors=True)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        missing = code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
        if missing or "not found" in str(exc).lower():
            raise ConfigurationError(f"{where}.uri", f"{uri!r} cannot be read from MLflow at {tracking_uri}: {exc}.",
                                     "check the run id and artifact path, or the model's name, version or "
                                     "alias.") from exc
        raise DataTransferError(f"{where}: reading {uri!r} from MLflow failed ({exc}); a retry may help") from exc
    except (ConfigurationError, TrainingRunError):
        raise
    except Exception as exc:  # the artifact store behind MLflow (a dropped connection, a full disk here)
        raise DataTransferError(f"{where}: reading {uri!r} from MLflow failed ({type(exc).__name__}: {exc}); a retry "
                                "may help") from exc
    if not entries:
        raise ConfigurationError(f"{where}.uri", f"{uri!r} holds no files.", "check the artifact path.")
    return entries, False, source
