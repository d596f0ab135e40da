"""Prepare the Python interpreter a run uses, building pip environments once per fingerprint.

* no environment, or one that lists nothing: the base interpreter, as it is;
* a user-managed environment: its ``python.interpreter_path``, checked to exist and be executable;
* a pip environment: a virtual environment at ``<root>/<fingerprint>/``, built once and reused.

A build happens under a file lock (threads and processes build a fingerprint exactly once) in a
temporary folder ``<root>/.tmp-<fingerprint>-<random>`` whose last step writes a completion marker;
one ``os.rename`` then publishes the finished folder, so nobody ever sees a half-built environment
and a cache hit is a single ``stat`` of the marker, taken without the lock. Builds use ``uv`` when
available (``uv venv --relocatable``), else ``python -m venv`` + pip, whose absolute temporary paths
in ``bin/`` are rewritten to the final path before the rename. Every command and its output go to a
build log under ``<root>/logs/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal

from filelock import FileLock, Timeout

from airflow_provider.core.environment import Environment, EnvironmentKind
from airflow_provider.core.errors import ConfigurationError, EnvironmentBuildError
from airflow_provider.core.paths import state_dir

__all__ = ["EnvironmentCache", "PreparedEnvironment", "environment_fingerprint"]

Installer = Literal["auto", "uv", "pip"]

MARKER_NAME = ".training-runs-complete"
STALE_TEMP_SECONDS = 3600
LOG_TAIL_LINES = 40
_SUBPROCESS_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "UV_PYTHON_DOWNLOADS": "never"}


@dataclass(frozen=True)
class PreparedEnvironment:
    """The interpreter a run must use, and how it was obtained.

    :param kind: the environment's kind; ``"current"`` when no environment was given.
    :param python: absolute path of the interpreter the run must use.
    :param fingerprint: sha256 hex of what defines the environment (see :func:`environment_fingerprint`).
    :param built: ``True`` when this call built the environment (a cache miss).
    :param build_log: the build log, when this call built the environment.
    :param description: human-readable summary for the run's details.
    :param image: the container image the run uses (container targets only).
    :param build_log_artifact: the build log's name under the run's ``system_logs/``.
    """

    kind: EnvironmentKind
    python: str
    fingerprint: str
    built: bool
    build_log: Path | None
    description: str
    image: str | None = None
    build_log_artifact: str = "environment_build.log"

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types."""
        return {
            "kind": self.kind,
            "python": self.python,
            "fingerprint": self.fingerprint,
            "built": self.built,
            "build_log": None if self.build_log is None else str(self.build_log),
            "description": self.description,
            "image": self.image,
            "build_log_artifact": self.build_log_artifact,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreparedEnvironment:
        """Rebuild from :meth:`to_dict` output.

        :param data: the serialised prepared environment.
        """
        log = data.get("build_log")
        return cls(
            kind=data["kind"],
            python=str(data["python"]),
            fingerprint=str(data["fingerprint"]),
            built=bool(data["built"]),
            build_log=None if log is None else Path(log),
            description=str(data["description"]),
            image=data.get("image"),
            build_log_artifact=str(data.get("build_log_artifact", "environment_build.log")),
        )


def environment_fingerprint(env: Environment | None, python_version: str) -> str:
    """Hash what defines a prepared environment; the environment's name and version do not count.

    :param env: the environment, or ``None`` for the current interpreter.
    :param python_version: the full ``sys.version`` string of the base interpreter.
    """
    kind = "current" if env is None else env.kind
    payload: dict[str, Any] = {
        "kind": kind,
        "python_version": python_version,
        "requirements": [] if env is None else env.normalized_requirements(),
    }
    if env is not None and kind == "user_managed":
        payload["interpreter_path"] = env.python.interpreter_path or "python3"
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class EnvironmentCache:
    """Prepares environments, caching built virtual environments by fingerprint.

    :param root: folder holding the cached environments; default ``state_dir()/"envs"``.
    :param base_python: interpreter environments are based on; default ``sys.executable``.
    :param installer: ``"uv"``, ``"pip"`` (``python -m venv`` + pip), or ``"auto"`` (uv when found).
    :param build_timeout_seconds: a build step (venv, pip install) that runs longer fails; a run
        waiting for another process's build of the same environment waits at most twice as long.
    """

    def __init__(
        self, root: Path | None = None, *, base_python: str | None = None, installer: Installer = "auto",
        build_timeout_seconds: float = 1800.0,
    ) -> None:
        self.root = Path(root) if root is not None else state_dir() / "envs"
        self.build_timeout_seconds = build_timeout_seconds
        python = base_python or sys.executable
        self.base_python = python if os.path.isabs(python) else (shutil.which(python) or python)
        self.installer = installer
        self._python_version: str | None = None

    # ----------------------------------------------------------------- public
    def prepare(self, env: Environment | None) -> PreparedEnvironment:
        """Return the interpreter for ``env``, building (once) the virtual environment it needs.

        :param env: the run's environment, or ``None`` for the current interpreter.
        """
        fingerprint = environment_fingerprint(env, self.python_version())
        if env is None or env.kind == "current":
            why = "no environment given" if env is None else f"environment {_label(env)} lists no packages"
            text = f"current interpreter {self.base_python} ({why})"
            return PreparedEnvironment("current", self.base_python, fingerprint, False, None, text)
        if env.kind == "user_managed":
            python = _resolve_interpreter(env.python.interpreter_path or "python3")
            text = f"user-managed interpreter {python} (environment {_label(env)})"
            return PreparedEnvironment("user_managed", python, fingerprint, False, None, text)
        final = self.root / fingerprint
        if (final / MARKER_NAME).exists():
            return self._cached(env, fingerprint)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.root / f"{fingerprint}.lock"), timeout=2 * self.build_timeout_seconds):
                if (final / MARKER_NAME).exists():
                    return self._cached(env, fingerprint)
                self._remove_stale_temps(fingerprint)
                return self._build(env, fingerprint)
        except Timeout as exc:
            raise EnvironmentBuildError(
                f"Environment {_label(env)}: another process has been building it for over "
                f"{2 * self.build_timeout_seconds:g} s (lock {self.root / f'{fingerprint}.lock'}); stop that build "
                "or remove the lock file if its process is gone."
            ) from exc

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
    def _cached(self, env: Environment, fingerprint: str) -> PreparedEnvironment:
        final = self.root / fingerprint
        text = f"virtual environment {final} for {_label(env)}, reused from the cache"
        return PreparedEnvironment("pip", str(final / "bin" / "python"), fingerprint, False, None, text)

    def _build(self, env: Environment, fingerprint: str) -> PreparedEnvironment:
        final = self.root / fingerprint
        (self.root / "logs").mkdir(exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        log_path = self.root / "logs" / f"{fingerprint}-{stamp}.log"
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{fingerprint}-", dir=self.root))
        started = time.monotonic()
        try:
            with log_path.open("wb") as log:
                tool = self._build_in(tmp, final, env, log)
            if final.exists():  # a folder without marker: left by hand, never by a build
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        text = (
            f"virtual environment {final} for {_label(env)}, built now with {tool} "
            f"in {time.monotonic() - started:.1f} s"
        )
        return PreparedEnvironment("pip", str(final / "bin" / "python"), fingerprint, True, log_path, text)

    def _build_in(self, tmp: Path, final: Path, env: Environment, log: IO[bytes]) -> str:
        """Build the environment in ``tmp``, ready to be renamed to ``final``; return the tool used."""
        requirements = env.normalized_requirements()
        req_file = tmp / "requirements.txt"
        req_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        uv = self._find_uv()
        python, prompt = str(tmp / "bin" / "python"), f"env-{final.name[:12]}"
        if uv is not None:
            venv = [uv, "venv", "--relocatable", "--allow-existing", "--prompt", prompt]
            venv += ["--python", self.base_python, str(tmp)]
            install = [uv, "pip", "install", "--python", python, "-r", str(req_file)]
        else:
            venv = [self.base_python, "-m", "venv", "--prompt", prompt, str(tmp)]
            install = [python, "-m", "pip", "install", "-r", str(req_file)]
        self._run(venv, log, env, "creating the virtual environment")
        self._run(install, log, env, "pip install")
        if uv is None:
            _rewrite_paths(tmp, final)
        marker = {"requirements": requirements, "python_version": self.python_version(), "tool": venv[0]}
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        return "uv" if uv is not None else "venv + pip"

    def _run(self, command: list[str], log: IO[bytes], env: Environment, step: str) -> None:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        try:
            # Its own process group: a timeout stops the installer's helpers too, which would
            # otherwise go on writing into the folder being removed.
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, **_SUBPROCESS_ENV}, start_new_session=True)
            try:
                code = process.wait(timeout=self.build_timeout_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                log.write(f"timed out after {self.build_timeout_seconds:g} s (build_timeout_seconds)\n".encode())
                code = -1
        except OSError as exc:
            log.write(f"{exc}\n".encode())
            code = -1
        log.write(f"[exit code {code}]\n".encode())
        log.flush()
        if code != 0:
            tail = Path(log.name).read_text(encoding="utf-8", errors="replace").splitlines()
            raise EnvironmentBuildError(
                f"Building environment {_label(env)} failed: {step} exited with code {code} "
                f"(full log: {log.name}).",
                "\n".join(tail[-LOG_TAIL_LINES:]),
                Path(log.name),
            )

    def _find_uv(self) -> str | None:
        if self.installer == "pip":
            return None
        try:
            import uv

            found: str | None = str(uv.find_uv_bin())
        except (ImportError, FileNotFoundError):
            found = shutil.which("uv")
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


def _rewrite_paths(tmp: Path, final: Path) -> None:
    """Replace the temporary folder's path by the final one in text files of bin/ and pyvenv.cfg."""
    old, new = str(tmp).encode(), str(final).encode()
    for path in [*(tmp / "bin").iterdir(), tmp / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data and b"\0" not in data:
            path.write_bytes(data.replace(old, new))
