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

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from airflow_provider.core.environments.conda_spec import CondaDependencies, PipTranslation, translate_to_pip
from airflow_provider.core.errors import ConfigurationError, EnvironmentNotFoundError
from airflow_provider.core.paths import state_dir
from airflow_provider.core.variables import validate_variables

__all__ = ["MANAGED_KINDS", "DockerSection", "Environment", "EnvironmentKind", "PythonSection"]

EnvironmentKind = Literal["current", "user_managed", "pip", "conda"]
MANAGED_KINDS: tuple[EnvironmentKind, ...] = ("pip", "conda")
"""Kinds the provider builds (a virtual environment from a lock); the others are used as they are."""

ENVIRONMENT_FILE = "azureml_environment.json"
CONDA_FILE = "conda_dependencies.yml"
DOCKERFILE_FILE = "BaseDockerfile"
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class PythonSection:
    """Python settings of an environment.

    :param user_managed_dependencies: use ``interpreter_path`` as it is; install nothing.
    :param interpreter_path: the interpreter to run (user-managed environments only).
    :param pip_packages: requirement lines installed into a managed virtual environment.
    :param install_from: where a managed environment's packages come from. ``"submitter"``: the
        submitting machine resolves the lock for the target's platform, downloads the wheels and sends
        them; the target installs offline (``--no-index``), so hosts behind a firewall work.
        ``"target"``: the target installs the same locked versions from its own package index
        (source distributions allowed). ``None`` (the default): ``"submitter"`` on Docker, SSH and
        MPI targets, ``"target"`` on the local target (the same machine, with uv's cache).
    :param conda_dependencies: a conda specification (:class:`CondaDependencies`, Azure ML v1's class).
        On a target without conda it is translated into a virtual environment (see
        :func:`~airflow_provider.core.environments.conda_spec.translate_to_pip`): ``python=X.Y`` selects
        the interpreter, conda packages install from PyPI under their PyPI names, the ``pip:`` section
        as it is; a package with no PyPI equivalent is refused before any compute, naming it.
    :param conda_dependencies_file: the path of a conda environment file (``environment.yml``), read
        when the environment is used (relative paths: from the current folder); instead of
        ``conda_dependencies``.
    """

    user_managed_dependencies: bool = False
    interpreter_path: str | None = None
    pip_packages: list[str] = field(default_factory=list)
    install_from: str | None = None
    conda_dependencies: CondaDependencies | None = None
    conda_dependencies_file: str | None = None


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

    @classmethod
    def from_conda_specification(cls, name: str, file_path: str | os.PathLike[str]) -> Environment:
        """Create an environment from a conda environment file (``environment.yml``), read now.

        :param name: the environment's name.
        :param file_path: path of the conda specification.
        """
        env = cls(name)
        env.python.conda_dependencies = CondaDependencies.from_file(file_path)
        return env

    @classmethod
    def from_existing_conda_environment(cls, name: str, conda_environment_name: str) -> Environment:
        """Create an environment from a conda environment of this machine (``conda env export``).

        :param name: the environment's name.
        :param conda_environment_name: the existing conda environment's name.
        :raises ConfigurationError: no ``conda``, ``mamba`` or ``micromamba`` here, or no such environment.
        """
        field_name = "Environment.from_existing_conda_environment.conda_environment_name"
        tool = next((found for found in map(shutil.which, ("conda", "mamba", "micromamba")) if found), None)
        if tool is None:
            raise ConfigurationError(
                field_name, "needs conda, mamba or micromamba on this machine's PATH, and none is there.",
                f"on the machine that has it, run `conda env export -n {conda_environment_name} --no-builds > "
                "environment.yml`, then use Environment.from_conda_specification(name, 'environment.yml').",
            )
        done = subprocess.run([tool, "env", "export", "-n", conda_environment_name, "--no-builds"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise ConfigurationError(
                field_name, f"`{os.path.basename(tool)} env export -n {conda_environment_name}` failed: "
                f"{(done.stderr or done.stdout).strip()[-500:]}",
                f"check the name with `{os.path.basename(tool)} env list`.",
            )
        env = cls(name)
        env.python.conda_dependencies = CondaDependencies.from_string(done.stdout)
        return env

    @classmethod
    def from_docker_image(cls, name: str, image: str, conda_specification: str | os.PathLike[str] | None = None,
                          pip_requirements: str | os.PathLike[str] | None = None) -> Environment:
        """Create an environment that starts from a Docker image (Docker target).

        With neither a conda specification nor pip requirements, the image's Python is used as it
        is (``user_managed_dependencies``), as in Azure ML.

        :param name: the environment's name.
        :param image: the base image, e.g. ``"python:3.11-slim"``.
        :param conda_specification: path of a conda environment file installed on top.
        :param pip_requirements: path of a pip requirements file installed on top.
        """
        env = cls._with_packages(name, conda_specification, pip_requirements)
        env.docker.base_image = image
        return env

    @classmethod
    def from_dockerfile(cls, name: str, dockerfile: str | os.PathLike[str],
                        conda_specification: str | os.PathLike[str] | None = None,
                        pip_requirements: str | os.PathLike[str] | None = None) -> Environment:
        """Create an environment whose image is built from a Dockerfile (Docker target).

        :param name: the environment's name.
        :param dockerfile: the Dockerfile's text, or the path of a Dockerfile (its folder becomes the
            build context, so its ``COPY`` lines work).
        :param conda_specification: path of a conda environment file installed on top.
        :param pip_requirements: path of a pip requirements file installed on top.
        """
        env = cls._with_packages(name, conda_specification, pip_requirements)
        text = str(dockerfile)
        if "\n" not in text and Path(text).is_file():
            env.docker.build_context = str(Path(text).resolve().parent)
            text = Path(text).read_text(encoding="utf-8")
        env.docker.base_dockerfile = text
        return env

    @classmethod
    def _with_packages(cls, name: str, conda_specification: str | os.PathLike[str] | None,
                       pip_requirements: str | os.PathLike[str] | None) -> Environment:
        env = cls.from_pip_requirements(name, pip_requirements) if pip_requirements is not None else cls(name)
        if conda_specification is not None:
            env.python.conda_dependencies = CondaDependencies.from_file(conda_specification)
        if conda_specification is None and pip_requirements is None:
            env.python.user_managed_dependencies = True
        return env

    @classmethod
    def from_run(cls, run_id: str, tracking_uri: str | None = None) -> Environment:
        """The environment a run ran in, pinned to the exact versions of its lock (``environment/lock.txt``).

        Building it on any target installs those versions (for another platform, their wheels for
        it); its image, variables and settings are the run's too.

        :param run_id: the MLflow run id.
        :param tracking_uri: the tracking server; default as for :class:`Experiment`.
        :raises ConfigurationError: the run has no lock (it ran without a managed environment).
        """
        import tempfile

        from airflow_provider.core.errors import ArtifactNotFoundError
        from airflow_provider.core.tracking import Tracker

        tracker = Tracker(tracking_uri)
        with tempfile.TemporaryDirectory(prefix="environment-from-run-") as scratch:
            try:
                lock = Path(tracker.download_artifact(run_id, "environment/lock.txt", scratch)).read_text()
            except ArtifactNotFoundError as exc:
                raise ConfigurationError(
                    "Environment.from_run.run_id", f"run {run_id} has no environment/lock.txt: it ran without a "
                    "managed environment (pip packages or a conda specification), or before locks were recorded.",
                    "pass the id of a run whose environment the provider built.",
                ) from exc
            try:
                definition = json.loads(Path(tracker.download_artifact(run_id, "environment/definition.json",
                                                                       scratch)).read_text())
            except ArtifactNotFoundError:
                definition = {"name": "from-run"}
        env = cls.from_dict(definition)
        env.version = None
        if "@EXPLICIT" in lock.splitlines():  # a conda environment: the same packages, builds included
            original = env.python.conda_dependencies
            env.python.conda_dependencies = _pinned_conda(lock, original.channels if original else [])
            env.python.conda_dependencies_file = None
            return env
        env.python.conda_dependencies = None
        env.python.conda_dependencies_file = None
        env.python.pip_packages = [line.split(" --hash=")[0] for line in lock.splitlines()
                                   if line.strip() and not line.startswith("#")]
        return env

    def refresh_lock(self) -> int:
        """Forget this machine's resolved locks of this environment: the next build resolves anew
        (newer releases within the requirements). Until then, runs get the packages first locked.

        :return: how many cached locks were removed.
        """
        from airflow_provider.core.environments.conda_builder import forget_conda_locks
        from airflow_provider.core.environments.locking import forget_locks

        spec = self.conda_specification()
        removed = 0
        if spec is not None:
            from airflow_provider.core.environments.conda_builder import pip_section

            removed = forget_conda_locks(spec) + (forget_locks(pip_section(spec)) if spec.pip_packages else 0)
        try:
            requirements = self.requirements()
        except ConfigurationError:  # conda-only packages: no translation, so no pip lock either
            return removed
        return removed + forget_locks(requirements)

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
        if self.python.conda_dependencies is not None or self.python.conda_dependencies_file is not None:
            return "conda"
        if self.python.pip_packages:
            return "pip"
        return "current"

    def conda_specification(self) -> CondaDependencies | None:
        """The conda specification: ``python.conda_dependencies``, or the file it names, read now."""
        if self.python.conda_dependencies is not None:
            return self.python.conda_dependencies
        if self.python.conda_dependencies_file is not None:
            return CondaDependencies.from_file(self.python.conda_dependencies_file,
                                               field="environment.python.conda_dependencies_file")
        return None

    def translation(self) -> PipTranslation | None:
        """For a conda environment, its translation into pip requirements (hosts without conda)."""
        spec = self.conda_specification()
        return None if spec is None else translate_to_pip(spec, "environment.python.conda_dependencies")

    def requirements(self) -> list[str]:
        """What a managed virtual environment installs: the pip packages, or a conda specification's
        translation followed by the pip packages, normalized (see :meth:`normalized_requirements`)."""
        translation = self.translation()
        lines = [*(translation.requirements if translation else []), *self.python.pip_packages]
        return sorted(set(_requirement_lines("\n".join(lines))))

    def required_python(self) -> str | None:
        """The Python version a conda specification asks for (``"3.11"``, ``">=3.10"``), else None."""
        translation = self.translation()
        return None if translation is None else translation.python_version

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
        for key in ("install_from", "conda_dependencies", "conda_dependencies_file"):  # likewise for these
            if payload["python"][key] is None:
                payload["python"].pop(key)
        if self.python.conda_dependencies is not None:
            payload["python"]["conda_dependencies"] = self.python.conda_dependencies.fingerprint_payload()
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
        if python.conda_dependencies is not None and python.conda_dependencies_file is not None:
            raise ConfigurationError(
                f"{field_prefix}.python.conda_dependencies_file",
                "is set together with conda_dependencies.",
                "set one: a CondaDependencies object, or the path of an environment.yml file.",
            )
        if python.conda_dependencies is not None and not isinstance(python.conda_dependencies, CondaDependencies):
            raise ConfigurationError(
                f"{field_prefix}.python.conda_dependencies",
                f"must be a CondaDependencies, got {type(python.conda_dependencies).__name__}.",
                "use CondaDependencies.create(...) or Environment.from_conda_specification(name, path).",
            )
        if self.kind == "conda":
            if python.user_managed_dependencies:
                raise ConfigurationError(
                    f"{field_prefix}.python.user_managed_dependencies", "is True, yet a conda specification is set.",
                    "clear the conda specification, or set user_managed_dependencies=False.")
            spec = self.conda_specification()
            assert spec is not None
            spec.validate(f"{field_prefix}.python.conda_dependencies")
            # Conda-only packages (cudatoolkit, ...) are refused when a target without conda translates
            # the specification (preparing it, before anything is sent or started).
        if python.install_from not in (None, "target", "submitter"):
            raise ConfigurationError(
                f"{field_prefix}.python.install_from",
                f"is {python.install_from!r}.",
                'use "submitter" (wheels downloaded here and sent: targets without a package index), "target" '
                "(the target's own index) or None for the target's default.",
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
            "python": _python_dict(self.python),
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
            python = dict(data.get("python") or {})
            if python.get("conda_dependencies") is not None:
                python["conda_dependencies"] = CondaDependencies.from_dict(
                    python["conda_dependencies"], "environment.python.conda_dependencies")
            env.python = PythonSection(**python)
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
            from airflow_provider.core.environments.curated import curated_environment, curated_names

            curated = curated_environment(str(name), version)
            if curated is not None:
                return curated
            known = sorted(p.name for p in _registry_dir().iterdir() if p.is_dir())
            raise EnvironmentNotFoundError(
                "environment",
                f"no environment named {name!r} is registered or curated.",
                f"register it first with Environment(...).register(); registered: {known or 'none'}; curated: "
                f"{', '.join(curated_names())}.",
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
    def list() -> dict[str, Environment]:
        """The registered environments, each at its latest version, and the curated ones (with the
        Azure ML v1 names listed for them), by name."""
        from airflow_provider.core.environments.curated import curated_environment, curated_names

        found: dict[str, Environment] = {}
        for folder in sorted(p for p in _registry_dir().iterdir() if p.is_dir()):
            if _versions(folder):
                found[folder.name] = Environment.get(folder.name)
        for name in curated_names():
            curated = curated_environment(name)
            if name not in found and curated is not None:
                found[name] = curated
        return found

    def save_to_directory(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write this environment to a folder a team commits beside its code (Azure ML v1's layout:
        ``azureml_environment.json``, ``conda_dependencies.yml``, ``BaseDockerfile``).

        :param path: the folder (created).
        :param overwrite: replace files already there; otherwise an existing definition is an error.
        """
        folder = Path(path)
        definition = folder / ENVIRONMENT_FILE
        if definition.exists() and not overwrite:
            raise ConfigurationError("Environment.save_to_directory.path",
                                     f"{str(folder)!r} already holds an environment ({ENVIRONMENT_FILE}).",
                                     "pass overwrite=True to replace it, or another folder.")
        folder.mkdir(parents=True, exist_ok=True)
        conda = self.conda_specification()
        for name in (CONDA_FILE, DOCKERFILE_FILE):
            (folder / name).unlink(missing_ok=True)
        if conda is not None:
            (folder / CONDA_FILE).write_text(conda.serialize_to_string(), encoding="utf-8")
        if self.docker.base_dockerfile is not None:
            (folder / DOCKERFILE_FILE).write_text(self.docker.base_dockerfile, encoding="utf-8")
        data = {
            "name": self.name, "version": self.version,
            "environmentVariables": dict(self.environment_variables),
            "python": {"userManagedDependencies": self.python.user_managed_dependencies,
                       "interpreterPath": self.python.interpreter_path,
                       "condaDependenciesFile": CONDA_FILE if conda is not None else None},
            "docker": {"baseImage": self.docker.base_image,
                       "baseDockerfile": DOCKERFILE_FILE if self.docker.base_dockerfile is not None else None,
                       "buildContext": self.docker.build_context},
            "trainingRuns": {"pipPackages": list(self.python.pip_packages), "installFrom": self.python.install_from,
                             "azuremlCompat": self.azureml_compat},
        }
        (folder / ENVIRONMENT_FILE).write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")

    @staticmethod
    def load_from_directory(path: str | os.PathLike[str]) -> Environment:
        """Read an environment written by :meth:`save_to_directory`, or by Azure ML v1's own
        ``Environment.save_to_directory`` (its Spark, R and registry settings do not apply here and are
        ignored).

        :param path: the folder.
        """
        folder = Path(path)
        definition = folder / ENVIRONMENT_FILE
        field_name = "Environment.load_from_directory.path"
        try:
            data = json.loads(definition.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(field_name, f"cannot read {str(definition)!r}: {exc.strerror or exc}.",
                                     "pass a folder written by Environment.save_to_directory.") from exc
        except ValueError as exc:
            raise ConfigurationError(field_name, f"{str(definition)!r} is not JSON: {exc}.",
                                     "fix the file, or write it again with Environment.save_to_directory.") from exc
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ConfigurationError(field_name, f"{str(definition)!r} has no environment name.",
                                     'write it with Environment.save_to_directory (it needs "name").')
        env = Environment(data["name"])
        env.version = None if data.get("version") is None else str(data["version"])
        python = data.get("python") or {}
        docker = data.get("docker") or {}
        ours = data.get("trainingRuns") or {}
        env.environment_variables = validate_variables(data.get("environmentVariables") or {},
                                                       "environment.environment_variables")
        env.python.user_managed_dependencies = bool(python.get("userManagedDependencies", False))
        if env.python.user_managed_dependencies:
            env.python.interpreter_path = python.get("interpreterPath")
        conda_file = python.get("condaDependenciesFile") or (CONDA_FILE if (folder / CONDA_FILE).exists() else None)
        if conda_file is not None and not env.python.user_managed_dependencies:
            env.python.conda_dependencies = CondaDependencies.from_file(folder / conda_file,
                                                                        field="environment.python.conda_dependencies")
        env.docker.base_image = docker.get("baseImage")
        if docker.get("baseDockerfile"):
            dockerfile = folder / docker["baseDockerfile"]
            env.docker.base_dockerfile = (dockerfile.read_text(encoding="utf-8") if dockerfile.is_file()
                                          else str(docker["baseDockerfile"]))  # Azure ML wrote the text itself
            env.docker.base_image = None
        env.docker.build_context = docker.get("buildContext")
        env.python.pip_packages = list(ours.get("pipPackages") or [])
        env.python.install_from = ours.get("installFrom")
        env.azureml_compat = bool(ours.get("azuremlCompat", False))
        env.validate()
        return env

    @staticmethod
    def resolve(reference: str) -> Environment:
        """Load a registered environment from ``"name"`` or ``"name:version"``.

        :param reference: the environment's name, optionally followed by ``:version``.
        """
        name, _, version = reference.partition(":")
        return Environment.get(name, version or None)


def _pinned_conda(lock: str, channels: list[str]) -> CondaDependencies:
    """A specification of exactly the packages of a conda lock (``@EXPLICIT`` URLs, ``# pip:`` pins)."""
    spec = CondaDependencies()
    for channel in spec.channels:
        spec.remove_channel(channel)
    for channel in channels:
        spec.add_channel(channel)
    for line in lock.splitlines():
        if line.startswith("# pip: ") and "==" in line:
            spec.add_pip_package(line[len("# pip: "):].split(" --hash=")[0])
        elif line and not line.startswith(("#", "@")):
            stem = line.split("#", 1)[0].rsplit("/", 1)[-1].removesuffix(".conda").removesuffix(".tar.bz2")
            name, version, build = stem.rsplit("-", 2)
            if name == "python":
                spec.set_python_version(f"=={version}")
            else:
                spec.add_conda_package(f"{name}=={version}={build}")
    return spec


def _python_dict(python: PythonSection) -> dict[str, Any]:
    conda = python.conda_dependencies
    data = asdict(dataclasses.replace(python, conda_dependencies=None))
    data["conda_dependencies"] = None if conda is None else conda.to_dict()
    return data


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
