"""Real conda environments on this machine, built with py-rattler (the ``conda`` extra).

py-rattler is the conda solver and installer of the prefix.dev project (the engine of pixi), used
as a library: no conda, mamba or micromamba executable is needed. A specification is

1. **solved** once per machine for ``linux-64`` (or ``linux-aarch64``) + ``noarch`` against its
   channels (names like ``conda-forge`` through ``https://conda.anaconda.org``, or local channels
   ``file:///path``); the solution (every package's name, version, build, URL and sha256) is
   kept under ``<state>/locks/`` like pip locks, so the same specification later installs the same
   packages until :func:`forget_conda_locks` / ``Environment.refresh_lock()``;
2. **fingerprinted** by that solution (and the ``pip:`` section's own lock), and **installed** once
   per fingerprint into ``<envs>/<fingerprint>/`` (conda packages carry their prefix, so the
   install goes to the final folder, under a file lock; a completion marker is written last and a
   folder without one is removed and built again);
3. completed with the ``pip:`` section, locked with uv for the environment's own Python and
   installed by uv into the conda environment (local wheels found through ``--find-links``).

The run's ``environment/lock.txt`` is conda's explicit format (``@EXPLICIT`` + URLs with their
sha256), the pip section's pins appended as comments.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from filelock import FileLock

from airflow_provider.core.environments.conda_spec import PYPI_NAMES, CondaDependencies
from airflow_provider.core.environments.locking import (
    InstallFrom,
    Lock,
    LockedPackage,
    TargetPlatform,
    find_uv,
    lock_requirements,
    publish_lock,
    retire_shared_locks,
    shared_lock_data,
)
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.environments.wheels import WheelStore, files_to_install
from airflow_provider.core.errors import ConfigurationError, EnvironmentBuildError
from airflow_provider.core.paths import cache_dir, state_dir
from airflow_provider.runtime import venv_builder

__all__ = ["ChannelUnreachableError", "CondaBuilder", "CondaMode", "conda_fingerprint", "conda_lock_text",
           "conda_packages", "conda_subdir", "conda_tool_environment", "forget_conda_locks", "pip_lock_for",
           "pip_section", "rattler_available", "solve", "translated_when_unreachable", "virtual_packages_for",
           "virtual_packages_here"]

logger = logging.getLogger(__name__)
CondaMode = Literal["auto", "rattler", "translate"]
"""How conda specifications are built: see :class:`~.local_cache.EnvironmentCache`."""
_LAYOUT = "1"
_FIELD = "environment.python.conda_dependencies"
T = TypeVar("T")


def rattler_available() -> bool:
    """Whether py-rattler (the ``conda`` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("rattler") is not None


def forget_conda_locks(spec: CondaDependencies | None = None) -> int:
    """Remove this machine's cached conda solutions (the next build solves anew).

    :param spec: only this specification's (for every platform and host); ``None`` removes every one.
    :return: how many were removed.
    """
    folder = state_dir() / "locks"
    pattern = f"conda-{_spec_key(spec)}-*.json" if spec is not None else "conda-*.json"
    removed = 0
    for path in folder.glob(pattern) if folder.is_dir() else []:
        path.unlink(missing_ok=True)
        removed += 1
    if spec is not None:
        removed += retire_shared_locks("conda", spec.fingerprint_payload())
    return removed


def pip_section(spec: CondaDependencies) -> list[str]:
    """The requirement lines of a specification's ``pip:`` section (options first), as locked.

    :param spec: the conda specification.
    """
    return sorted(set([*spec.pip_options, *spec.pip_packages]))


def conda_tool_environment() -> Environment:
    """The environment that installs conda packages on a host: py-rattler, the version used here."""
    try:
        version = importlib.metadata.version("py-rattler")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigurationError(
            _FIELD, "needs py-rattler on the submitting machine to build a real conda environment on a host.",
            "install the provider's conda extra (pip install 'airflow-provider-training-runs[conda]'), or set the "
            "connection extra conda to \"translate\" to build a virtual environment from PyPI instead.") from None
    tool = Environment("training-runs-conda-installer")
    tool.python.pip_packages = [f"py-rattler=={version}"]
    tool.python.install_from = "submitter"
    return tool


def virtual_packages_here() -> list[str]:
    """This machine's conda virtual packages as ``name=version=build`` (``__glibc=2.36=0``, ...):
    a solution depends on them."""
    try:
        import rattler

        generic = [package.into_generic() for package in rattler.VirtualPackage.detect()]
    except Exception:  # no py-rattler, or an unreadable system
        return []
    return sorted(f"{g.name.normalized}={g.version}={g.build_string}" for g in generic)


def virtual_packages_for(machine: str, libc: str | None, kernel: str | None, cuda: str | None = None) -> list[str]:
    """The conda virtual packages of another Linux machine, from what it reports about itself.

    :param machine: ``os.uname().machine`` (``x86_64``).
    :param libc: ``os.confstr("CS_GNU_LIBC_VERSION")`` (``glibc 2.36``); None on musl.
    :param kernel: ``os.uname().release`` (``6.1.0-18-amd64``).
    :param cuda: the CUDA version its driver supports (``12.4``), if it has an NVIDIA driver.
    :return: ``name=version=build`` lines, as :func:`virtual_packages_here` gives them.
    """
    found = ["__unix=0=0", f"__archspec=1={machine}"]
    release = ".".join(part for part in (kernel or "").split("-")[0].split(".")[:3] if part.isdigit())
    if release:
        found.append(f"__linux={release}=0")
    if libc and libc.startswith("glibc "):
        found.append(f"__glibc={libc.split()[1]}=0")
    if cuda:
        found.append(f"__cuda={cuda}=0")
    return sorted(found)


def _spec_key(spec: CondaDependencies) -> str:
    return hashlib.sha256(json.dumps({"layout": _LAYOUT, "spec": spec.fingerprint_payload()},
                                     sort_keys=True).encode()).hexdigest()[:32]


def _solution_path(spec: CondaDependencies, subdir: str, virtual: list[str]) -> Path:
    context = hashlib.sha256(json.dumps({"subdir": subdir, "virtual": virtual}).encode()).hexdigest()[:16]
    return state_dir() / "locks" / f"conda-{_spec_key(spec)}-{context}.json"


def solve(spec: CondaDependencies, subdir: str, virtual: list[str], timeout: float = 1800.0) -> list[dict[str, Any]]:
    """The solved packages of ``spec`` for a platform (cached per machine): each one's name, version,
    build, url, sha256, size and file name.

    :param spec: the conda specification.
    :param subdir: the target's conda platform (``linux-64``, ``linux-aarch64``).
    :param virtual: the target's virtual packages (``name=version=build``, see :func:`virtual_packages_here`).
    :param timeout: the longest a wait for another process solving the same specification may take.
    :raises ConfigurationError: the specification cannot be satisfied by its channels.
    :raises EnvironmentBuildError: a channel could not be read (a retry may help).
    """
    path = _solution_path(spec, subdir, virtual)
    path.parent.mkdir(parents=True, exist_ok=True)
    cached = _read_json(path)
    if cached is not None:
        return list(cached)
    with FileLock(str(path) + ".lock", timeout=2 * timeout):
        cached = _read_json(path)
        if cached is not None:
            return list(cached)
        shared = shared_lock_data(path.stem)  # another worker's, on the shared tracking server
        if shared is not None and isinstance(shared.get("solution"), list):
            solution = list(shared["solution"])
        else:
            solution = [_record_dict(record) for record in _solve(spec, spec.match_specs(), subdir, virtual)]
            publish_lock(path.stem, "conda", spec.fingerprint_payload(), {"solution": solution},
                         shareable=all(r["url"].startswith(("https://", "http://")) for r in solution),
                         summary=f"conda {subdir}: {', '.join(spec.match_specs())}")
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(json.dumps(solution, indent=1))
        os.replace(temporary, path)
    return solution


def _solve(spec: CondaDependencies, specs: list[str], subdir: Any, virtual: list[str]) -> list[Any]:
    import rattler

    channels = [rattler.Channel(_channel_source(channel)) for channel in spec.channels]
    gateway = rattler.Gateway(cache_dir=cache_dir() / "rattler" / "repodata")  # new: channels change
    packages = [_generic_virtual_package(line) for line in virtual]
    try:
        records: list[Any] = _run(rattler.solve(sources=channels, specs=specs, gateway=gateway,
                                                platforms=[subdir, "noarch"], virtual_packages=packages))
    except Exception as exc:
        name = type(exc).__name__
        if "Solver" in name:
            raise ConfigurationError(
                _FIELD, f"the conda specification cannot be satisfied from channels {spec.channels} for {subdir} "
                f"(virtual packages {', '.join(virtual) or 'none'}):\n{exc}",
                "fix the named package's version, or add the channel that has it.") from exc
        missing = re.search(r"could not find subdir '([^']+)' in channel '([^']+)'", str(exc))
        if missing is not None and ("404" in str(exc) or "No such file" in str(exc)):
            raise ConfigurationError(
                _FIELD, f"the channel {missing.group(2).rstrip('/')} does not exist: it has no {missing.group(1)} "
                "folder (the server answered 'not found').",
                "check the channel's name or URL (e.g. conda-forge, or https://host/path/channel).") from exc
        raise ChannelUnreachableError(
            f"reading the conda channels {spec.channels} failed ({name}: {exc}); a retry may help if a "
            "channel was unreachable. On a machine that reaches no conda channel, let the specification be "
            "translated to a virtual environment from PyPI (conda='auto' does when the channels cannot be "
            "read; LocalTarget(conda='translate'), connection extra conda='translate')", str(exc).splitlines()[0]
        ) from exc
    return records


class ChannelUnreachableError(EnvironmentBuildError):
    """The specification's conda channels could not be read from this machine (a retry may help).

    :param message: the whole message.
    :param reason: the first line of the channel's error.
    """

    def __init__(self, message: str, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


def translated_when_unreachable(setting: CondaMode, build_conda: Callable[[], PreparedEnvironment],
                                build_translated: Callable[[], PreparedEnvironment]) -> PreparedEnvironment:
    """A real conda environment; with ``conda="auto"``, when its channels cannot be read from here,
    the specification translated to a virtual environment from PyPI instead (the description says so).

    :param setting: the target's conda setting (only ``"auto"`` falls back).
    :param build_conda: builds the conda environment.
    :param build_translated: builds the translated virtual environment.
    """
    try:
        return build_conda()
    except ChannelUnreachableError as exc:
        if setting != "auto":
            raise
        logger.warning("The conda channels cannot be read from here (%s): the conda specification is translated to "
                       "a virtual environment from PyPI (conda='auto')", exc.reason)
        prepared = build_translated()
        return dataclasses.replace(prepared, description=f"{prepared.description}; its conda channels could not be "
                                   f"read from here ({exc.reason}), so it was translated (conda='auto')")


def _generic_virtual_package(line: str) -> Any:
    import rattler

    name, version, build = [*line.split("=", 2), "0", "0"][:3]
    return rattler.GenericVirtualPackage(rattler.PackageName(name), rattler.Version(version),
                                         rattler.BuildString(build))


def conda_fingerprint(solution: list[dict[str, Any]], pip_lock: Lock | None) -> str:
    """The fingerprint of a conda environment: its solved packages and its ``pip:`` section's lock.

    :param solution: from :func:`solve`.
    :param pip_lock: the ``pip:`` section's lock, if it has one.
    """
    return hashlib.sha256(json.dumps({
        "kind": "conda", "layout": _LAYOUT, "conda": [[r["name"], r["version"], r["build"], r["sha256"]]
                                                      for r in solution],
        "pip": pip_lock.identity() if pip_lock is not None else []}, sort_keys=True).encode()).hexdigest()


def pip_lock_for(spec: CondaDependencies, solution: list[dict[str, Any]], machine: str, libc: str | None,
                 install_from: InstallFrom, timeout: float) -> Lock | None:
    """The lock of a specification's ``pip:`` section for the solved environment's Python, keeping the
    conda packages' versions (None without a ``pip:`` section).

    :param spec: the conda specification.
    :param solution: its solution, from :func:`solve`.
    :param machine: the target's machine (``x86_64``).
    :param libc: the target's C library (``glibc 2.36``).
    :param install_from: where the pip packages are fetched (see :class:`~.locking.Lock`).
    :param timeout: the longest the resolution may take.
    """
    if not spec.pip_packages:
        return None
    python = next((r["version"] for r in solution if r["name"] == "python"), None)
    if python is None:
        raise ConfigurationError(_FIELD, "has a pip: section but its solution has no python package.",
                                 "add python (e.g. python=3.11) to the dependencies.")
    platform = TargetPlatform.from_facts(python, machine, libc)
    provided = {PYPI_NAMES.get(r["name"], r["name"]): r["version"] for r in solution if r["name"] != "python"}
    return lock_requirements(pip_section(spec), platform, install_from, timeout=timeout, provided=provided)


def conda_packages(solution: list[dict[str, Any]]) -> list[LockedPackage]:
    """The package files of a solution, to fetch into a :class:`~.wheels.WheelStore` (by sha256).

    :param solution: from :func:`solve`.
    """
    return [LockedPackage(r["name"], r["version"], r.get("file_name") or r["url"].rsplit("/", 1)[-1], r["sha256"],
                          _local_path(r["url"]), r.get("size")) for r in solution]


def _local_path(url: str) -> str:
    """A ``file://`` URL as a path (the wheel store opens paths and ``https://`` URLs)."""
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(url).path)
    return url


def conda_subdir(machine: str) -> Literal["linux-64", "linux-aarch64"]:
    """The conda platform of a Linux machine type.

    :param machine: ``os.uname().machine`` of the target.
    """
    return "linux-aarch64" if machine in ("aarch64", "arm64") else "linux-64"


class CondaBuilder:
    """Builds conda environments by fingerprint under ``root``.

    :param root: the environment cache folder (shared with virtual environments).
    :param build_timeout_seconds: the longest a solve, an install or the pip step may take.
    :param max_count: environments kept in ``root`` (least recently used evicted after a build).
    :param max_bytes: bytes the environments may take together.
    """

    def __init__(self, root: Path, build_timeout_seconds: float = 1800.0, max_count: int = 20,
                 max_bytes: int = 50 << 30) -> None:
        self.root = root
        self.build_timeout_seconds = build_timeout_seconds
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.subdir = conda_subdir(os.uname().machine)

    def prepare(self, env: Environment) -> PreparedEnvironment:
        """The conda environment of ``env``'s specification, built once.

        :param env: an environment of kind ``"conda"``.
        """
        spec = env.conda_specification()
        assert spec is not None
        solution = self.solution(spec)
        pip_lock = self._pip_lock(spec, solution)
        fingerprint = conda_fingerprint(solution, pip_lock)
        final = self.root / fingerprint
        lock_text = conda_lock_text(spec, solution, pip_lock, self.subdir)
        if venv_builder.is_built(str(final)):
            try:
                os.utime(final)  # a use: least recently used environments are evicted first
                return self._prepared(env, final, fingerprint, False, None, lock_text, len(solution))
            except FileNotFoundError:
                pass  # evicted a moment ago by another process: build it again
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f"{fingerprint}.lock"), timeout=2 * self.build_timeout_seconds):
            if venv_builder.is_built(str(final)):
                return self._prepared(env, final, fingerprint, False, None, lock_text, len(solution))
            log_path = self._build(spec, solution, pip_lock, final, lock_text, env)
        for line in venv_builder.evict_environments(str(self.root), self.max_count, self.max_bytes, (fingerprint,)):
            logger.info("Evicted environment %s from %s", line, self.root)
        return self._prepared(env, final, fingerprint, True, log_path, lock_text, len(solution))

    def solution(self, spec: CondaDependencies) -> list[dict[str, Any]]:
        """The solved packages of ``spec`` for this machine (see :func:`solve`).

        :param spec: the conda specification.
        """
        return solve(spec, self.subdir, virtual_packages_here(), self.build_timeout_seconds)

    # ----------------------------------------------------------------- building
    def _build(self, spec: CondaDependencies, solution: list[dict[str, Any]], pip_lock: Lock | None,
               final: Path, lock_text: str, env: Environment) -> Path:
        import rattler

        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{final.name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}.log"
        if final.exists():  # no marker: a build that never finished
            shutil.rmtree(final)
        started = time.monotonic()
        with log_path.open("wb") as log:
            log.write(lock_text.encode())
            pinned = [f"{r['name']} =={r['version']} {r['build']}" for r in solution]
            try:
                records = _solve(spec, pinned, self.subdir, virtual_packages_here())
                found = {r["name"]: r["sha256"] for r in map(_record_dict, records)}
                changed = [r["name"] for r in solution if found.get(r["name"]) != r["sha256"]]
                if changed:
                    raise EnvironmentBuildError(
                        f"the channels now serve other files for {changed} than this machine's lock names; call "
                        "Environment.refresh_lock() to solve the specification anew")
                log.write(f"$ rattler install {len(records)} packages into {final}\n".encode())
                log.flush()
                _run(rattler.install(records, target_prefix=str(final), cache_dir=cache_dir() / "rattler" / "pkgs",
                                     show_progress=False))
                log.write(f"[installed in {time.monotonic() - started:.1f} s]\n".encode())
                if pip_lock is not None:
                    self._install_pip(final, pip_lock, log)
            except BaseException as exc:
                log.write(f"ERROR: {type(exc).__name__}: {exc}\n".encode())
                shutil.rmtree(final, ignore_errors=True)
                if isinstance(exc, (ConfigurationError, EnvironmentBuildError)):
                    raise
                if isinstance(exc, Exception):
                    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
                    raise EnvironmentBuildError(f"building the conda environment {env.name!r} failed ({_FIELD})",
                                                tail, log_path) from exc
                raise
            marker = {"kind": "conda", "packages": len(solution), "tool": f"py-rattler {_rattler_version()}",
                      "size": venv_builder.folder_size(str(final))}
            (final / venv_builder.MARKER_NAME).write_text(json.dumps(marker, indent=2))
        return log_path

    def _pip_lock(self, spec: CondaDependencies, solution: list[dict[str, Any]]) -> Lock | None:
        return pip_lock_for(spec, solution, os.uname().machine, TargetPlatform.current().libc, "target",
                            self.build_timeout_seconds)

    def _install_pip(self, final: Path, lock: Lock, log: IO[bytes]) -> None:
        uv = find_uv()
        if uv is None:
            raise EnvironmentBuildError("uv, which installs the pip: section, is missing; reinstall the provider")
        files = files_to_install(lock, WheelStore())
        links = final.parent / f".tmp-{final.name}-wheels"
        links.mkdir(parents=True, exist_ok=True)
        try:
            for name, path in files.items():
                shutil.copyfile(path, links / name)
            requirements = links / "requirements.txt"
            requirements.write_text("\n".join(lock.requirement_lines()) + "\n")
            command = [uv, "pip", "install", "--python", str(final / "bin" / "python"), "--find-links", str(links),
                       "--no-deps", "-r", str(requirements)]  # the lock is whole; conda's packages stay
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=self.build_timeout_seconds,
                                  env={**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_SYSTEM_CERTS": "1"})
            log.write(f"[exit code {done.returncode}]\n".encode())
            if done.returncode != 0:
                raise EnvironmentBuildError(f"installing the pip: section failed (uv exited with {done.returncode})")
        finally:
            shutil.rmtree(links, ignore_errors=True)

    def _prepared(self, env: Environment, final: Path, fingerprint: str, built: bool, log_path: Path | None,
                  lock_text: str, count: int) -> PreparedEnvironment:
        how = "built now" if built else "reused from the cache"
        text = (f"conda environment {final} for {env.name!r} ({count} conda packages, solved and installed with "
                f"py-rattler), {how}")
        return PreparedEnvironment("conda", str(final / "bin" / "python"), fingerprint, built, log_path, text,
                                   lock=lock_text)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run py-rattler's coroutine to its end, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _channel_source(channel: str) -> str:
    if channel.startswith(("/", "~", "./", "../")):
        return Path(channel).expanduser().resolve().as_uri()
    return channel


def _record_dict(record: Any) -> dict[str, str]:
    sha256 = record.sha256
    return {"name": record.name.normalized, "version": str(record.version), "build": str(record.build),
            "url": str(record.url), "sha256": sha256.hex() if isinstance(sha256, bytes) else str(sha256 or ""),
            "file_name": str(record.file_name), "size": record.size, "subdir": str(record.subdir)}


def _read_json(path: Path) -> list[dict[str, Any]] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


def conda_lock_text(spec: CondaDependencies, solution: list[dict[str, Any]], pip_lock: Lock | None, subdir: str) -> str:
    lines = [
        "# The resolved lock of this conda environment (conda's explicit format).",
        f"# platform: {subdir}; channels: {', '.join(spec.channels)}; solved with py-rattler",
        f"# requested: {', '.join(spec.match_specs())}",
        "@EXPLICIT",
        *(f"{r['url']}#sha256:{r['sha256']}" for r in sorted(solution, key=lambda r: r["name"])),
    ]
    if pip_lock is not None:
        lines += ["# pip: (installed with uv after the conda packages)",
                  *(f"# pip: {line}" for line in pip_lock.requirement_lines())]
    return "\n".join(lines) + "\n"


def _rattler_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("py-rattler")
    except importlib.metadata.PackageNotFoundError:
        return "?"

