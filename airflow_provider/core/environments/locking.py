"""Resolve an environment's requirements once, on the submitting side, into a lock of exact wheels.

Every managed virtual environment, on every target, is built from a lock: ``uv pip compile --format
pylock.toml`` run here for the *target's* platform (its Python version, machine and C library, learned
from the target), so a host that cannot reach a package index still gets the right wheels. The lock
names one wheel per package (name, version, file name, sha256, where to get it), and:

* is kept per machine under ``<state>/locks/``, keyed by the requirements (local files by content) and
  the target's platform: the same specification a month later installs the same packages, until
  :func:`forget_locks` (or ``Environment.refresh_lock()``) asks for a new resolution;
* is what the environment's fingerprint hashes (packages, versions and wheel hashes), so equal locks
  share one built environment and a refreshed lock with new versions builds a new one;
* is recorded on the run as ``environment/lock.txt`` (pip's requirements format with hashes).

A requirement with no wheel for the target's platform fails here, before anything is sent, naming
the package and the platform (``--only-binary :all:``): the target installs offline and cannot build
source distributions without an index. With ``install_from="target"`` the target installs the same
pins from its own index instead, and sources are allowed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from filelock import FileLock

from airflow_provider.core.environments.requirement_files import localize_requirements
from airflow_provider.core.errors import ConfigurationError, EnvironmentBuildError
from airflow_provider.core.paths import state_dir

log = logging.getLogger(__name__)

__all__ = ["Lock", "LockedPackage", "TargetPlatform", "absolute_paths", "find_uv", "forget_locks", "index_options",
           "lock_requirements", "publish_lock", "redact", "retire_shared_locks", "shared_lock_data"]

InstallFrom = Literal["target", "submitter"]
_LOCK_LAYOUT = "1"  # bump when what a cached lock means changes
_UV_MANYLINUX_MINORS = (40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 28, 17)  # the manylinux_2_N uv resolves for
_RESOLVE_TIMEOUT_SECONDS = 600.0
_FIELD = "environment.python.pip_packages"


@dataclass(frozen=True)
class TargetPlatform:
    """The interpreter and system a lock is made for.

    :param python_version: the interpreter's version, e.g. ``"3.11.2"``.
    :param machine: ``uname -m`` of the host, e.g. ``"x86_64"``.
    :param libc: the C library, e.g. ``"glibc 2.36"`` (``os.confstr("CS_GNU_LIBC_VERSION")``);
        ``None`` for another (musl) or an unknown one.
    """

    python_version: str
    machine: str
    libc: str | None
    system: str = "linux"
    implementation: str = "cpython"

    @classmethod
    def from_facts(cls, python_version: str, machine: str, libc: str | None, system: str = "linux",
                   implementation: str = "cpython") -> TargetPlatform:
        """Build from what a target reports (``sys.version`` may be given whole).

        :param python_version: ``sys.version`` or ``"3.11.2"``.
        :param machine: ``os.uname().machine``.
        :param libc: ``os.confstr("CS_GNU_LIBC_VERSION")`` or None.
        :param system: ``sys.platform`` (``"linux"``, ``"darwin"``).
        :param implementation: ``sys.implementation.name``.
        """
        return cls(python_version.split()[0], machine, libc or None, system or "linux",
                   implementation or "cpython")

    @classmethod
    def current(cls) -> TargetPlatform:
        """The platform of this process's interpreter and machine."""
        return cls.from_facts(sys.version, os.uname().machine, _glibc_here(), sys.platform, sys.implementation.name)

    def uv_platform(self) -> str:
        """The ``--python-platform`` value uv resolves wheels for on this platform.

        :raises ConfigurationError: a platform uv cannot resolve wheels for.
        """
        if not self.system.startswith("linux"):
            raise self._unsupported(f"the system {self.system!r} is not Linux")
        if self.implementation != "cpython":
            raise self._unsupported(f"the interpreter is {self.implementation}, not CPython")
        machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(self.machine, self.machine)
        if machine not in ("x86_64", "aarch64"):
            raise self._unsupported(f"the machine {self.machine!r} is not one uv resolves Linux wheels for")
        match = re.fullmatch(r"glibc (\d+)\.(\d+)", self.libc or "")
        if match is None:
            return f"{machine}-unknown-linux-musl"
        major, minor = int(match.group(1)), int(match.group(2))
        usable = [m for m in _UV_MANYLINUX_MINORS if major > 2 or m <= minor]
        if major < 2 or not usable:
            raise self._unsupported(f"glibc {major}.{minor} is older than manylinux_2_17")
        return f"{machine}-manylinux_2_{usable[0]}"

    def describe(self) -> str:
        """e.g. ``Python 3.11.2 on x86_64 (glibc 2.36)``."""
        return f"Python {self.python_version} on {self.machine} ({self.libc or 'musl or unknown libc'})"

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        return {"python_version": self.python_version, "machine": self.machine, "libc": self.libc,
                "system": self.system, "implementation": self.implementation}

    def _unsupported(self, why: str) -> ConfigurationError:
        return ConfigurationError(
            "environment.python.install_from",
            f"wheels cannot be resolved on the submitting side for {self.describe()}: {why}.",
            'set environment.python.install_from = "target" so the host installs from its own package index.',
        )


@dataclass(frozen=True)
class LockedPackage:
    """One package of a lock: the wheel to install (or, for ``install_from="target"``, a source).

    :param name: the project name.
    :param version: the exact version.
    :param filename: the wheel's (or source archive's) file name.
    :param sha256: the file's sha256 hex digest.
    :param location: an ``https://`` or ``file://`` URL, or a local path, to fetch it from.
    :param size: the file's size in bytes, when the index said it.
    :param wheel: False for a source distribution (only allowed with ``install_from="target"``).
    :param direct: for ``install_from="target"``, a requirement installed as the line itself (a
        folder, a git URL, a source archive of this machine): no file to fetch, no hash.
    """

    name: str
    version: str
    filename: str
    sha256: str
    location: str
    size: int | None = None
    wheel: bool = True
    direct: str | None = None

    @property
    def local(self) -> bool:
        """True when the file is on this machine (a wheel the user built, a ``--find-links`` folder)."""
        return self.direct is None and not self.location.startswith(("http://", "https://"))

    def local_path(self) -> Path:
        """The file's path on this machine (only for :attr:`local` packages)."""
        if self.location.startswith("file://"):
            return Path(unquote(urlparse(self.location).path))
        return Path(self.location)

    def requirement(self, hashed: bool = True) -> str:
        """The lock line: ``name==version --hash=sha256:...`` (a direct reference as it is).

        :param hashed: with the file's hash (pip and uv then check every file).
        """
        if self.direct is not None:
            return self.direct
        return f"{self.name}=={self.version}" + (f" --hash=sha256:{self.sha256}" if hashed else "")


@dataclass(frozen=True)
class Lock:
    """The resolved packages of an environment on one platform.

    :param platform: the platform the lock was resolved for.
    :param packages: the packages, sorted by name.
    :param requested: the requirement lines it was resolved from.
    :param created: when it was resolved (ISO 8601, UTC).
    :param install_from: where the wheels come from (see the module docstring).
    """

    platform: TargetPlatform
    packages: tuple[LockedPackage, ...]
    requested: tuple[str, ...]
    created: str
    install_from: InstallFrom = "submitter"

    def identity(self) -> list[list[str]]:
        """What the environment's fingerprint hashes: name, version and file hash of every package."""
        return [[p.name, p.version, p.sha256] for p in self.packages]

    def requirement_lines(self) -> list[str]:
        """The lines an installer is given: every package pinned with its hash (``--require-hashes``
        is implied); for ``install_from="target"`` the requested index options first (the index a
        package comes from), and no hashes when a direct reference (a folder, git) has none."""
        if self.install_from == "submitter":
            return [p.requirement() for p in self.packages]
        hashed = all(p.direct is None for p in self.packages)
        return [*index_options(self.requested), *(p.requirement(hashed) for p in self.packages)]

    def text(self) -> str:
        """The ``environment/lock.txt`` artifact: a pip requirements file with a header (index
        credentials replaced by ``***``)."""
        header = [
            "# The resolved lock of this environment (pip requirements format, hash-checked).",
            f"# platform: {self.platform.describe()}",
            f"# resolved: {self.created} with uv pip compile, install_from={self.install_from}",
            "# requested:",
            *(f"#   {redact(line)}" for line in self.requested),
        ]
        return "\n".join([*header, *map(redact, self.requirement_lines())]) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types (the lock cache's files)."""
        return {"layout": _LOCK_LAYOUT, "platform": self.platform.to_dict(), "requested": list(self.requested),
                "created": self.created, "install_from": self.install_from,
                "packages": [vars(p) for p in self.packages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lock:
        """Rebuild from :meth:`to_dict` output.

        :param data: the serialised lock.
        """
        return cls(TargetPlatform(**data["platform"]), tuple(LockedPackage(**p) for p in data["packages"]),
                   tuple(data["requested"]), str(data["created"]), data.get("install_from", "submitter"))


_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_INDEX_OPTIONS = ("--index-url", "-i", "--extra-index-url", "--trusted-host", "--pre", "--prefer-binary")


def redact(text: str) -> str:
    """``text`` with the credentials of URLs (``https://user:token@host``) replaced by ``***``.

    :param text: a requirement line, a log line.
    """
    return _CREDENTIALS.sub("***@", text)


def index_options(requested: tuple[str, ...] | list[str]) -> list[str]:
    """The requested lines that say where packages come from (``--index-url``, ``--extra-index-url``,
    ``--trusted-host``, remote ``--find-links``), for an installer that uses an index.

    :param requested: the requirement lines.
    """
    found = []
    for line in requested:
        option = line.split("=", 1)[0].split()[0] if line.startswith("-") else ""
        if option in _INDEX_OPTIONS or (option in ("-f", "--find-links") and "://" in line
                                        and "file://" not in line):
            found.append(line)
    return found


def find_uv() -> str | None:
    """The ``uv`` executable of the provider's installation (a dependency), else one on ``PATH``."""
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        import shutil

        return shutil.which("uv")


def lock_requirements(requirements: list[str], platform: TargetPlatform, install_from: InstallFrom = "submitter",
                      *, python: str | None = None, refresh: bool = False,
                      timeout: float = _RESOLVE_TIMEOUT_SECONDS, provided: dict[str, str] | None = None) -> Lock:
    """The lock of ``requirements`` for ``platform``: from this machine's lock cache, else resolved now.

    :param requirements: normalized requirement lines (see ``Environment.normalized_requirements``).
    :param platform: the platform the environment is built on.
    :param install_from: ``"submitter"``: wheels only (the target installs offline);
        ``"target"``: source distributions allowed (the target installs from its index).
    :param python: resolve for this local interpreter instead of ``platform``'s tags (the local target).
    :param refresh: resolve again even when a lock is cached (and replace it).
    :param timeout: the longest the resolution may take, in seconds (``build_timeout_seconds``).
    :param provided: packages the target already has (name: version, e.g. an image's CUDA build of
        torch): the resolution keeps their versions (as constraints, local version labels aside) and
        the lock leaves them out, so the installer uses them as they are.
    :raises ConfigurationError: the requirements cannot be satisfied, or a package has no wheel for
        the platform (never retryable: the task fails at once).
    :raises EnvironmentBuildError: the resolver could not run or reach the index (a retry may help).
    """
    requirements = absolute_paths(requirements)
    provided = dict(sorted((provided or {}).items()))
    key = _cache_key(requirements, platform, install_from, provided)
    folder = state_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    if not refresh and path.exists():
        cached = _read_cached(path)
        if cached is not None:
            return cached
    with FileLock(str(path) + ".lock", timeout=timeout * 2):
        if not refresh and path.exists():  # resolved by whoever held the lock
            cached = _read_cached(path)
            if cached is not None:
                return cached
        shared = None if refresh else _shared_lock(key)  # another worker's, on the shared tracking server
        lock = shared or _resolve(requirements, platform, install_from, python, timeout, provided)
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(json.dumps(lock.to_dict(), indent=1, sort_keys=True))
        os.replace(temporary, path)
        if shared is None:
            publish_lock(key, "pip", requirements, lock.to_dict(), shareable=not any(
                p.local or p.direct for p in lock.packages), summary=f"pip: {', '.join(requirements)}")
    return lock


def publish_lock(key: str, kind: str, requested: Any, data: dict[str, Any], shareable: bool, summary: str) -> None:
    """Publish a lock just resolved on the shared tracking server of what is being prepared (see
    :mod:`shared_locks`), unless it names files of this machine or holds credentials.

    :param key: the lock's cache key.
    :param kind: ``"pip"`` or ``"conda"``.
    :param requested: what was asked for (JSON), for refreshes.
    :param data: the lock's JSON.
    :param shareable: False when the lock names files of this machine.
    :param summary: a line naming it in the MLflow UI.
    """
    from airflow_provider.core.environments import shared_locks

    store = shared_locks.current()
    text = json.dumps(data)
    if store is None or not shareable or redact(text) != text:
        return
    try:
        store.put(key, shared_locks.requested_id(kind, requested), kind, data, redact(summary))
    except Exception as exc:  # the lock still holds on this machine; other workers resolve their own
        log.warning("The lock %s could not be published on %s: %s", key, store.tracking_uri, exc)


def shared_lock_data(key: str) -> dict[str, Any] | None:
    """The lock of ``key`` another machine published on the shared tracking server, if any.

    :param key: the lock's cache key.
    """
    from airflow_provider.core.environments import shared_locks

    store = shared_locks.current()
    if store is None:
        return None
    try:
        return store.get(key)
    except Exception as exc:  # resolve here instead
        log.warning("The shared locks on %s cannot be read (%s); resolving on this machine", store.tracking_uri, exc)
        return None


def _shared_lock(key: str) -> Lock | None:
    data = shared_lock_data(key)
    try:
        return Lock.from_dict(data) if data is not None and data.get("layout") == _LOCK_LAYOUT else None
    except (KeyError, TypeError, ValueError):
        return None


def absolute_paths(requirements: list[str]) -> list[str]:
    """The requirement lines with relative local paths (``./dist/pkg.whl``, ``-f ./wheels``,
    ``name @ file:./x``) made absolute from the current folder, as the user meant them.

    :param requirements: requirement lines.
    """
    lines = []
    for line in requirements:
        words = line.split()
        lines.append(" ".join(os.path.abspath(w) if w.startswith(("./", "../")) else w for w in words))
    return lines


def forget_locks(requirements: list[str] | None = None) -> int:
    """Remove cached locks, so the next build resolves anew (newer releases, a fixed index).

    :param requirements: only the locks of these requirement lines; ``None`` removes every lock.
    :return: how many locks were removed.
    """
    folder = state_dir() / "locks"
    removed = 0
    wanted = None if requirements is None else absolute_paths(requirements)
    for path in folder.glob("*.json") if folder.is_dir() else []:
        if path.name.startswith("conda-"):
            continue
        cached = _read_cached(path)
        if wanted is None or (cached is not None and list(cached.requested) == wanted):
            path.unlink(missing_ok=True)
            removed += 1
    if wanted is not None:
        removed += retire_shared_locks("pip", wanted)
    return removed


def retire_shared_locks(kind: str, requested: Any) -> int:
    """Delete the locks of ``requested`` published on the shared tracking server (see :mod:`shared_locks`):
    the one of what is being prepared, else the one ``MLFLOW_TRACKING_URI`` names.

    :param kind: ``"pip"`` or ``"conda"``.
    :param requested: what was asked for, as it was published.
    :return: how many were deleted.
    """
    from airflow_provider.core.environments import shared_locks

    store = shared_locks.current() or shared_locks.shared_locks_for(None)
    return 0 if store is None else store.retire(shared_locks.requested_id(kind, requested))


# ---------------------------------------------------------------------- internals
def _cache_key(requirements: list[str], platform: TargetPlatform, install_from: InstallFrom,
               provided: dict[str, str]) -> str:
    by_content = localize_requirements(requirements, "<files>")[0]  # a rebuilt local wheel is a new key
    payload = {"layout": _LOCK_LAYOUT, "requirements": by_content, "platform": platform.to_dict(),
               "install_from": install_from, **({"provided": provided} if provided else {})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_cached(path: Path) -> Lock | None:
    try:
        data = json.loads(path.read_text())
        return Lock.from_dict(data) if data.get("layout") == _LOCK_LAYOUT else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or from another layout: resolve again


def _resolve(requirements: list[str], platform: TargetPlatform, install_from: InstallFrom,
             python: str | None, timeout: float, provided: dict[str, str] | None = None) -> Lock:
    """Resolve; with ``provided``, first as if the target had nothing, then again keeping the
    provided packages the first lock involves (if that cannot be satisfied, the first lock stands:
    the environment then installs its own versions over the target's)."""
    first = _resolve_once(requirements, platform, install_from, python, timeout, {})
    names = {_canonical(p.name) for p in first.packages}
    kept = {name: version for name, version in (provided or {}).items() if _canonical(name) in names}
    if not kept:
        return first
    try:
        return _resolve_once(requirements, platform, install_from, python, timeout, kept)
    except ConfigurationError:
        return first


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _resolve_once(requirements: list[str], platform: TargetPlatform, install_from: InstallFrom,
                  python: str | None, timeout: float, provided: dict[str, str]) -> Lock:
    uv = find_uv()
    if uv is None:
        raise ConfigurationError("environment.python.pip_packages", "uv, which resolves environments, is missing.",
                                 "reinstall the provider (uv is one of its dependencies).")
    with tempfile.TemporaryDirectory(prefix="training-runs-lock-") as scratch:
        source = Path(scratch) / "requirements.in"
        source.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        output = Path(scratch) / "pylock.toml"
        command = [uv, "pip", "compile", str(source), "--format", "pylock.toml", "-o", str(output), "--quiet",
                   "--no-header", "--python-version", platform.python_version]
        command += ["--python", python] if python else ["--python-platform", platform.uv_platform()]
        if install_from == "submitter":
            command += ["--only-binary", ":all:"]
        if provided:
            constraints = Path(scratch) / "provided.txt"
            constraints.write_text("".join(f"{name}=={version.split('+')[0]}\n" for name, version in provided.items()))
            command += ["--constraint", str(constraints)]
            for name in provided:
                command += ["--no-emit-package", name]
        environment = {"UV_SYSTEM_CERTS": "1", "UV_NATIVE_TLS": "1", **os.environ, "UV_PYTHON_DOWNLOADS": "never",
                       "NO_COLOR": "1"}  # the machine's certificate store, as pip uses it (truststore)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  env=environment, cwd=scratch, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise EnvironmentBuildError(
                f"resolving the environment's requirements for {platform.describe()} did not finish (is the "
                "package index reachable from this machine? a requirement on a dead network share?); a retry may "
                "help", f"$ {' '.join(command)}\ntimed out after {timeout:g} s (build_timeout_seconds)",
            ) from exc
        if done.returncode != 0:
            raise _resolution_error(done.stderr.strip() or done.stdout.strip(), platform, install_from)
        data = _parse_toml(output.read_text(encoding="utf-8"))
    from airflow_provider.core.tracking import now_iso

    packages = tuple(sorted((_locked(entry, platform, install_from) for entry in data.get("packages", [])),
                            key=lambda p: p.name))
    return Lock(platform, packages, tuple(requirements), now_iso(), install_from)


def _parse_toml(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _locked(entry: dict[str, Any], platform: TargetPlatform, install_from: InstallFrom) -> LockedPackage:
    name, version = str(entry["name"]), str(entry.get("version", ""))
    wheels = entry.get("wheels") or []
    if wheels:
        return _package(name, version, wheels[0], True)
    if "archive" in entry and str(entry["archive"].get("path", entry["archive"].get("url", ""))).endswith(".whl"):
        return _package(name, version, entry["archive"], True)
    if install_from == "target":
        if "sdist" in entry:
            return _package(name, version, entry["sdist"], False)
        direct = _direct_reference(name, entry)
        if direct is not None:
            return LockedPackage(name, version, name, "", direct, None, False, direct)
    source = next((k for k in ("sdist", "archive", "directory", "vcs") if k in entry), "no file")
    if install_from == "target":
        raise ConfigurationError(_FIELD, f"{name}: uv's lock names no file to install it from ({source}).",
                                 "name a released version, a wheel or a source archive of it.")
    raise ConfigurationError(
        _FIELD,
        f"{name} {version or '(unversioned)'} has no wheel for {platform.describe()} (only a {source}), and the "
        "target installs without a package index.",
        f"pin a version of {name} that publishes a wheel for this platform, add a wheel you built "
        "(a path to the .whl file) to the requirements, or set environment.python.install_from = \"target\" "
        "when the target can reach a package index and build it.",
    )


def _direct_reference(name: str, entry: dict[str, Any]) -> str | None:
    """The line that installs a folder, a git checkout or a local source archive as it is."""
    if "vcs" in entry:
        vcs = entry["vcs"]
        commit = vcs.get("commit-id")
        return f"{name} @ {vcs.get('type', 'git')}+{vcs['url']}" + (f"@{commit}" if commit else "")
    for key in ("directory", "archive"):
        if key in entry and entry[key].get("path"):
            path = os.path.abspath(str(entry[key]["path"]))
            return f"{name} @ {Path(path).as_uri()}"
        if key in entry and entry[key].get("url"):
            return f"{name} @ {entry[key]['url']}"
    return None


def _package(name: str, version: str, file: dict[str, Any], wheel: bool) -> LockedPackage:
    location = str(file.get("url") or file.get("path"))
    if "url" not in file and not os.path.isabs(location):
        location = os.path.abspath(location)
    filename = str(file.get("name") or os.path.basename(unquote(urlparse(location).path)))
    sha256 = str((file.get("hashes") or {}).get("sha256") or "")
    if not sha256:
        sha256 = _hash_file(location)
    size = file.get("size")
    return LockedPackage(name, version, filename, sha256, location, int(size) if size is not None else None, wheel)


def _hash_file(location: str) -> str:
    path = Path(unquote(urlparse(location).path)) if location.startswith("file://") else Path(location)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _resolution_error(output: str, platform: TargetPlatform, install_from: InstallFrom) -> Exception:
    lines = [line for line in output.splitlines() if line.strip()]
    text = "\n".join(lines[-25:])
    unsatisfiable = any(marker in output for marker in (
        "No solution found", "not found in the package registry", "Failed to parse", "no wheels",
        "Distribution not found", "Couldn't parse", "is not a valid", "Failed to read `", "Failed to read from file",
    ))
    if unsatisfiable:
        extra = (" (only wheels are allowed: the target installs without a package index; set "
                 "environment.python.install_from = \"target\" if it can reach one)"
                 if install_from == "submitter" and ("wheel" in output or "no matching" in output.lower()) else "")
        return ConfigurationError(
            _FIELD, f"the requirements cannot be resolved for {platform.describe()}{extra}:\n{text}",
            "fix the named requirement (its name, version range or markers), then submit again.",
        )
    return EnvironmentBuildError(
        f"resolving the environment's requirements for {platform.describe()} failed; a retry may help if the "
        f"package index was unreachable:\n{text}"
    )


def _glibc_here() -> str | None:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return None
