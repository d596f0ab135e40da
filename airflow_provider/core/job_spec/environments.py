"""A job's ``environment``: a registered or curated name, or an inline definition.

* A string names a registered or curated environment: ``training-sklearn``, ``name:version``, or
  Azure ML's forms ``azureml:name:version`` and ``azureml:name@latest``. Azure ML's curated names
  (``AzureML-sklearn-1.0-ubuntu20.04-py38-cpu``) resolve to the curated environments here, with
  ``azureml_compat`` on; their Azure ML version numbers mean nothing here and are dropped.
* A mapping is an inline environment: ``image`` (a base image: the Docker target's), or ``build``
  (``path``: the build context folder, ``dockerfile_path``: the Dockerfile in it, default
  ``Dockerfile``), plus ``conda_file`` and our ``pip_requirements`` (files, relative to the job
  file's folder). With neither image nor build, the conda specification or the requirements alone
  make a virtual environment on any target.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from airflow_provider.core.environments.conda_spec import CondaDependencies
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.job_spec.nodes import Node
from airflow_provider.core.job_spec.problems import Checker, join

__all__ = ["environment_name", "read_environment"]

_KEYS = ("name", "version", "description", "image", "build", "conda_file", "pip_requirements", "$schema")
_BUILD_KEYS = ("path", "dockerfile_path")
_NO_EQUIVALENT = {
    "os_type": "has no equivalent here: runs are Linux processes",
    "inference_config": "has no equivalent here: there is no serving",
    "tags": "has no equivalent here: tag the job instead",
}


def environment_name(stem: str) -> str:
    """A valid environment name made from a file stem or project name (``train`` -> ``train-environment``).

    :param stem: the base.
    """
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "job"
    return f"{base[:100]}-environment"


def read_environment(check: Checker, node: Node, field_path: str, base_dir: Path,
                     default_name: str) -> Environment | str | None:
    """Read ``environment``.

    :param check: collects problems.
    :param node: the value.
    :param field_path: its dotted path.
    :param base_dir: the job file's folder.
    :param default_name: the name of an inline environment that names none.
    :return: an :class:`Environment`, a ``"name[:version]"`` the core resolves, or None on problems.
    """
    if isinstance(node.value, str):
        return _reference(check, node, field_path)
    keys = check.mapping(node, field_path, _KEYS, elsewhere=_NO_EQUIVALENT,
                         what="a registered name or a mapping with image, build, conda_file or pip_requirements")
    if keys is None:
        return None
    name = default_name
    before = len(check.problems)
    if "name" in keys:
        name = check.string(keys["name"], join(field_path, "name")) or default_name
    conda = _conda(check, keys.get("conda_file"), join(field_path, "conda_file"), base_dir)
    requirements = _file(check, keys.get("pip_requirements"), join(field_path, "pip_requirements"), base_dir,
                         "a pip requirements file")
    dockerfile, context = _build(check, keys.get("build"), join(field_path, "build"), base_dir)
    image = None
    if "image" in keys:
        image = check.string(keys["image"], join(field_path, "image"), 'write an image, e.g. "python:3.11-slim"')
        if image is not None and image.startswith("azureml:"):
            check.add(keys["image"], join(field_path, "image"), "names an Azure ML registry image",
                      "name the image in a registry the Docker target can pull from")
        if "build" in keys:
            check.add(keys["build"], join(field_path, "build"), "is given together with image",
                      "give image (a base image) or build (a Dockerfile), not both")
    if not any(key in keys for key in ("image", "build", "conda_file", "pip_requirements")):
        check.add(node, field_path, "names no image, build, conda_file or pip_requirements",
                  "add one of them, or write a registered name such as training-minimal")
    if len(check.problems) > before:
        return None
    environment = Environment(name)
    if requirements is not None:
        built = check.call(keys["pip_requirements"], join(field_path, "pip_requirements"),
                           lambda: Environment.from_pip_requirements(name, requirements))
        if built is None:
            return None
        environment.python.pip_packages = built.python.pip_packages
    if conda is not None:
        environment.python.conda_dependencies = conda
    if image is not None:
        environment.docker.base_image = image
    if dockerfile is not None:
        environment.docker.base_dockerfile = dockerfile.read_text(encoding="utf-8")
        environment.docker.build_context = str(context)
    if (image is not None or dockerfile is not None) and conda is None and requirements is None:
        environment.python.user_managed_dependencies = True  # the image's Python as it is (Azure ML's rule)
    if "version" in keys:
        environment.version = check.text(keys["version"], join(field_path, "version"))

    def valid() -> bool:
        environment.validate("environment")
        return True

    return environment if check.call(node, field_path, valid) else None


def _reference(check: Checker, node: Node, field_path: str) -> str | None:
    text = str(node.value).strip()
    if text.startswith("azureml://"):
        check.add(node, field_path, f"{text!r} is an Azure ML registry environment, which has no equivalent here",
                  "register the environment here (Environment(...).register()) and name it, or define it inline")
        return None
    text = text.removeprefix("azureml:")
    name, _, version = text.partition(":")
    if "@" in name:
        name, _, label = name.partition("@")
        if label != "latest":
            check.add(node, field_path, f"the label @{label} has no equivalent here",
                      "write name@latest, name:version or the name alone (the latest version)")
            return None
    if not name:
        check.add(node, field_path, "names no environment", "write a registered or curated name, e.g. training-minimal")
        return None
    from airflow_provider.core.environments.curated import AZUREML_ALIASES

    if version and any(pattern.match(name) for pattern, _ in AZUREML_ALIASES):
        version = ""  # Azure ML's version numbers of its curated environments mean nothing here
    if check.call(node, field_path, lambda: Environment.get(name, version or None)) is None:
        return None
    return f"{name}:{version}" if version else name


def _file(check: Checker, node: Node | None, field_path: str, base_dir: Path, what: str) -> Path | None:
    """The file a value names (relative to ``base_dir``); None when not given or on problems (recorded)."""
    if node is None:
        return None
    text = check.string(node, field_path, f"write the path of {what}, relative to the job file")
    if text is None:
        return None
    path = (base_dir / Path(text).expanduser()).resolve()
    if not path.is_file():
        check.add(node, field_path, f"{str(path)!r} does not exist" if not path.exists() else
                  f"{str(path)!r} is not a file", f"write the path of {what}, relative to the job file's folder")
        return None
    return path


def _conda(check: Checker, node: Node | None, field_path: str, base_dir: Path) -> CondaDependencies | None:
    if node is None:
        return None
    if node.is_mapping:  # an inline conda specification
        text = yaml.safe_dump(node.plain(), sort_keys=False)
        return check.call(node, field_path, lambda: CondaDependencies.from_string(text))
    path = _file(check, node, field_path, base_dir, "a conda environment file")
    if path is None:
        return None
    return check.call(node, field_path, lambda: CondaDependencies.from_file(path, field="environment.conda_file"))


def _build(check: Checker, node: Node | None, field_path: str, base_dir: Path) -> tuple[Path | None, Path | None]:
    """The Dockerfile and the build context; (None, None) when not given or on problems (recorded)."""
    if node is None:
        return None, None
    keys = check.mapping(node, field_path, _BUILD_KEYS, required=("path",),
                         what="a mapping with path and dockerfile_path")
    if keys is None or "path" not in keys:
        return None, None
    text = check.string(keys["path"], join(field_path, "path"),
                        "write the build context folder, relative to the job file")
    if text is None:
        return None, None
    if text.startswith(("http://", "https://", "git+", "azureml:")):
        check.add(keys["path"], join(field_path, "path"), "is a remote build context, which has no equivalent here",
                  "give a local folder")
        return None, None
    context = (base_dir / text).resolve()
    if not context.is_dir():
        check.add(keys["path"], join(field_path, "path"), f"{str(context)!r} is not a folder",
                  "write the build context folder, relative to the job file's folder")
        return None, None
    dockerfile_text = "Dockerfile"
    if "dockerfile_path" in keys:
        dockerfile_text = check.string(keys["dockerfile_path"], join(field_path, "dockerfile_path")) or ""
        if not dockerfile_text:
            return None, None
    dockerfile = (context / dockerfile_text).resolve()
    if not dockerfile.is_file():
        check.add(keys.get("dockerfile_path", keys["path"]), join(field_path, "dockerfile_path"),
                  f"{str(dockerfile)!r} does not exist", "write the Dockerfile's path, relative to build.path")
        return None, None
    return dockerfile, context
