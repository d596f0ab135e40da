"""``Environment``: what a run's Python needs, named and versioned as in Azure ML v1.

Three kinds, chosen by what is set:

* nothing set (``Environment(name)`` or no environment at all): the current interpreter, as it is;
* ``python.user_managed_dependencies = True``: an interpreter the user manages
  (``python.interpreter_path``, default ``python3`` on the target), used as it is;
* pip packages (``from_pip_requirements`` or ``add_pip_package``): a virtual environment the
  provider builds once per fingerprint and caches.

``docker.base_image`` / ``docker.base_dockerfile`` describe the image the Docker target builds.
``azureml_compat = True`` runs every script of this environment with the Azure ML v1
compatibility layer (``from azureml.core import Run`` works unchanged; see
``docs/migrating-from-azureml-v1.md``).
Definitions are registered in a versioned store (``register`` / ``get``) under the state folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from airflow_provider.core.errors import ConfigurationError, EnvironmentNotFoundError
from airflow_provider.core.paths import state_dir
from airflow_provider.core.variables import validate_variables

__all__ = ["DockerSection", "Environment", "EnvironmentKind", "PythonSection"]

EnvironmentKind = Literal["current", "user_managed", "pip"]

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class PythonSection:
    """Python settings of an environment.

    :param user_managed_dependencies: use ``interpreter_path`` as it is; install nothing.
    :param interpreter_path: the interpreter to run (user-managed environments only).
    :param pip_packages: requirement lines installed into a managed virtual environment.
    """

    user_managed_dependencies: bool = False
    interpreter_path: str | None = None
    pip_packages: list[str] = field(default_factory=list)


@dataclass
class DockerSection:
    """Image settings, used by the Docker target.

    :param base_image: image to start from, e.g. ``"python:3.11-slim"``.
    :param base_dockerfile: Dockerfile text to build the base image from (instead of base_image).
    :param build_context: folder sent as the build context of ``base_dockerfile``.
    """

    base_image: str | None = None
    base_dockerfile: str | None = None
    build_context: str | None = None


class Environment:
    """A named, versionable description of the Python a run needs.

    :param name: the environment's name (letters, digits, ``.``, ``_``, ``-``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.version: str | None = None
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables: dict[str, str] = {}
        self.azureml_compat = False
        """Run scripts with the Azure ML v1 compatibility layer (``from azureml.core import Run``)."""

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_pip_requirements(cls, name: str, file_path: str | os.PathLike[str]) -> Environment:
        """Create an environment whose pip packages are the lines of a requirements file.

        The file is read now, as Azure ML did: later edits need a new call.

        :param name: the environment's name.
        :param file_path: path of a pip requirements file.
        """
        env = cls(name)
        env.python.pip_packages = _requirement_lines(_read_requirements_file(Path(file_path)))
        return env

    def add_pip_package(self, requirement: str) -> None:
        """Add one pip requirement (e.g. ``"numpy>=1.26"``) to the environment.

        :param requirement: a pip requirement specifier.
        """
        if not isinstance(requirement, str) or not requirement.strip():
            raise ConfigurationError(
                "Environment.python.pip_packages",
                f"a pip requirement must be a non-empty string, got {requirement!r}.",
                'pass a specifier such as "numpy>=1.26".',
            )
        self.python.pip_packages.append(requirement.strip())

    # ----------------------------------------------------------------- derived facts
    @property
    def kind(self) -> EnvironmentKind:
        """Which of the three kinds this environment is."""
        if self.python.user_managed_dependencies:
            return "user_managed"
        if self.python.pip_packages:
            return "pip"
        return "current"

    def normalized_requirements(self) -> list[str]:
        """Requirement lines without comments or blanks, whitespace folded, sorted, deduplicated."""
        return sorted(set(_requirement_lines("\n".join(self.python.pip_packages))))

    def definition_hash(self) -> str:
        """Hash of everything that defines the environment except its name and version."""
        payload = self.to_dict()
        payload.pop("name")
        payload.pop("version")
        if not payload["azureml_compat"]:  # definitions registered before the flag existed keep their hash
            payload.pop("azureml_compat")
        payload["python"]["pip_packages"] = self.normalized_requirements()
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    # ----------------------------------------------------------------- validation
    def validate(self, field_prefix: str = "environment") -> None:
        """Raise :class:`ConfigurationError` naming the first bad field.

        :param field_prefix: how the caller names this environment in messages.
        """
        if not isinstance(self.name, str) or not _NAME_PATTERN.fullmatch(self.name):
            raise ConfigurationError(
                f"{field_prefix}.name",
                f"{self.name!r} is not a valid environment name.",
                "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit.",
            )
        python = self.python
        _check_pip_packages(python.pip_packages, f"{field_prefix}.python.pip_packages")
        if python.user_managed_dependencies and python.pip_packages:
            raise ConfigurationError(
                f"{field_prefix}.python.user_managed_dependencies",
                "is True, so nothing is installed, yet pip packages are listed.",
                "install the packages into your interpreter yourself and clear pip_packages, or set "
                "user_managed_dependencies=False to let the provider build a virtual environment.",
            )
        if python.interpreter_path is not None and not python.user_managed_dependencies:
            raise ConfigurationError(
                f"{field_prefix}.python.interpreter_path",
                "is only used by user-managed environments.",
                "set python.user_managed_dependencies=True as well, or clear interpreter_path.",
            )
        validate_variables(self.environment_variables, f"{field_prefix}.environment_variables")
        if not isinstance(self.azureml_compat, bool):
            raise ConfigurationError(
                f"{field_prefix}.azureml_compat",
                f"must be True or False, got {self.azureml_compat!r}.",
                "set azureml_compat=True to run Azure ML v1 scripts unchanged, else leave it False.",
            )
        docker = self.docker
        if docker.base_image is not None and docker.base_dockerfile is not None:
            raise ConfigurationError(
                f"{field_prefix}.docker",
                "base_image and base_dockerfile are both set.",
                "set one: an image to start from, or a Dockerfile to build it.",
            )
        if docker.build_context is not None and docker.base_dockerfile is None:
            raise ConfigurationError(
                f"{field_prefix}.docker.build_context",
                "is set without base_dockerfile.",
                "set base_dockerfile too, or clear build_context.",
            )

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types (registry files, XCom, triggers)."""
        return {
            "name": self.name,
            "version": self.version,
            "python": asdict(self.python),
            "docker": asdict(self.docker),
            "environment_variables": dict(self.environment_variables),
            "azureml_compat": self.azureml_compat,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Environment:
        """Rebuild an environment from :meth:`to_dict` output (unknown keys are an error).

        :param data: the serialised environment.
        """
        known = {"name", "version", "python", "docker", "environment_variables", "azureml_compat"}
        unknown = set(data) - known
        if unknown or "name" not in data:
            raise ConfigurationError(
                "environment",
                f"unknown keys {sorted(unknown)}" if unknown else "the dict has no 'name'.",
                f"use only {sorted(known)}, with at least 'name'.",
            )
        env = cls(data["name"])
        env.version = None if data.get("version") is None else str(data["version"])
        try:
            env.python = PythonSection(**(data.get("python") or {}))
            env.docker = DockerSection(**(data.get("docker") or {}))
        except TypeError as exc:
            raise ConfigurationError("environment", str(exc), "check the field names.") from exc
        if isinstance(env.python.pip_packages, str):  # list() would split it into letters
            raise _single_string_error(env.python.pip_packages, "environment.python.pip_packages")
        env.python.pip_packages = list(env.python.pip_packages)
        env.environment_variables = validate_variables(data.get("environment_variables"),
                                                       "environment.environment_variables")
        env.azureml_compat = data.get("azureml_compat", False)
        return env

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Environment) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        version = f":{self.version}" if self.version else ""
        return f"Environment({self.name}{version}, kind={self.kind})"

    # ----------------------------------------------------------------- registry
    def register(self) -> Environment:
        """Store this definition as the next version of its name; unchanged ones keep theirs.

        :return: this environment, with ``version`` set.
        """
        self.validate()
        from filelock import FileLock

        folder = _registry_dir() / self.name
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            versions = _versions(folder)
            if versions:
                latest = Environment.from_dict(json.loads((folder / f"{versions[-1]}.json").read_text()))
                if latest.definition_hash() == self.definition_hash():
                    self.version = latest.version
                    return self
            self.version = str(versions[-1] + 1 if versions else 1)
            target = folder / f"{self.version}.json"
            temporary = target.with_suffix(".json.tmp")
            temporary.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
            os.replace(temporary, target)
        return self

    @staticmethod
    def get(name: str, version: str | int | None = None) -> Environment:
        """Load a registered environment: the given version, or the latest.

        :param name: the registered name.
        :param version: a version number; ``None`` means the latest.
        """
        folder = _registry_dir() / str(name)
        versions = _versions(folder) if folder.is_dir() else []
        if not versions:
            known = sorted(p.name for p in _registry_dir().iterdir() if p.is_dir())
            raise EnvironmentNotFoundError(
                "environment",
                f"no environment named {name!r} is registered.",
                f"register it first with Environment(...).register(); registered: {known or 'none'}.",
            )
        chosen = versions[-1] if version is None else _parse_version(version)
        path = folder / f"{chosen}.json"
        if not path.is_file():
            raise EnvironmentNotFoundError(
                "environment.version",
                f"environment {name!r} has no version {version!r}.",
                f"use one of {versions} or omit the version for the latest.",
            )
        return Environment.from_dict(json.loads(path.read_text()))

    @staticmethod
    def resolve(reference: str) -> Environment:
        """Load a registered environment from ``"name"`` or ``"name:version"``.

        :param reference: the environment's name, optionally followed by ``:version``.
        """
        name, _, version = reference.partition(":")
        return Environment.get(name, version or None)


def _registry_dir() -> Path:
    path = state_dir() / "environments"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _versions(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit())


def _parse_version(version: str | int) -> int:
    try:
        return int(version)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            "environment.version",
            f"{version!r} is not a version number.",
            "use a whole number such as 3, or omit it for the latest.",
        ) from exc


def _read_requirements_file(path: Path) -> str:
    field = "Environment.from_pip_requirements.file_path"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            field, f"cannot read requirements file {str(path)!r}: {exc.strerror or exc}.",
            "pass the path of an existing, readable pip requirements file.",
        ) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigurationError(
            field, f"requirements file {str(path)!r} is not UTF-8 text: byte {data[exc.start]:#04x} on line {line} "
            "cannot be decoded.",
            "save the file as UTF-8 (pip reads requirements files as UTF-8), e.g. iconv -f latin1 -t utf-8.",
        ) from None


def _single_string_error(packages: str, field: str) -> ConfigurationError:
    return ConfigurationError(
        field, f"is a single string ({packages!r}), which would be read letter by letter.",
        f"pass a list of requirement strings, e.g. [{json.dumps(packages.strip())}] or "
        '["numpy>=1.26", "scikit-learn"].',
    )


def _check_pip_packages(packages: object, field: str) -> None:
    if isinstance(packages, str):
        raise _single_string_error(packages, field)
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise ConfigurationError(
            field, f"must be a list of requirement strings, got {packages!r}.",
            'e.g. ["numpy>=1.26", "scikit-learn"].',
        )


def _requirement_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(" ".join(line.split()))
    return lines
