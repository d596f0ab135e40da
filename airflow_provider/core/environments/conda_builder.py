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
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Coroutine
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from filelock import FileLock

from airflow_provider.core.environments.conda_spec import PYPI_NAMES, CondaDependencies
from airflow_provider.core.environments.locking import Lock, TargetPlatform, find_uv, lock_requirements
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.environments.wheels import WheelStore, files_to_install
from airflow_provider.core.errors import ConfigurationError, EnvironmentBuildError
from airflow_provider.core.paths import cache_dir, state_dir
from airflow_provider.runtime import venv_builder

__all__ = ["CondaBuilder", "forget_conda_locks", "pip_section", "rattler_available"]

logger = logging.getLogger(__name__)
_LAYOUT = "1"
_FIELD = "environment.python.conda_dependencies"
T = TypeVar("T")


def rattler_available() -> bool:
    """Whether py-rattler (the ``conda`` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("rattler") is not None


def forget_conda_locks(spec: CondaDependencies | None = None) -> int:
    """Remove this machine's cached conda solutions (the next build solves anew).

    :param spec: only this specification's; ``None`` removes every one.
    :return: how many were removed.
    """
    folder = state_dir() / "locks"
    if spec is not None:
        paths = [_solution_path(spec, subdir) for subdir in ("linux-64", "linux-aarch64")]
    else:
        paths = list(folder.glob("conda-*.json")) if folder.is_dir() else []
    removed = 0
    for path in paths:
        if path.exists():
            path.unlink()
            removed += 1
    return removed


def pip_section(spec: CondaDependencies) -> list[str]:
    """The requirement lines of a specification's ``pip:`` section (options first), as locked.

    :param spec: the conda specification.
    """
    return sorted(set([*spec.pip_options, *spec.pip_packages]))


def _virtual_packages() -> list[str]:
    """This machine's conda virtual packages (``__glibc``, ``__cuda``, ...): a solution depends on them."""
    try:
        import rattler

        return sorted(str(package) for package in rattler.VirtualPackage.detect())
    except Exception:  # no py-rattler, or an unreadable system
        return []


def _solution_path(spec: CondaDependencies, subdir: str) -> Path:
    key = hashlib.sha256(json.dumps({"layout": _LAYOUT, "spec": spec.fingerprint_payload(), "subdir": subdir,
                                     "virtual": _virtual_packages()}, sort_keys=True).encode()).hexdigest()
    return state_dir() / "locks" / f"conda-{key}.json"


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
        arm = os.uname().machine in ("aarch64", "arm64")
        self.subdir: Literal["linux-64", "linux-aarch64"] = "linux-aarch64" if arm else "linux-64"

    def prepare(self, env: Environment) -> PreparedEnvironment:
        """The conda environment of ``env``'s specification, built once.

        :param env: an environment of kind ``"conda"``.
        """
        spec = env.conda_specification()
        assert spec is not None
        solution = self.solution(spec)
        pip_lock = self._pip_lock(spec, solution)
        fingerprint = hashlib.sha256(json.dumps({
            "kind": "conda", "layout": _LAYOUT, "conda": [[r["name"], r["version"], r["build"], r["sha256"]]
                                                          for r in solution],
            "pip": pip_lock.identity() if pip_lock is not None else []}, sort_keys=True).encode()).hexdigest()
        final = self.root / fingerprint
        lock_text = _lock_text(spec, solution, pip_lock, self.subdir)
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

    # ----------------------------------------------------------------- solving
    def solution(self, spec: CondaDependencies) -> list[dict[str, str]]:
        """The solved packages of ``spec`` (cached per machine): name, version, build, url, sha256.

        :param spec: the conda specification.
        :raises ConfigurationError: the specification cannot be satisfied by its channels.
        :raises EnvironmentBuildError: a channel could not be read (a retry may help).
        """
        path = _solution_path(spec, self.subdir)
        path.parent.mkdir(parents=True, exist_ok=True)
        cached = _read_json(path)
        if cached is not None:
            return list(cached)
        with FileLock(str(path) + ".lock", timeout=2 * self.build_timeout_seconds):
            cached = _read_json(path)
            if cached is not None:
                return list(cached)
            records = self._solve(spec, spec.match_specs())
            solution = [_record_dict(record) for record in records]
            temporary = path.with_suffix(f".tmp{os.getpid()}")
            temporary.write_text(json.dumps(solution, indent=1))
            os.replace(temporary, path)
        return solution

    def _solve(self, spec: CondaDependencies, specs: list[str]) -> list[Any]:
        import rattler

        channels = [rattler.Channel(_channel_source(channel)) for channel in spec.channels]
        gateway = rattler.Gateway(cache_dir=cache_dir() / "rattler" / "repodata")
        try:
            virtual = rattler.VirtualPackage.detect()
        except Exception:  # an unreadable system: solve without them
            virtual = []
        try:
            records: list[Any] = _run(rattler.solve(sources=channels, specs=specs, gateway=gateway,
                                                    platforms=[self.subdir, "noarch"], virtual_packages=virtual))
        except Exception as exc:
            name = type(exc).__name__
            if "Solver" in name:
                raise ConfigurationError(
                    _FIELD, f"the conda specification cannot be satisfied from channels {spec.channels}:\n{exc}",
                    "fix the named package's version, or add the channel that has it.") from exc
            raise EnvironmentBuildError(
                f"reading the conda channels {spec.channels} failed ({name}: {exc}); a retry may help if a "
                "channel was unreachable. On a machine that reaches no conda channel, let the specification be "
                "translated to a virtual environment from PyPI (LocalTarget(conda='translate'), connection "
                "extra conda='translate')") from exc
        return records

    # ----------------------------------------------------------------- building
    def _build(self, spec: CondaDependencies, solution: list[dict[str, str]], pip_lock: Lock | None,
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
                records = self._solve(spec, pinned)
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

    def _pip_lock(self, spec: CondaDependencies, solution: list[dict[str, str]]) -> Lock | None:
        if not spec.pip_packages:
            return None
        python = next((r["version"] for r in solution if r["name"] == "python"), None)
        if python is None:
            raise ConfigurationError(_FIELD, "has a pip: section but its solution has no python package.",
                                     "add python (e.g. python=3.11) to the dependencies.")
        platform = TargetPlatform.from_facts(python, os.uname().machine, TargetPlatform.current().libc)
        provided = {PYPI_NAMES.get(r["name"], r["name"]): r["version"] for r in solution if r["name"] != "python"}
        return lock_requirements(pip_section(spec), platform, "target", timeout=self.build_timeout_seconds,
                                 provided=provided)

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
            "file_name": str(record.file_name)}


def _read_json(path: Path) -> list[dict[str, str]] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


def _lock_text(spec: CondaDependencies, solution: list[dict[str, str]], pip_lock: Lock | None, subdir: str) -> str:
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

