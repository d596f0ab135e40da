"""Environment definitions as Azure ML v1 users write them: conda specifications, images, Dockerfiles,
a folder committed beside the code; the platforms locks are resolved for. No builds here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider.core.environments.conda_spec import CondaDependencies
from airflow_provider.core.environments.interpreters import python_matches
from airflow_provider.core.environments.locking import TargetPlatform, forget_locks, lock_requirements
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError
from tests.helpers import make_wheel

AZURE_EXAMPLE_YML = """\
name: project_environment
dependencies:
  - python=3.11
  - scikit-learn
  - pytorch=2.1
  - pip:
    - mlflow
channels:
  - conda-forge
"""


def test_a_conda_specification_is_translated_for_hosts_without_conda(tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text(AZURE_EXAMPLE_YML)
    env = Environment.from_conda_specification("train-env", tmp_path / "environment.yml")
    env.validate()
    assert env.kind == "conda"
    assert env.required_python() == "3.11"
    assert env.requirements() == ["mlflow", "scikit-learn", "torch==2.1.*"]


def test_conda_only_packages_are_refused_by_the_translation_naming_each(tmp_path: Path) -> None:
    env = Environment("gpu")
    env.python.conda_dependencies = CondaDependencies.create(python_version="3.11",
                                                             conda_packages=["numpy", "cudatoolkit=11.8", "cudnn"])
    env.validate()  # a target with conda builds it as it is
    with pytest.raises(ConfigurationError) as caught:
        env.requirements()  # a target without conda translates it
    message = str(caught.value)
    assert "cudatoolkit" in message and "cudnn" in message and "micromamba" in message


def test_conda_file_and_object_together_are_an_error() -> None:
    env = Environment("both")
    env.python.conda_dependencies = CondaDependencies.create(conda_packages=["numpy"])
    env.python.conda_dependencies_file = "environment.yml"
    with pytest.raises(ConfigurationError, match="conda_dependencies_file"):
        env.validate()


def test_a_conda_environment_survives_to_dict_and_register(isolated_state: Path) -> None:
    env = Environment("conda-reg")
    env.python.conda_dependencies = CondaDependencies.create(python_version="3.11", conda_packages=["numpy=1.26"],
                                                             pip_packages=["six"])
    again = Environment.from_dict(json.loads(json.dumps(env.to_dict())))
    assert again == env and again.requirements() == env.requirements() == ["numpy==1.26.*", "six"]
    env.register()
    assert Environment.get("conda-reg").requirements() == ["numpy==1.26.*", "six"]
    listed = Environment.list()
    assert "conda-reg" in listed and {"training-sklearn", "AzureML-Minimal"} <= set(listed)
    plain = Environment("plain")  # definitions without the new fields keep their hash
    assert "install_from" not in json.dumps(plain.definition_hash())


def test_save_to_directory_round_trips_every_kind(tmp_path: Path) -> None:
    conda = Environment("conda-env")
    conda.python.conda_dependencies = CondaDependencies.create(python_version="3.11", conda_packages=["numpy"])
    conda.environment_variables = {"OMP_NUM_THREADS": "2"}
    built = Environment.from_dockerfile("image-env", "FROM python:3.11-slim\nRUN true\n")
    built.add_pip_package("six")
    built.python.user_managed_dependencies = False
    pip = Environment("pip-env")
    pip.add_pip_package("scikit-learn>=1.3")
    pip.python.install_from = "target"
    pip.azureml_compat = True
    for env in (conda, built, pip):
        folder = tmp_path / env.name
        env.save_to_directory(folder)
        assert Environment.load_from_directory(folder) == env, env.name
        with pytest.raises(ConfigurationError, match="overwrite=True"):
            env.save_to_directory(folder)
        env.save_to_directory(folder, overwrite=True)
    assert (tmp_path / "conda-env" / "conda_dependencies.yml").read_text().startswith("name:")
    assert (tmp_path / "image-env" / "BaseDockerfile").read_text().startswith("FROM python:3.11-slim")


def test_load_from_directory_reads_azure_ml_v1_s_own_layout(tmp_path: Path) -> None:
    (tmp_path / "conda_dependencies.yml").write_text(AZURE_EXAMPLE_YML)
    (tmp_path / "azureml_environment.json").write_text(json.dumps({
        "name": "AzureML-Tutorial", "version": "3", "environmentVariables": {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"},
        "python": {"userManagedDependencies": False, "interpreterPath": "python",
                   "condaDependenciesFile": "conda_dependencies.yml", "baseCondaEnvironment": None},
        "docker": {"enabled": False, "baseImage": "mcr.microsoft.com/azureml/openmpi3.1.2-ubuntu18.04",
                   "baseDockerfile": None, "sharedVolumes": True, "shmSize": None, "arguments": []},
        "spark": {"repositories": [], "packages": [], "precachePackages": True},
        "r": None, "inferencingStackVersion": None,
    }))
    env = Environment.load_from_directory(tmp_path)
    assert (env.name, env.version, env.kind) == ("AzureML-Tutorial", "3", "conda")
    assert env.python.interpreter_path is None  # only user-managed environments name an interpreter
    assert env.environment_variables == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}
    assert env.docker.base_image == "mcr.microsoft.com/azureml/openmpi3.1.2-ubuntu18.04"


def test_load_from_directory_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"azureml_environment\.json"):
        Environment.load_from_directory(tmp_path)
    (tmp_path / "azureml_environment.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="is not JSON"):
        Environment.load_from_directory(tmp_path)


def test_from_docker_image_without_packages_uses_the_image_python(tmp_path: Path) -> None:
    plain = Environment.from_docker_image("img", "python:3.11-slim")
    assert plain.kind == "user_managed" and plain.docker.base_image == "python:3.11-slim"
    (tmp_path / "requirements.txt").write_text("six\n")
    with_pip = Environment.from_docker_image("img", "python:3.11-slim", pip_requirements=tmp_path / "requirements.txt")
    assert with_pip.kind == "pip" and with_pip.python.pip_packages == ["six"]


def test_from_dockerfile_path_uses_its_folder_as_build_context(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\nCOPY data.txt /data.txt\n")
    env = Environment.from_dockerfile("df", tmp_path / "Dockerfile")
    assert env.docker.base_dockerfile == "FROM python:3.11-slim\nCOPY data.txt /data.txt\n"
    assert env.docker.build_context == str(tmp_path.resolve())


def test_from_existing_conda_environment_without_conda_says_how_to_export(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigurationError) as caught:
        Environment.from_existing_conda_environment("e", "myenv")
    assert "conda env export -n myenv" in str(caught.value)


def test_install_from_is_validated() -> None:
    env = Environment("bad-install-from")
    env.add_pip_package("six")
    env.python.install_from = "index"
    with pytest.raises(ConfigurationError, match='"submitter"'):
        env.validate()


@pytest.mark.parametrize(("libc", "machine", "expected"), [
    ("glibc 2.36", "x86_64", "x86_64-manylinux_2_36"),
    ("glibc 2.30", "x86_64", "x86_64-manylinux_2_28"),
    ("glibc 2.17", "aarch64", "aarch64-manylinux_2_17"),
    ("glibc 2.45", "x86_64", "x86_64-manylinux_2_40"),
    (None, "x86_64", "x86_64-unknown-linux-musl"),
    ("glibc 2.36", "arm64", "aarch64-manylinux_2_36"),
])
def test_the_platform_uv_resolves_for(libc: str | None, machine: str, expected: str) -> None:
    assert TargetPlatform.from_facts("3.11.2 (main) [GCC]", machine, libc).uv_platform() == expected


@pytest.mark.parametrize(("libc", "machine"), [("glibc 2.12", "x86_64"), ("glibc 2.36", "ppc64le")])
def test_platforms_uv_cannot_resolve_for_point_at_install_from_target(libc: str, machine: str) -> None:
    with pytest.raises(ConfigurationError, match='install_from = "target"'):
        TargetPlatform.from_facts("3.11.2", machine, libc).uv_platform()


@pytest.mark.parametrize(("required", "version", "matches"), [
    ("3.11", "3.11.2", True), ("3.11", "3.12.0", False), ("3.1", "3.11.2", False), ("3.11.*", "3.11.9", True),
    ("3.11.4", "3.11.4", True), (">=3.10", "3.11.2 (main, ...)", True), (">=3.12,<3.14", "3.11.2", False),
    (None, "3.9.1", True),
])
def test_python_version_matching(required: str | None, version: str, matches: bool) -> None:
    assert python_matches(required, version) is matches


def test_a_lock_is_kept_until_it_is_forgotten(isolated_state: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = make_wheel(tmp_path, "lockpkg", "1.0", "VALUE = 1\n")
    platform = TargetPlatform.from_facts("3.11.2", "x86_64", "glibc 2.36")
    first = lock_requirements([str(wheel)], platform)
    assert [(p.name, p.version, p.filename) for p in first.packages] == [("lockpkg", "1.0", wheel.name)]
    assert first.packages[0].local and first.requirement_lines() == [
        f"lockpkg==1.0 --hash=sha256:{first.packages[0].sha256}"]
    monkeypatch.setattr("airflow_provider.core.environments.locking.find_uv", lambda: None)
    assert lock_requirements([str(wheel)], platform) == first, "a cached lock needs no resolver"
    assert forget_locks([str(wheel)]) == 1
    with pytest.raises(ConfigurationError, match="uv"):
        lock_requirements([str(wheel)], platform)


def test_curated_environments_and_their_azure_ml_names(isolated_state: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sklearn = Environment.get("AzureML-sklearn-1.0-ubuntu20.04-py38-cpu")
    assert sklearn.azureml_compat and sklearn.kind == "pip" and sklearn.version == "1"
    assert "scikit-learn==1.7.2" in sklearn.requirements()
    plain = Environment.get("training-sklearn")
    assert not plain.azureml_compat and plain.requirements() == sklearn.requirements()
    minimal = Environment.resolve("AzureML-Minimal:1")
    assert minimal.kind == "current" and minimal.azureml_compat
    torch = Environment.get("AzureML-pytorch-1.10-ubuntu18.04-py37-cpu-inference")
    assert any(line.startswith("torch==") and line.endswith("+cpu") for line in torch.requirements())
    assert torch.version == "2" and "torch==2.13.0+cpu" in torch.requirements()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in torch.requirements()
    assert "torch==2.9.1+cpu" in Environment.get("training-pytorch-cpu", 1).requirements(), "earlier versions stay"
    monkeypatch.setenv("TRAINING_RUNS_PYTORCH_INDEX_URL", "https://mirror.example/pytorch-cpu/simple")
    mirrored = Environment.get("training-pytorch-cpu")
    assert "--extra-index-url https://mirror.example/pytorch-cpu/simple" in mirrored.requirements()
    assert not any("download.pytorch.org" in line for line in mirrored.requirements())
    monkeypatch.delenv("TRAINING_RUNS_PYTORCH_INDEX_URL")
    with pytest.raises(ConfigurationError, match="GPU"):
        Environment.get("AzureML-pytorch-1.10-ubuntu18.04-py38-cuda11-gpu")
    with pytest.raises(ConfigurationError, match=r"no version 7.*use one of 1, 2"):
        Environment.get("training-pytorch-cpu", 7)
    with pytest.raises(ConfigurationError, match="no version 7"):
        Environment.get("training-sklearn", 7)
    for env in Environment.list().values():
        env.validate()
    mine = Environment("training-sklearn")  # a registered definition shadows the curated one
    mine.add_pip_package("six")
    mine.register()
    assert Environment.get("training-sklearn").python.pip_packages == ["six"]
