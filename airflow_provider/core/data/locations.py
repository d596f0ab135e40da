"""Where data lives: a URI parsed once, and the fsspec filesystem that reads or writes it.

Local paths and ``file://`` are read directly; ``sftp://`` goes through the provider's own SSH
connection (strict host keys: pinned, or ``known_hosts``; fsspec's own SFTP trusts any key);
``http(s)://``, ``s3://``, ``gs://`` and ``abfs://`` through fsspec and their packages, which are
optional: a missing one is a :class:`ConfigurationError` naming the package to install, raised
before any compute is used. ``runs:/`` and ``models:/`` are MLflow's own (fsspec would take them
for relative local paths) and are read with MLflow.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_provider.core.errors import ConfigurationError

__all__ = ["MLFLOW_SCHEMES", "DataLocation", "close_filesystem", "open_filesystem", "parse_location"]

MLFLOW_SCHEMES = ("runs", "models")
_PACKAGES = {  # scheme -> (import name, pip package, extra of this provider)
    "s3": ("s3fs", "s3fs", "s3"), "s3a": ("s3fs", "s3fs", "s3"),
    "gs": ("gcsfs", "gcsfs", "gcs"), "gcs": ("gcsfs", "gcsfs", "gcs"),
    "abfs": ("adlfs", "adlfs", "azure"), "abfss": ("adlfs", "adlfs", "azure"), "az": ("adlfs", "adlfs", "azure"),
    "http": ("aiohttp", "aiohttp", "http"), "https": ("aiohttp", "aiohttp", "http"),
}
_SUPPORTED = ("a local path", "file://", "sftp://", "http(s)://", "s3://", "gs://", "abfs://", "runs:/", "models:/")
READ_ONLY_SCHEMES = ("http", "https", "runs", "models")


@dataclass(frozen=True)
class DataLocation:
    """One parsed data URI.

    :param uri: the URI as given (a local path made absolute).
    :param scheme: ``file``, ``sftp``, ``http``, ``https``, ``s3``, ``gs``, ``abfs``, ``runs``, ``models``...
    :param path: what the filesystem is asked for (a local path, ``bucket/key``, the URL itself for HTTP).
    :param host: the host of ``sftp://`` (and ``http``) URIs.
    :param port: the port of an ``sftp://`` URI (22 when not given).
    :param username: the user of an ``sftp://`` URI, if given.
    """

    uri: str
    scheme: str
    path: str
    host: str = ""
    port: int | None = None
    username: str | None = None

    @property
    def is_local(self) -> bool:
        """A path of the machine that submits."""
        return self.scheme == "file"

    @property
    def is_mlflow(self) -> bool:
        """``runs:/`` or ``models:/``: read with MLflow."""
        return self.scheme in MLFLOW_SCHEMES

    @property
    def basename(self) -> str:
        """The last part of the path ("" for a folder URI ending in ``/``)."""
        return self.path.rstrip("/").rsplit("/", 1)[-1] if not self.path.endswith("/") else ""


def parse_location(uri: str, field: str) -> DataLocation:
    """Parse ``uri`` and check that this machine can read or write it.

    :param uri: the URI or local path.
    :param field: how messages name it (``ScriptRunConfig.inputs['train']``).
    :raises ConfigurationError: an unknown scheme, or one whose package is missing (naming it).
    """
    if uri.startswith(("runs:/", "models:/")):
        scheme = uri.split(":", 1)[0]
        rest = uri.split(":", 1)[1].lstrip("/")
        if not rest:
            raise ConfigurationError(f"{field}.uri", f"{uri!r} names no run or model.",
                                     "write runs:/<run id>/<artifact path> or models:/<name>@<alias>.")
        return DataLocation(uri, scheme, rest)
    split = urlsplit(uri)
    scheme = split.scheme.lower()
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return DataLocation(uri, "file", os.path.abspath(os.path.expanduser(uri)))
    if scheme == "file":
        if split.netloc not in ("", "localhost"):
            raise ConfigurationError(f"{field}.uri", f"{uri!r} names the host {split.netloc!r}; file:// URIs are "
                                     "paths of the machine that submits the run.",
                                     f"use sftp://{split.netloc}{split.path} to read it from that host.")
        return DataLocation(uri, "file", unquote(split.path))
    if scheme in ("sftp", "ssh"):
        if not split.hostname:
            raise ConfigurationError(f"{field}.uri", f"{uri!r} names no host.", "write sftp://user@host:port/path.")
        return DataLocation(uri, "sftp", unquote(split.path) or "/", split.hostname, split.port or 22,
                            unquote(split.username) if split.username else None)
    if scheme in ("http", "https"):
        _require_package(scheme, field)
        return DataLocation(uri, scheme, uri, split.hostname or "", split.port)
    from fsspec.registry import known_implementations

    if scheme not in known_implementations and scheme not in _PACKAGES:
        raise ConfigurationError(f"{field}.uri", f"the scheme {scheme!r} of {uri!r} is not one this provider reads.",
                                 f"use one of: {', '.join(_SUPPORTED)}.")
    _require_package(scheme, field)
    normalized = {"abfss": "abfs", "az": "abfs", "gcs": "gs", "s3a": "s3"}.get(scheme, scheme)
    return DataLocation(uri, normalized, f"{split.netloc}{unquote(split.path)}", split.netloc)


def _require_package(scheme: str, field: str) -> None:
    known = _PACKAGES.get(scheme)
    if known is None:
        return
    module, package, extra = known
    if importlib.util.find_spec(module) is None:
        raise ConfigurationError(f"{field}.uri", f"reading {scheme}:// needs the {package} package, which is not "
                                 "installed where the run is submitted.",
                                 f"pip install {package} (or this provider's [{extra}] extra) on the Airflow workers.")


def open_filesystem(location: DataLocation, options: dict[str, Any]) -> tuple[Any, str]:
    """An fsspec filesystem for ``location`` and the path to ask it for.

    :param location: a parsed URI (not ``runs:/`` / ``models:/``).
    :param options: fsspec storage options (credentials); for ``sftp`` the fields of
        :class:`~airflow_provider.core.targets.ssh_connection.SSHSettings`.
    """
    if location.scheme == "file":
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), location.path
    if location.scheme == "sftp":
        from airflow_provider.core.data.sftp import strict_sftp

        return strict_sftp(location, options), location.path
    import fsspec

    filesystem = fsspec.filesystem(location.scheme, skip_instance_cache=True, **options)
    return filesystem, location.path if location.scheme not in ("http", "https") else location.uri


def close_filesystem(filesystem: Any, location: DataLocation) -> None:
    """Close an SFTP filesystem (its SSH connection) once used; other filesystems keep their pools.

    :param filesystem: what :func:`open_filesystem` returned (or None when it failed).
    :param location: its location.
    """
    close = getattr(filesystem, "close", None)
    if filesystem is not None and location.scheme == "sftp" and callable(close):
        close()
