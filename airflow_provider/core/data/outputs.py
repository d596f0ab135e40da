"""Outputs: checked before the job starts, copied to their URI when it ends (whatever the ending).

An ``upload`` output is a folder the script writes, ``work/.outputs/<name>/``. When the run ends
(completed, failed or canceled) the folder is fetched from the target and copied to the output's
URI, and a marker ``.training_run.json`` (the run id, the digest and the files) is written beside
it. That marker is how a later run tells its own earlier copy (a retried finalize: allowed) from
another run's data (refused unless ``overwrite=True``, before the job starts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider.core.collect import uploadable_files
from airflow_provider.core.data.bindings import is_binding_name, recordable_uri
from airflow_provider.core.data.credentials import output_options
from airflow_provider.core.data.inputs import DataTransferError
from airflow_provider.core.data.locations import (
    READ_ONLY_SCHEMES,
    DataLocation,
    close_filesystem,
    open_filesystem,
    parse_location,
)
from airflow_provider.core.errors import ConfigurationError, TrainingRunError

__all__ = ["MARKER", "OUTPUTS_DIR", "OUTPUTS_TAG", "DeclaredOutput", "UploadedOutput", "check_output",
           "outputs_from_dict", "outputs_to_dict", "upload_output"]

log = logging.getLogger(__name__)
OUTPUTS_DIR = ".outputs"
"""Where ``upload`` outputs are written, inside the job's ``work/`` folder."""
MARKER = ".training_run.json"
OUTPUTS_TAG = "training.data.outputs"
"""The run tag that records its outputs (JSON, no credentials). A record only: the script can
rewrite its run's tags, so whoever copies the outputs is given them with the run's description
(:class:`~airflow_provider.run_reference.RunReference`, the finalizer's arguments)."""


@dataclass(frozen=True)
class DeclaredOutput:
    """An output as recorded on its run (no credentials).

    :param name: the output's name.
    :param uri: where it goes, placeholders filled in.
    :param mode: ``upload`` or ``direct``.
    :param connection: the connection with the credentials, if any.
    :param overwrite: replace another run's data.
    """

    name: str
    uri: str
    mode: str
    connection: str | None
    overwrite: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the run's tag."""
        return {"uri": self.uri, "mode": self.mode, "connection": self.connection, "overwrite": self.overwrite}

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> DeclaredOutput:
        """Rebuild from :meth:`to_dict` output."""
        return cls(name, str(data["uri"]), str(data.get("mode", "upload")), data.get("connection"),
                   bool(data.get("overwrite", False)))


@dataclass(frozen=True)
class UploadedOutput:
    """What an upload copied.

    :param name: the output's name.
    :param uri: where it went.
    :param digest: the sha256 of its manifest, 32 hex digits.
    :param files: ``[[relative path, sha256, size], ...]``.
    """

    name: str
    uri: str
    digest: str
    files: list[list[Any]]

    @property
    def size(self) -> int:
        """Total bytes copied."""
        return sum(int(item[2]) for item in self.files)


def outputs_to_dict(outputs: Iterable[DeclaredOutput]) -> dict[str, dict[str, Any]]:
    """Plain JSON data for a run's description: ``{name: DeclaredOutput.to_dict()}``.

    :param outputs: the run's declared outputs.
    """
    return {output.name: output.to_dict() for output in outputs}


def outputs_from_dict(data: Mapping[str, Any]) -> tuple[DeclaredOutput, ...]:
    """Rebuild :func:`outputs_to_dict` output, by name; an entry whose name is not an output's name
    (a folder name under the job's outputs: no ``..``, no ``/``) or that is not a mapping is left out.

    :param data: the serialised outputs.
    """
    return tuple(DeclaredOutput.from_dict(name, item) for name, item in sorted(data.items())
                 if isinstance(item, dict) and isinstance(name, str) and is_binding_name(name))


def _target(location: DataLocation, options: dict[str, Any]) -> tuple[Any, str]:
    filesystem, path = open_filesystem(location, options)
    return filesystem, path.rstrip("/") or "/"


def check_output(output: DeclaredOutput, run_id: str, options: dict[str, Any], field: str,
                 run_is_active: Callable[[str], bool] = lambda _: True) -> None:
    """Refuse an ``upload`` output whose URI holds another run's data (unless ``overwrite``), before
    the job starts, and claim it for this run (a marker), so that a run staged meanwhile is refused.
    A folder holding only the claim of a run that has ended (it failed before writing) is taken over.

    :param output: the output.
    :param run_id: the run that will write it.
    :param options: fsspec options for its URI.
    :param field: how messages name it.
    :param run_is_active: whether a run (the claim's) has not ended.
    :raises ConfigurationError: the URI is read-only or holds data of another run.
    :raises DataTransferError: the URI's storage could not be reached (a retry may help).
    """
    location = parse_location(output.uri, field)
    if location.scheme in READ_ONLY_SCHEMES:
        raise ConfigurationError(f"{field}.uri",
                                 f"{output.uri!r} cannot be written ({location.scheme} is read-only here).",
                                 "give a local path, sftp://, s3://, gs:// or abfs:// URI.")
    if output.mode != "upload":
        return
    filesystem: Any = None
    try:
        filesystem, path = _target(location, options)
        if filesystem.exists(path):
            if not filesystem.isdir(path):
                raise ConfigurationError(f"{field}.uri", f"{output.uri!r} is a file; an output is a folder.",
                                         "give a folder URI (ending in /).")
            owner = _marker_run(filesystem, path)
            listed = [name for name in filesystem.ls(path, detail=False) if posixpath.basename(name) != MARKER]
            abandoned = owner is not None and not listed and not run_is_active(owner)
            if (listed or owner is not None) and owner != run_id and not output.overwrite and not abandoned:
                raise _taken(output, owner, field)
        if not output.overwrite:  # claimed now: a run staged meanwhile (a sweep's next trial) is refused
            _write_marker(filesystem, path, {"run_id": run_id, "state": "claimed"})
    except (ConfigurationError, TrainingRunError):
        raise
    except Exception as exc:
        raise _transfer_error(exc, output, field, "check") from exc
    finally:
        close_filesystem(filesystem, location)


def _taken(output: DeclaredOutput, owner: str | None, field: str) -> ConfigurationError:
    who = f"run {owner}" if owner else "something other than a training run"
    return ConfigurationError(f"{field}.uri", f"{recordable_uri(output.uri)!r} already holds data written by {who}.",
                              "put {run_id} in the URI so each run writes its own folder, or set overwrite=True to "
                              "replace it.")


_REFUSED = ("AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "NoCredentials", "Unauthorized",
            "Forbidden", "AuthenticationFailed", "AuthorizationFailure")


def _transfer_error(exc: Exception, output: DeclaredOutput, field: str, what: str) -> TrainingRunError:
    """A refusal of the credentials is a ConfigurationError (retrying cannot help); anything else a
    retryable DataTransferError."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PermissionError) or any(word in text for word in _REFUSED):
        return ConfigurationError(f"{field}.connection", f"{recordable_uri(output.uri)!r} refused the credentials "
                                  f"({text[:300]}).", "check the credentials of the connection named on the output.")
    return DataTransferError(f"{field}: cannot {what} {recordable_uri(output.uri)!r} ({text[:300]}); a retry may help "
                             "if the storage was unreachable")


def _write_marker(filesystem: Any, path: str, content: dict[str, Any]) -> None:
    filesystem.makedirs(path, exist_ok=True)
    with filesystem.open(posixpath.join(path, MARKER), "wb") as handle:
        handle.write(json.dumps(content, indent=1).encode())


def _marker_run(filesystem: Any, path: str) -> str | None:
    try:
        with filesystem.open(posixpath.join(path, MARKER), "rb") as handle:
            data = json.loads(handle.read())
    except Exception:
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return str(run_id) if run_id else None


def upload_output(output: DeclaredOutput, folder: Path | None, run_id: str, notes: list[str]) -> UploadedOutput:
    """Copy what the script wrote in ``folder`` to the output's URI, with its marker.

    :param output: the output (``upload`` mode).
    :param folder: the local copy of ``work/.outputs/<name>`` (None when the script wrote nothing).
    :param run_id: the run.
    :param notes: where to add what was skipped (links leaving the folder, special files).
    :raises DataTransferError: the copy failed (finalizing is retried; nothing is lost meanwhile).
    """
    field = f"outputs[{output.name!r}]"
    location = parse_location(output.uri, field)
    options = output_options(field, location.scheme, run_id, output.name, output.connection)
    files: list[tuple[Path, str]] = []
    if folder is not None and folder.is_dir():
        files, skipped = uploadable_files(folder, f"{OUTPUTS_DIR}/{output.name}")
        notes.extend(skipped)
    manifest: list[list[Any]] = []
    filesystem: Any = None
    try:
        filesystem, path = _target(location, options)
        owner = _marker_run(filesystem, path) if filesystem.exists(path) else None
        if owner not in (None, run_id) and not output.overwrite:  # taken after this run was staged
            raise _taken(output, owner, field)
        if output.overwrite and filesystem.exists(path) and owner != run_id:
            filesystem.rm(path, recursive=True)
        filesystem.makedirs(path, exist_ok=True)
        made = {path}
        for local, relative in files:
            remote = posixpath.join(path, relative)
            parent = posixpath.dirname(remote)
            if parent not in made:
                filesystem.makedirs(parent, exist_ok=True)
                made.add(parent)
            filesystem.put_file(str(local), remote)
            manifest.append([relative, _sha256(local), local.stat().st_size])
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:32]
        _write_marker(filesystem, path, {"run_id": run_id, "digest": digest, "files": manifest})
    except (ConfigurationError, TrainingRunError):
        raise
    except Exception as exc:
        raise _transfer_error(exc, output, field, "copy to") from exc
    finally:
        close_filesystem(filesystem, location)
    log.info("Output %s: %d files copied to %s", output.name, len(manifest), output.uri)
    return UploadedOutput(output.name, output.uri, digest, manifest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
