"""Which interpreter a conda specification's ``python=X.Y`` selects on a target without conda.

A version as conda writes it (``3.11``, ``3.11.4``, ``3.11.*``) matches by prefix, as conda's ``=``
does; a range (``>=3.10,<3.13``) matches as a pip specifier. On this machine the base interpreter is
taken when it matches, else ``python3.X`` on ``PATH`` or an interpreter uv knows (never downloaded);
a remote target uses its configured interpreter, and a mismatch is an error naming both versions.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from airflow_provider.core.errors import ConfigurationError

__all__ = ["check_interpreter", "find_local_interpreter", "python_matches"]

FIELD = "environment.python.conda_dependencies"


def python_matches(required: str | None, version: str) -> bool:
    """Whether an interpreter of ``version`` satisfies a specification's Python ``required``.

    :param required: ``"3.11"``, ``"3.11.4"``, ``"3.11.*"``, ``">=3.10"``; None matches anything.
    :param version: the interpreter's version (``sys.version`` may be given whole).
    """
    if required is None:
        return True
    found = version.split()[0]
    wanted = required.strip().rstrip("*").rstrip(".")
    if wanted and wanted[0].isdigit() and all(part.isdigit() for part in wanted.split(".")):
        return found == wanted or found.startswith(wanted + ".")
    try:
        return Version(found) in SpecifierSet(required.replace(" ", ""))
    except (InvalidSpecifier, InvalidVersion):
        return False


def check_interpreter(required: str | None, version: str, where: str, fix: str) -> None:
    """Raise a :class:`ConfigurationError` when a target's interpreter does not match ``required``.

    :param required: the specification's Python version, or None.
    :param version: the target interpreter's version.
    :param where: e.g. ``"on host gpu-1 (python3)"``.
    :param fix: how to point the target at another interpreter.
    """
    if not python_matches(required, version):
        raise ConfigurationError(
            FIELD, f"asks for python={required}, and the interpreter {where} is Python {version.split()[0]}.",
            f"{fix}, or change the specification's python version to {'.'.join(version.split()[0].split('.')[:2])}.",
        )


def find_local_interpreter(required: str | None, base_python: str, base_version: str) -> str:
    """The interpreter on this machine for ``required``: the base one when it matches, else another.

    :param required: the specification's Python version, or None.
    :param base_python: the interpreter used when nothing is required.
    :param base_version: its version.
    :raises ConfigurationError: no interpreter here matches (the message lists those found).
    """
    if python_matches(required, base_version):
        return base_python
    assert required is not None
    found: dict[str, str] = {}
    for minor in range(8, 16):
        path = shutil.which(f"python3.{minor}")
        if path is not None:
            version = _version_of(path)
            if version is not None:
                found.setdefault(version, path)
                if python_matches(required, version):
                    return path
    uv_found = _uv_find(required)
    if uv_found is not None:
        return uv_found
    listed = ", ".join(f"{v} ({p})" for v, p in sorted(found.items())) or "none besides the base one"
    raise ConfigurationError(
        FIELD,
        f"asks for python={required}; this machine's interpreters are Python {base_version.split()[0]} "
        f"({base_python}) and {listed}.",
        f"install Python {required} here (e.g. `uv python install {required}` or your system's package), or "
        "change the specification's python version to one listed.",
    )


def _version_of(python: str) -> str | None:
    try:
        done = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                              text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _uv_find(required: str) -> str | None:
    from airflow_provider.core.environments.locking import find_uv

    uv = find_uv()
    if uv is None:
        return None
    try:
        done = subprocess.run([uv, "python", "find", "--no-project", required], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
    except (OSError, subprocess.SubprocessError):
        return None
    path = done.stdout.strip()
    return path if done.returncode == 0 and path else None
