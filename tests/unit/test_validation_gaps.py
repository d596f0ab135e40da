"""Issue 12, validation gaps: each bad input gives a ConfigurationError naming the field and the fix,
before any compute is used (no MLflow run created, no job started)."""

from __future__ import annotations

import ast
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider.core import ConfigurationError, Environment, Experiment, ScriptRunConfig, errors
from airflow_provider.core.hyperdrive import (
    HyperDriveConfig,
    RandomParameterSampling,
    lognormal,
    loguniform,
    normal,
    qloguniform,
    quniform,
    uniform,
)
from airflow_provider.core.hyperdrive.parameter_expressions import Quantized
from airflow_provider.runtime.events import valid_name
from airflow_provider.runtime.run_context import Run
from tests.helpers import write_script

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_provider"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    write_script(tmp_path / "src", "print('ok')\n")
    (tmp_path / "src" / "pkg").mkdir()
    return tmp_path / "src"


def _runs_in(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


def _no_compute_used(state: Path, tracking_uri: str) -> None:
    assert _runs_in(Path(tracking_uri[len("sqlite:///"):])) == 0, "an MLflow run was created"
    jobs = state / "local" / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir()), "a job was staged"


# ---------------------------------------------------------------------- requirements files
def test_requirements_file_with_non_utf8_bytes_names_the_file_and_the_line(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_bytes(b"numpy>=1.26\nscik\xefit-learn  # caf\xe9\n")
    with pytest.raises(ConfigurationError) as caught:
        Environment.from_pip_requirements("env", requirements)
    error = caught.value
    assert error.field == "Environment.from_pip_requirements.file_path"
    assert str(requirements) in error.problem and "UTF-8" in error.problem and "line 2" in error.problem
    assert "UTF-8" in error.fix


# ---------------------------------------------------------------------- pip_packages as a string
def test_pip_packages_as_a_string_in_a_dict_is_refused_not_split_into_letters() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Environment.from_dict({"name": "env", "python": {"pip_packages": "numpy"}})
    assert caught.value.field == "environment.python.pip_packages"
    assert "'numpy'" in caught.value.problem and '["numpy"]' in caught.value.fix


def test_pip_packages_as_a_string_in_a_run_config_is_refused(source: Path) -> None:
    config = ScriptRunConfig(source, "train.py", environment={"name": "env", "python": {"pip_packages": "numpy"}})
    with pytest.raises(ConfigurationError, match=r"pip_packages.*single string"):
        config.validate()


def test_pip_packages_set_to_a_string_on_an_environment_is_refused() -> None:
    env = Environment("env")
    env.python.pip_packages = "numpy"  # type: ignore[assignment]
    with pytest.raises(ConfigurationError) as caught:
        env.validate()
    assert caught.value.field == "environment.python.pip_packages"
    assert "single string" in caught.value.problem and "list" in caught.value.fix


# ---------------------------------------------------------------------- environment variables and secrets
def test_environment_variable_with_a_nul_byte_in_an_environment_is_refused() -> None:
    env = Environment("env")
    env.environment_variables = {"DSN": "a\0b"}
    with pytest.raises(ConfigurationError) as caught:
        env.validate()
    assert caught.value.field == "environment.environment_variables['DSN']" and "NUL" in caught.value.problem


@pytest.mark.parametrize("variables", ["A=1", ["A=1"], {"A": "x\0y"}])
def test_environment_variables_of_an_environment_dict_are_checked(variables: object) -> None:
    with pytest.raises(ConfigurationError, match=r"environment\.environment_variables"):
        Environment.from_dict({"name": "env", "environment_variables": variables})


@pytest.mark.parametrize(
    ("secrets", "field", "words"),
    [
        ({"1BAD": "x"}, "Experiment.submit.secret_variables", "'1BAD' is not a valid variable name"),
        ({"BAD-NAME": "x"}, "Experiment.submit.secret_variables", "not a valid variable name"),
        ({"TOKEN\n": "x"}, "Experiment.submit.secret_variables", "not a valid variable name"),
        ({"TOKEN": 424242}, "Experiment.submit.secret_variables['TOKEN']", "must be a string, got int"),
        ({"TOKEN": "ab\0cd-424242"}, "Experiment.submit.secret_variables['TOKEN']", "NUL"),
        (["TOKEN=424242"], "Experiment.submit.secret_variables", "must be a dict"),
    ],
)
def test_bad_secret_variables_are_refused_before_a_run_exists(
        source: Path, tracking_uri: str, isolated_state: Path, secrets: object, field: str, words: str) -> None:
    experiment = Experiment("secrets", tracking_uri=tracking_uri)
    with pytest.raises(ConfigurationError) as caught:
        experiment.submit(ScriptRunConfig(source, "train.py"), secret_variables=secrets)  # type: ignore[arg-type]
    assert caught.value.field == field and words in caught.value.problem
    assert "424242" not in str(caught.value), "a secret value shows in the error"
    _no_compute_used(isolated_state, tracking_uri)


def test_run_config_variable_with_a_nul_byte_is_refused_before_a_run_exists(
        source: Path, tracking_uri: str, isolated_state: Path) -> None:
    env = Environment("env")
    env.environment_variables = {"DSN": "a\0b"}
    experiment = Experiment("nul", tracking_uri=tracking_uri)
    with pytest.raises(ConfigurationError, match="NUL"):
        experiment.submit(ScriptRunConfig(source, "train.py", environment=env))
    _no_compute_used(isolated_state, tracking_uri)


# ---------------------------------------------------------------------- parameter expression bounds
@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: loguniform(0, 1000), "natural-log"),
        (lambda: qloguniform(-5, 710, 1), "natural-log"),
        (lambda: lognormal(700, 2), "natural-log"),
        (lambda: uniform(-1e308, 1e308), "finite"),
        (lambda: quniform(0, 1e308, 1e-10), "finite"),
        (lambda: normal(0, 1e308), "finite"),
    ],
)
def test_expressions_whose_draws_overflow_are_refused_when_made(make: object, words: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make()  # type: ignore[operator]
    assert words in str(caught.value)


def test_loguniform_error_names_the_expression_and_the_fix() -> None:
    with pytest.raises(ConfigurationError) as caught:
        loguniform(0, 1000)
    error = caught.value
    assert error.field == "loguniform(low=0, high=1000)"
    assert "exp(1000)" in error.problem and "natural-log bounds" in error.problem
    assert "math.log" in error.fix


def test_an_overflowing_expression_built_directly_is_refused_by_the_sampling(source: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RandomParameterSampling({"--lr": Quantized("loguniform", 0.0, 1000.0)})
    assert caught.value.field == "RandomParameterSampling.parameter_space['--lr']"
    assert "natural-log bounds" in caught.value.problem


def test_reasonable_expressions_still_sample_finite_values() -> None:
    import random

    rng = random.Random(7)
    for expression in (loguniform(-10, 709), lognormal(0, 3), uniform(-1e300, 1e300), qloguniform(0, 20, 0.5)):
        for _ in range(200):
            value = expression.sample(rng)
            assert value == value and abs(value) != float("inf")


def test_hyperdrive_config_validates_expression_bounds(source: Path) -> None:
    sampling = RandomParameterSampling({"--lr": uniform(0, 1)})
    sampling.parameter_space["--lr"] = Quantized("lognormal", 800.0, 1.0)  # changed after construction
    config = HyperDriveConfig(ScriptRunConfig(source, "train.py"), sampling, "loss", "MINIMIZE", max_total_runs=2)
    with pytest.raises(ConfigurationError, match=r"parameter_space\['--lr'\]"):
        config.validate()


# ---------------------------------------------------------------------- '$' accepts a trailing newline
@pytest.mark.parametrize("name", ["loss\n", "env\n"])
def test_names_with_a_trailing_newline_are_invalid(name: str) -> None:
    assert not valid_name(name)
    with pytest.raises(ValueError, match="cannot be stored in MLflow"):
        Run(None, None, None).log(name, 1.0)
    env = Environment(name)
    with pytest.raises(ConfigurationError, match=r"environment\.name"):
        env.validate()


def test_variable_names_with_a_trailing_newline_are_invalid(source: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a valid variable name"):
        ScriptRunConfig(source, "train.py", environment_variables={"NAME\n": "x"}).validate()


def test_primary_metric_with_a_trailing_newline_is_refused(source: Path) -> None:
    config = HyperDriveConfig(ScriptRunConfig(source, "train.py"), RandomParameterSampling({"--lr": uniform(0, 1)}),
                              "loss\n", "MINIMIZE", max_total_runs=2)
    with pytest.raises(ConfigurationError, match="primary_metric_name"):
        config.validate()


def _regex_literals() -> Iterator[tuple[str, int, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
                    and node.func.attr in ("compile", "match", "search", "fullmatch")
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                yield str(path.relative_to(PACKAGE)), node.lineno, node.args[0].value


def test_no_regex_of_the_package_anchors_with_dollar() -> None:
    patterns = list(_regex_literals())
    assert len(patterns) > 10, "the scan found the package's regexes"
    anchored = [f"{path}:{line}: {pattern}" for path, line, pattern in patterns
                if re.search(r"(?<!\\)\$", pattern)]
    assert not anchored, "'$' also matches before a trailing newline; use \\Z or re.fullmatch:\n" + "\n".join(anchored)


@pytest.mark.parametrize(
    ("module", "pattern", "text"),
    [
        ("airflow_provider.core.snapshot", "_HEX64", "a" * 64 + "\n"),
        ("airflow_provider.compat.azureml.run", "_MODEL_NAME", "model\n"),
        ("airflow_provider.compat.azureml.run", "_CHILD_ID", "child\n"),
        ("airflow_provider.hooks.docker_tls", "_HOSTNAME", "docker.example.com\n"),
        ("airflow_provider.hooks.docker_options", "_BYTES", "2g\n"),
    ],
)
def test_validating_patterns_refuse_a_trailing_newline(module: str, pattern: str, text: str) -> None:
    import importlib

    compiled = getattr(importlib.import_module(module), pattern)
    assert compiled.match(text) is None and compiled.match(text.rstrip("\n")) is not None


# ---------------------------------------------------------------------- tracking URIs
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unknown_tracking_uri_scheme_names_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Experiment("x", tracking_uri="foo://bar")
    error = caught.value
    assert error.field == "Experiment.tracking_uri" and "'foo'" in error.problem
    for scheme in ("http", "https", "sqlite", "postgresql", "file", "databricks"):
        assert scheme in error.fix


def test_unknown_scheme_in_the_environment_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "foo://bar")
    with pytest.raises(ConfigurationError) as caught:
        Experiment("x")
    assert caught.value.field == "MLFLOW_TRACKING_URI"


def test_sqlite_uri_in_a_missing_folder_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    with pytest.raises(ConfigurationError) as caught:
        Experiment("x", tracking_uri=f"sqlite:///{missing / 'x.db'}")
    assert str(missing) in caught.value.problem and "does not exist" in caught.value.problem
    assert not missing.parent.exists(), "the folders were created"


def test_sqlite_uri_in_an_existing_folder_is_accepted(tmp_path: Path) -> None:
    Experiment("x", tracking_uri=f"sqlite:///{tmp_path / 'x.db'}")
    Experiment("x", tracking_uri="postgresql+psycopg2://u@db.example.com/mlflow")
    Experiment("x", tracking_uri=str(tmp_path / "mlruns"))


def test_a_dead_tracking_server_fails_fast_saying_a_retry_may_help(source: Path, isolated_state: Path) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    experiment = Experiment("dead", tracking_uri=uri)
    start = time.monotonic()
    with pytest.raises(errors.TrackingError) as caught:
        experiment.submit(ScriptRunConfig(source, "train.py"))
    assert time.monotonic() - start < 10
    assert type(caught.value).__name__ == "TrackingUnavailableError"
    message = str(caught.value)
    assert uri in message and "unreachable" in message and "retry" in message
    assert not (isinstance(caught.value, ConfigurationError)), "a retry may help: not a configuration error"
    jobs = isolated_state / "local" / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir()), "a job was staged"


def test_a_sweep_on_a_dead_tracking_server_fails_fast_before_its_parent_run(source: Path) -> None:
    from airflow_provider.core.hyperdrive import finish_sweep, plan_sweep

    uri = f"http://127.0.0.1:{_closed_port()}"
    sampling = RandomParameterSampling({"--lr": uniform(0, 1)})
    config = HyperDriveConfig(ScriptRunConfig(source, "train.py"), sampling, "loss", "MINIMIZE", max_total_runs=2)
    start = time.monotonic()
    with pytest.raises(errors.TrackingError, match="unreachable"):
        Experiment("dead", tracking_uri=uri).submit(config)
    with pytest.raises(errors.TrackingError, match="unreachable"):
        plan_sweep(Experiment("dead", tracking_uri=uri), sampling, "loss", "MINIMIZE", max_total_runs=2)
    with pytest.raises(errors.TrackingError, match="unreachable"):
        finish_sweep(Experiment("dead", tracking_uri=uri), "0" * 32)
    assert time.monotonic() - start < 10


def test_a_tracking_server_that_never_answers_fails_within_the_probe_timeout(
        source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider.core import tracking

    monkeypatch.setattr(tracking, "TRACKING_PROBE_TIMEOUT_SECONDS", 1.0)
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(errors.TrackingError, match="unreachable"):
            Experiment("silent", tracking_uri=uri).submit(ScriptRunConfig(source, "train.py"))
        assert time.monotonic() - start < 6


# ---------------------------------------------------------------------- script="."
@pytest.mark.parametrize("script", [".", "pkg", "./pkg/"])
def test_a_script_that_is_a_folder_says_it_must_be_a_file(source: Path, script: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ScriptRunConfig(source, script).validate()
    error = caught.value
    assert error.field == "ScriptRunConfig.script"
    assert "is a folder" in error.problem and "does not exist" not in error.problem
    assert "a file inside source_directory" in error.fix
