"""ScriptRunConfig, Environment and distributed configurations: every bad input names its field."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from airflow_provider.core import (
    ConfigurationError,
    Environment,
    MpiConfiguration,
    PyTorchConfiguration,
    ScriptRunConfig,
    TensorflowConfiguration,
)
from airflow_provider.core.distributed import distributed_config_from_dict
from airflow_provider.core.errors import EnvironmentNotFoundError
from tests.helpers import write_script


@pytest.fixture
def source(tmp_path: Path) -> Path:
    write_script(tmp_path / "src", "print('ok')\n")
    (tmp_path / "outside.py").write_text("print('outside')\n")
    return tmp_path / "src"


def error_of(config: ScriptRunConfig) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        config.validate()
    return caught.value


def test_a_valid_config_resolves_paths_and_renders_arguments(source: Path) -> None:
    resolved = ScriptRunConfig(source, "train.py", arguments=["--lr", 0.5, "--epochs", 3, True, Path("x")]).validate()
    assert resolved.source_directory == source.resolve()
    assert resolved.script == "train.py"
    assert resolved.argv("/py") == ["/py", "train.py", "--lr", "0.5", "--epochs", "3", "True", "x"]
    assert resolved.describe_command() == "python train.py --lr 0.5 --epochs 3 True x"


def test_numpy_and_other_numbers_are_rendered(source: Path) -> None:
    numpy = pytest.importorskip("numpy")
    resolved = ScriptRunConfig(source, "train.py", arguments=[numpy.float32(0.25), numpy.int64(4), Decimal("1.5"),
                                                              Fraction(1, 2)]).validate()
    assert resolved.arguments == ["0.25", "4", "1.5", "1/2"]


def test_absolute_script_inside_the_source_directory_is_made_relative(source: Path) -> None:
    assert ScriptRunConfig(source, source / "train.py").validate().script == "train.py"


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"source_directory": "/definitely/missing"}, "ScriptRunConfig.source_directory", "does not exist"),
        ({"script": "missing.py"}, "ScriptRunConfig.script", "does not exist"),
        ({"script": "../outside.py"}, "ScriptRunConfig.script", "outside source_directory"),
        ({"command": ["python", "train.py"]}, "ScriptRunConfig.script", "both set"),
        ({"script": None}, "ScriptRunConfig.script", "neither script nor command"),
        ({"arguments": "--lr 0.1"}, "ScriptRunConfig.arguments", "must be a list"),
        ({"arguments": ["--cfg", {"a": 1}]}, "ScriptRunConfig.arguments[1]", "cannot be a command-line argument"),
        ({"arguments": [None]}, "ScriptRunConfig.arguments[0]", "cannot be a command-line argument"),
        ({"max_run_duration_seconds": -5}, "ScriptRunConfig.max_run_duration_seconds", "must be positive"),
        ({"max_run_duration_seconds": "10"}, "ScriptRunConfig.max_run_duration_seconds", "number of seconds"),
        ({"snapshot_size_limit_mb": 0}, "ScriptRunConfig.snapshot_size_limit_mb", "must be positive"),
        ({"environment_variables": {"1BAD": "x"}}, "ScriptRunConfig.environment_variables", "not a valid"),
        ({"environment_variables": {"N": 3}}, "ScriptRunConfig.environment_variables['N']", "must be a string"),
        ({"environment": 42}, "ScriptRunConfig.environment", "must be an Environment"),
        ({"distributed_job_config": {"type": "mpi"}}, "ScriptRunConfig.distributed_job_config", "not a distributed"),
        ({"compute_target": 7}, "ScriptRunConfig.compute_target", "must be a target name"),
    ],
)
def test_bad_inputs_name_the_field_and_the_fix(source: Path, kwargs: dict[str, object], field: str,
                                               words: str) -> None:
    arguments: dict[str, object] = {"source_directory": source, "script": "train.py", **kwargs}
    error = error_of(ScriptRunConfig(**arguments))  # type: ignore[arg-type]
    assert error.field == field
    assert words in error.problem
    assert error.fix, "every error must say how to fix it"
    assert str(error).startswith(field)


def test_source_directory_that_is_a_file(source: Path) -> None:
    error = error_of(ScriptRunConfig(source / "train.py", "train.py"))
    assert error.field == "ScriptRunConfig.source_directory" and "is a file" in error.problem


def test_command_forms(source: Path) -> None:
    as_list = ScriptRunConfig(source, command=["python", "train.py", 3], arguments=["--x", 1]).validate()
    assert as_list.argv("/py") == ["python", "train.py", "3", "--x", "1"]
    as_string = ScriptRunConfig(source, command="python train.py", arguments=["a b"]).validate()
    assert as_string.argv("/py") == ["/bin/sh", "-c", "python train.py 'a b'"]
    assert error_of(ScriptRunConfig(source, command="  ")).field == "ScriptRunConfig.command"
    assert error_of(ScriptRunConfig(source, command=[])).field == "ScriptRunConfig.command"


def test_unknown_environment_name_and_version(source: Path) -> None:
    with pytest.raises(EnvironmentNotFoundError, match="no environment named 'nope'"):
        ScriptRunConfig(source, "train.py", environment="nope").validate()
    Environment("known").register()
    with pytest.raises(EnvironmentNotFoundError, match="has no version '9'") as caught:
        ScriptRunConfig(source, "train.py", environment="known:9").validate()
    assert "[1]" in caught.value.fix
    with pytest.raises(ConfigurationError, match="not a version number"):
        Environment.get("known", "latest")


def test_environment_registry_versions(tmp_path: Path) -> None:
    env = Environment("train")
    env.add_pip_package("numpy>=1.26")
    assert env.register().version == "1"
    again = Environment("train")
    again.add_pip_package("numpy>=1.26  ")
    assert again.register().version == "1", "an unchanged definition keeps its version"
    again.add_pip_package("pandas")
    assert again.register().version == "2"
    assert Environment.get("train").version == "2"
    assert Environment.get("train", 1).python.pip_packages == ["numpy>=1.26"]
    assert Environment.resolve("train:1") == Environment.get("train", "1")
    resolved = ScriptRunConfig(tmp_path, command="true", environment="train").validate()
    assert resolved.environment is not None and resolved.environment.version == "2"


def test_from_pip_requirements(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy==2.0  # pinned\n\n  scikit-learn  \n")
    env = Environment.from_pip_requirements("req", requirements)
    assert env.python.pip_packages == ["numpy==2.0", "scikit-learn"]
    assert env.kind == "pip"
    with pytest.raises(ConfigurationError) as caught:
        Environment.from_pip_requirements("req", tmp_path / "missing.txt")
    assert caught.value.field == "Environment.from_pip_requirements.file_path"
    assert "missing.txt" in caught.value.problem


def test_unreadable_requirements_path_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read requirements file"):
        Environment.from_pip_requirements("req", tmp_path)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: setattr(e, "name", "bad name!"), "environment.name"),
        (lambda e: (setattr(e.python, "user_managed_dependencies", True), e.add_pip_package("x")),
         "environment.python.user_managed_dependencies"),
        (lambda e: setattr(e.python, "interpreter_path", "/usr/bin/python3"), "environment.python.interpreter_path"),
        (lambda e: setattr(e.python, "pip_packages", "numpy"), "environment.python.pip_packages"),
        (lambda e: e.environment_variables.update({"A": 1}), "environment.environment_variables['A']"),
        (lambda e: (setattr(e.docker, "base_image", "a"), setattr(e.docker, "base_dockerfile", "FROM a")),
         "environment.docker"),
        (lambda e: setattr(e.docker, "build_context", "."), "environment.docker.build_context"),
    ],
)
def test_bad_environment_specs(change: object, field: str) -> None:
    env = Environment("ok")
    change(env)  # type: ignore[operator]
    with pytest.raises(ConfigurationError) as caught:
        env.validate()
    assert caught.value.field == field and caught.value.fix


def test_environment_round_trip_and_kinds() -> None:
    env = Environment("e")
    assert env.kind == "current"
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = "/usr/bin/python3"
    env.environment_variables["A"] = "1"
    env.docker.base_image = "python:3.11"
    assert env.kind == "user_managed"
    assert Environment.from_dict(env.to_dict()) == env
    with pytest.raises(ConfigurationError, match="unknown keys"):
        Environment.from_dict({"name": "x", "pyhton": {}})


def test_distributed_configs_validate_and_round_trip() -> None:
    for config in (MpiConfiguration(2, 3), PyTorchConfiguration("nccl", 4, 2), TensorflowConfiguration(3, 1)):
        assert distributed_config_from_dict(config.to_dict()) == config
    assert MpiConfiguration(process_count_per_node=2, node_count=3).total_processes == 6
    assert PyTorchConfiguration(process_count=4, node_count=2).processes_per_node == 2
    with pytest.raises(ConfigurationError, match=r"MpiConfiguration\.node_count"):
        MpiConfiguration(node_count=0)
    with pytest.raises(ConfigurationError, match="process_count_per_node"):
        MpiConfiguration(process_count_per_node=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="communication_backend"):
        PyTorchConfiguration(communication_backend="mpi")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="spread evenly"):
        PyTorchConfiguration(process_count=3, node_count=2)
    with pytest.raises(ConfigurationError, match="worker_count"):
        TensorflowConfiguration(worker_count=0)
    with pytest.raises(ConfigurationError, match="parameter_server_count"):
        TensorflowConfiguration(parameter_server_count=-1)
    with pytest.raises(ConfigurationError, match="unknown distribution"):
        distributed_config_from_dict({"type": "horovod"})
