"""The submitting side's wheel store: every wheel a lock names, downloaded once, kept by content.

Wheels live at ``<cache>/wheels/<sha256[:2]>/<sha256>`` (content-addressed, like snapshot blobs, so a
target's transfer can send them as blobs and a host's blob store is its wheel cache). A download
streams into a temporary file, is checked against the lock's sha256 and size, and is renamed into
place: an interrupted or altered download is never used. Files named by local paths or ``file://``
URLs (wheels the user built, ``--find-links`` folders) are copied in and checked the same way.
Downloads run a few at a time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse, urlunparse

from airflow_provider.core.environments.locking import Lock, LockedPackage
from airflow_provider.core.errors import ConfigurationError, EnvironmentBuildError
from airflow_provider.core.paths import cache_dir

__all__ = ["WheelStore", "files_to_install"]

log = logging.getLogger(__name__)

_PARALLEL_DOWNLOADS = 4
_DOWNLOAD_TIMEOUT_SECONDS = 120.0
_CHUNK = 1 << 20


class WheelStore:
    """Wheels by sha256 on this machine.

    :param root: the store's folder; default ``<cache>/wheels``.
    :param max_bytes: after a fetch, the least recently used wheels beyond this size are removed
        (never those of the lock just fetched), each removal logged.
    """

    def __init__(self, root: Path | None = None, max_bytes: int = 20 << 30) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "wheels"
        self.max_bytes = max_bytes
        self.bytes_downloaded = 0
        """Bytes this object downloaded (a warm store downloads nothing)."""

    def path(self, sha256: str) -> Path:
        """Where the file with this sha256 is (or would be) kept.

        :param sha256: the file's sha256 hex digest.
        """
        return self.root / sha256[:2] / sha256

    def fetch(self, lock: Lock) -> dict[str, Path]:
        """Make every file of ``lock`` present (downloading the missing ones) and return them.

        :param lock: the lock whose files are needed.
        :return: the stored file of each package, by sha256.
        :raises EnvironmentBuildError: a download failed or arrived altered (a retry may help).
        """
        return self.fetch_packages(lock.packages, lock.requested)

    def fetch_packages(self, packages: tuple[LockedPackage, ...] | list[LockedPackage],
                       requested: tuple[str, ...] = ()) -> dict[str, Path]:
        """Make every file of ``packages`` present (wheels, conda packages) and return them.

        :param packages: the files, each with its location and sha256.
        :param requested: the requirement lines they were resolved from (index URLs with credentials).
        :return: the stored file of each package, by sha256.
        :raises EnvironmentBuildError: a download failed or arrived altered (a retry may help).
        """
        missing = [p for p in packages if not self.path(p.sha256).exists()]
        if missing:
            credentials = _index_credentials(requested)
            with ThreadPoolExecutor(max_workers=min(_PARALLEL_DOWNLOADS, len(missing)),
                                    thread_name_prefix="wheel-download") as pool:
                for _ in pool.map(lambda package: self._fetch_one(package, credentials), missing):
                    pass
        for package in packages:  # a hit counts as a use (least recently used eviction)
            with contextlib.suppress(OSError):
                os.utime(self.path(package.sha256))
        if missing:
            self.evict(keep={p.sha256 for p in packages})
        return {p.sha256: self.path(p.sha256) for p in packages}

    def evict(self, keep: set[str]) -> list[str]:
        """Remove the least recently used wheels beyond :attr:`max_bytes`, except ``keep``.

        :param keep: sha256 digests not to remove.
        :return: the removed files' digests.
        """
        files = []
        for path in self.root.glob("??/*"):
            with contextlib.suppress(OSError):
                info = path.stat()
                files.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in files)
        removed: list[str] = []
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if path.name in keep or path.name.startswith(".tmp-"):
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path.name)
            log.info("Evicted wheel %s (%d bytes) from %s: the store is over %d bytes", path.name, size, self.root,
                     self.max_bytes)
        return removed

    def _fetch_one(self, package: LockedPackage, credentials: dict[str, tuple[str, str]]) -> None:
        final = self.path(package.sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(descriptor, "wb") as out:
                try:
                    with _open(package, credentials) as source:
                        for chunk in iter(lambda: source.read(_CHUNK), b""):
                            digest.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
                except urllib.error.HTTPError as exc:
                    if exc.code not in (401, 403, 404):
                        raise EnvironmentBuildError(
                            f"fetching {package.filename} from {_without_credentials(package.location)} failed: "
                            f"{exc}; a retry may help") from exc
                    fix = ("the file is gone from the index (removed or yanked): call Environment.refresh_lock() "
                           "to resolve anew, then submit again." if exc.code == 404 else
                           "give the index's credentials in its URL (--index-url https://user:token@host/simple), "
                           "in ~/.netrc, or in PIP_INDEX_URL / UV_INDEX_URL; then submit again.")
                    raise ConfigurationError(
                        "environment.python.pip_packages",
                        f"the index refused {package.filename} ({exc.code} {exc.reason}) at "
                        f"{_without_credentials(package.location)}.", fix) from exc
                except (OSError, urllib.error.URLError, ValueError) as exc:
                    raise EnvironmentBuildError(
                        f"fetching {package.filename} ({package.name} {package.version}) from "
                        f"{_without_credentials(package.location)} failed: {exc}; a retry may help if the index "
                        "was unreachable"
                    ) from exc
            if digest.hexdigest() != package.sha256 or (package.size is not None and size != package.size):
                raise EnvironmentBuildError(
                    f"{package.filename} from {_without_credentials(package.location)} does not match its lock "
                    f"(sha256 {digest.hexdigest()}, {size} bytes; expected {package.sha256}"
                    f"{'' if package.size is None else f', {package.size} bytes'}): the file changed since the lock "
                    "was made, or the download was altered. For a wheel you rebuilt, submit again (its new content "
                    "makes a new lock); otherwise a retry may help"
                )
            os.chmod(temporary, 0o444)
            os.replace(temporary, final)
            if not package.local:
                self.bytes_downloaded += size
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class _Reader:
    """A readable file for a package: an HTTP response or a local file."""

    def __init__(self, package: LockedPackage, credentials: dict[str, tuple[str, str]]) -> None:
        if package.local:
            self.handle: Any = package.local_path().open("rb")
            return
        request = urllib.request.Request(package.location)
        login = credentials.get(urlparse(package.location).hostname or "") or _netrc(package.location)
        if login is not None:
            token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        self.handle = urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_SECONDS)

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.handle.close()

    def read(self, size: int) -> bytes:
        data: bytes = self.handle.read(size)
        return data


def _open(package: LockedPackage, credentials: dict[str, tuple[str, str]]) -> _Reader:
    return _Reader(package, credentials)


def _index_credentials(requested: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """user and password by host, from the requested index URLs and the index variables of pip and uv
    (uv leaves credentials out of the URLs it locks)."""
    urls = [word for line in requested for word in line.replace("=", " ").split() if "://" in word]
    urls += [os.environ.get(name, "") for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL",
                                                    "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_INDEX")]
    found: dict[str, tuple[str, str]] = {}
    for url in " ".join(urls).split():
        parsed = urlparse(url.split("=", 1)[-1])
        if parsed.username and parsed.hostname:
            found.setdefault(parsed.hostname, (unquote(parsed.username), unquote(parsed.password or "")))
    return found


def _netrc(url: str) -> tuple[str, str] | None:
    import netrc

    try:
        entry = netrc.netrc().authenticators(urlparse(url).hostname or "")
    except (OSError, netrc.NetrcParseError):
        return None
    return None if entry is None else (entry[0], entry[2] or "")


def _without_credentials(location: str) -> str:
    parsed = urlparse(location)
    if parsed.username or parsed.password:
        return urlunparse(parsed._replace(netloc=parsed.hostname or ""))
    return location



def files_to_install(lock: Lock, store: WheelStore) -> dict[str, Path]:
    """The files a target needs to install ``lock``, by file name, fetched into ``store``.

    ``install_from="submitter"``: every wheel (the target installs with ``--no-index``);
    ``"target"``: only the files of this machine (wheels the user built), the index gives the rest.

    :param lock: the environment's lock.
    :param store: where the files are fetched to.
    """
    needed = _only_files(lock) if lock.install_from == "submitter" else _only_local(lock)
    stored = store.fetch(needed)
    return {p.filename: stored[p.sha256] for p in needed.packages}


def _only_local(lock: Lock) -> Lock:
    import dataclasses

    return dataclasses.replace(lock, packages=tuple(p for p in lock.packages if p.local))


def _only_files(lock: Lock) -> Lock:
    import dataclasses

    return dataclasses.replace(lock, packages=tuple(p for p in lock.packages if p.direct is None))
