"""Prepare the Python interpreter a run uses, building pip environments once per fingerprint.

* no environment, or one that lists nothing: the base interpreter, as it is;
* a user-managed environment: its ``python.interpreter_path``, checked to exist and be executable;
* a pip environment: a virtual environment at ``<root>/<fingerprint>/``, built once and reused.

A build happens under a file lock (threads and processes build a fingerprint exactly once) in a
temporary folder ``<root>/.tmp-<fingerprint>-<random>`` whose last step writes a completion marker;
one ``os.rename`` then publishes the finished folder, so nobody ever sees a half-built environment
and a cache hit is a single ``stat`` of the marker, taken without the lock. Builds use ``uv`` when
available (``uv venv --relocatable``), else ``python -m venv`` + pip, whose absolute temporary paths
in ``bin/`` are rewritten to the final path before the rename (the one builder every target uses:
:mod:`airflow_provider.runtime.venv_builder`). Every command and its output go to a build log under
``<root>/logs/``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout

from airflow_provider.core.environments.conda_builder import (
    CondaBuilder,
    CondaMode,
    rattler_available,
    translated_when_unreachable,
)
from airflow_provider.core.environments.fingerprint import environment_fingerprint
from airflow_provider.core.environments.interpreters import find_local_interpreter, python_matches
from airflow_provider.core.environments.locking import InstallFrom, Lock, TargetPlatform, find_uv, lock_requirements
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import MANAGED_KINDS, Environment
from airflow_provider.core.environments.wheels import WheelStore, files_to_install
from airflow_provider.core.errors import ConfigurationError, EnvironmentBuildError
from airflow_provider.core.paths import state_dir
from airflow_provider.runtime import venv_builder

__all__ = ["EnvironmentCache", "PreparedEnvironment", "environment_fingerprint"]  # the last two re-exported

logger = logging.getLogger(__name__)
Installer = Literal["auto", "uv", "pip"]

MARKER_NAME = venv_builder.MARKER_NAME
STALE_TEMP_SECONDS = 3600
LOG_TAIL_LINES = 40


class EnvironmentCache:
    """Prepares environments, caching built virtual environments by fingerprint.

    :param root: folder holding the cached environments; default ``state_dir()/"envs"``.
    :param base_python: interpreter environments are based on; default ``sys.executable``.
    :param installer: ``"uv"``, ``"pip"`` (``python -m venv`` + pip), or ``"auto"`` (uv when found).
    :param build_timeout_seconds: a build step (venv, pip install) that runs longer fails; a run
        waiting for another process's build of the same environment waits at most twice as long.
    :param max_count: the most environments kept; after a build, the least recently used beyond it
        are evicted (never one a running job uses), each eviction logged.
    :param max_bytes: likewise, the most bytes the environments may take together.
    :param conda: how conda specifications are built: ``"rattler"``, a real conda environment with
        py-rattler (the ``conda`` extra; its channels must be reachable); ``"translate"``, a virtual
        environment from PyPI (see :func:`~airflow_provider.core.environments.conda_spec.translate_to_pip`);
        ``"auto"`` (default): rattler when py-rattler is installed, else translate.
    """

    def __init__(
        self, root: Path | None = None, *, base_python: str | None = None, installer: Installer = "auto",
        build_timeout_seconds: float = 1800.0, max_count: int = 20, max_bytes: int = 50 << 30,
        conda: CondaMode = "auto",
    ) -> None:
        if conda not in ("auto", "rattler", "translate"):
            raise ConfigurationError("conda", f"is {conda!r}.", 'use "auto", "rattler" or "translate".')
        self.conda: CondaMode = conda
        self.root = Path(root) if root is not None else state_dir() / "envs"
        self.build_timeout_seconds = build_timeout_seconds
        python = base_python or sys.executable
        self.base_python = python if os.path.isabs(python) else (shutil.which(python) or python)
        self.installer = installer
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._python_version: str | None = None

    # ----------------------------------------------------------------- public
    def prepare(self, env: Environment | None) -> PreparedEnvironment:
        """Return the interpreter for ``env``, building (once) the virtual environment it needs.

        :param env: the run's environment, or ``None`` for the current interpreter.
        """
        if env is None or env.kind not in MANAGED_KINDS:
            return self._unmanaged(env)
        if env.kind == "conda" and self.conda_mode() == "rattler":
            builder = CondaBuilder(self.root, self.build_timeout_seconds, self.max_count, self.max_bytes)
            return translated_when_unreachable(self.conda, lambda: builder.prepare(env), lambda: self._venv(env))
        return self._venv(env)

    def _venv(self, env: Environment) -> PreparedEnvironment:
        """The virtual environment of a managed environment (a conda one translated to PyPI)."""
        required = env.required_python()
        if required is not None and not python_matches(required, self.python_version()):
            other = find_local_interpreter(required, self.base_python, self.python_version())
            return EnvironmentCache(self.root, base_python=other, installer=self.installer,
                                    build_timeout_seconds=self.build_timeout_seconds, max_count=self.max_count,
                                    max_bytes=self.max_bytes, conda="translate").prepare(env)
        lock = self.lock(env)
        fingerprint = environment_fingerprint(env, self.python_version(), lock)
        final = self.root / fingerprint
        if (final / MARKER_NAME).exists():
            try:
                os.utime(final)  # a use: least recently used environments are evicted first
                return self._cached(env, fingerprint, lock)
            except FileNotFoundError:
                pass  # evicted a moment ago by another process: build it again
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.root / f"{fingerprint}.lock"), timeout=2 * self.build_timeout_seconds):
                if (final / MARKER_NAME).exists():
                    return self._cached(env, fingerprint, lock)
                self._remove_stale_temps(fingerprint)
                return self._build(env, fingerprint, lock)
        except Timeout as exc:
            raise EnvironmentBuildError(
                f"Environment {_label(env)}: another process has been building it for over "
                f"{2 * self.build_timeout_seconds:g} s (lock {self.root / f'{fingerprint}.lock'}); stop that build "
                "or remove the lock file if its process is gone."
            ) from exc

    def conda_mode(self) -> Literal["rattler", "translate"]:
        """How this cache builds conda specifications (``"auto"`` decided)."""
        if self.conda == "auto":
            return "rattler" if rattler_available() else "translate"
        return self.conda

    def lock(self, env: Environment) -> Lock:
        """The resolved lock of ``env`` for the base interpreter (cached per machine; see :mod:`locking`).

        :param env: a pip environment.
        """
        platform = TargetPlatform.from_facts(self.python_version(), os.uname().machine,
                                             TargetPlatform.current().libc)
        install_from: InstallFrom = "submitter" if env.python.install_from == "submitter" else "target"
        return lock_requirements(env.requirements(), platform, install_from, python=self.base_python,
                                 timeout=self.build_timeout_seconds)

    def _unmanaged(self, env: Environment | None) -> PreparedEnvironment:
        fingerprint = environment_fingerprint(env, self.python_version())
        if env is None or env.kind == "current":
            why = "no environment given" if env is None else f"environment {_label(env)} lists no packages"
            text = f"current interpreter {self.base_python} ({why})"
            return PreparedEnvironment("current", self.base_python, fingerprint, False, None, text)
        if env.kind == "user_managed":
            python = _resolve_interpreter(env.python.interpreter_path or "python3")
            text = f"user-managed interpreter {python} (environment {_label(env)})"
            return PreparedEnvironment("user_managed", python, fingerprint, False, None, text)
        raise AssertionError(f"not an unmanaged environment: {env.kind}")

    def python_version(self) -> str:
        """The full ``sys.version`` of the base interpreter, asked once per instance."""
        if self._python_version is None:
            if self.base_python == sys.executable:
                self._python_version = sys.version
            else:
                try:
                    done = subprocess.run(
                        [self.base_python, "-c", "import sys; print(sys.version)"],
                        capture_output=True, text=True, check=True, timeout=60,
                    )  # fmt: skip
                except (OSError, subprocess.SubprocessError) as exc:
                    raise ConfigurationError(
                        "EnvironmentCache.base_python",
                        f"cannot run {self.base_python!r}: {exc}.",
                        "pass the path of a working Python interpreter.",
                    ) from exc
                self._python_version = done.stdout.strip()
        return self._python_version

    # ----------------------------------------------------------------- internals
    def _cached(self, env: Environment, fingerprint: str, lock: Lock) -> PreparedEnvironment:
        final = self.root / fingerprint
        text = f"virtual environment {final} for {_label(env)}, reused from the cache"
        return PreparedEnvironment(env.kind, str(final / "bin" / "python"), fingerprint, False, None, text,
                                   lock=lock.text())

    def _build(self, env: Environment, fingerprint: str, lock: Lock) -> PreparedEnvironment:
        final = self.root / fingerprint
        (self.root / "logs").mkdir(exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        log_path = self.root / "logs" / f"{fingerprint}-{stamp}.log"
        started = time.monotonic()
        try:
            files = files_to_install(lock, WheelStore())
            with log_path.open("wb") as log:
                log.write(lock.text().encode())
                tool = venv_builder.build_venv(str(final), lock.requirement_lines(), self.base_python,
                                               self._find_uv(), log, self.build_timeout_seconds,
                                               self.python_version(), {k: str(v) for k, v in files.items()},
                                               offline=lock.install_from == "submitter", complete=True)
        except venv_builder.BuildFailedError as exc:
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
            raise EnvironmentBuildError(
                f"Building environment {_label(env)} failed: {exc.step} exited with code {exc.code} "
                f"(full log: {log_path}).",
                "\n".join(tail[-LOG_TAIL_LINES:]),
                log_path,
            ) from exc
        for line in venv_builder.evict_environments(str(self.root), self.max_count, self.max_bytes, (fingerprint,)):
            logger.info("Evicted environment %s from %s", line, self.root)
        text = (
            f"virtual environment {final} for {_label(env)}, built now with {tool} from a lock of "
            f"{len(lock.packages)} packages ({_source(lock)}) in {time.monotonic() - started:.1f} s"
        )
        return PreparedEnvironment(env.kind, str(final / "bin" / "python"), fingerprint, True, log_path,
                                   text + _translation_note(env), lock=lock.text())

    def _find_uv(self) -> str | None:
        if self.installer == "pip":
            return None
        found = find_uv()
        if found is None and self.installer == "uv":
            raise ConfigurationError(
                "EnvironmentCache.installer", "is 'uv' but uv is not installed.",
                "reinstall the provider (uv is one of its dependencies), or use installer='pip' or 'auto'.",
            )  # fmt: skip
        return found

    def _remove_stale_temps(self, own_fingerprint: str) -> None:
        """Remove temporary folders of crashed builds: over an hour old and nobody building them."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        for path in self.root.glob(".tmp-*"):
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
            except OSError:
                continue
            fingerprint = path.name[len(".tmp-") :].split("-", 1)[0]
            if fingerprint == own_fingerprint:
                shutil.rmtree(path, ignore_errors=True)
                continue
            try:
                with FileLock(str(self.root / f"{fingerprint}.lock"), timeout=0):
                    shutil.rmtree(path, ignore_errors=True)
            except Timeout:
                pass  # being built right now


def _translation_note(env: Environment) -> str:
    translation = env.translation()
    if translation is None:
        return ""
    return ("; conda specification translated to a virtual environment (no conda on the target)"
            + "".join(f"; {note}" for note in translation.notes))


def _source(lock: Lock) -> str:
    if lock.install_from == "submitter":
        return "wheels downloaded on the submitting side, installed offline"
    return "installed from the package index"


def _label(env: Environment) -> str:
    return repr(f"{env.name}:{env.version}" if env.version else env.name)


def _resolve_interpreter(path: str) -> str:
    found = path if os.path.isabs(path) else shutil.which(path)
    if found is None or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise ConfigurationError(
            "environment.python.interpreter_path",
            f"{path!r} is not an existing, executable interpreter.",
            "give the absolute path of a Python interpreter, or a command found on PATH.",
        )
    return os.path.abspath(found)
