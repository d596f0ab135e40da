"""Real conda environments on the local target, built with py-rattler from a local file channel the
tests make (no conda channel is reachable here): solved, locked, installed once, run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Environment, Experiment, ScriptRunConfig
from airflow_provider.core.environments.conda_spec import CondaDependencies
from airflow_provider.core.targets.local import LocalTarget
from airflow_provider.core.tracking import Tags
from tests import conda_channel
from tests.helpers import make_wheel, write_script

SCRIPT = """
    import json, sys, condademo, condalib, tinypip
    print(json.dumps({"prefix": sys.prefix, "demo": condademo.__version__, "lib": condademo.LIB,
                      "pip": tinypip.VALUE}))
"""


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("rattler", reason="py-rattler (the conda extra) is not installed")
    return conda_channel.make_channel(tmp_path_factory.mktemp("conda"))


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _environment(channel: Path, tmp_path: Path, *packages: str) -> Environment:
    wheel = make_wheel(tmp_path, "tinypip", "1.0", "VALUE = 'from pip'\n")
    (tmp_path / "environment.yml").write_text(
        f"name: project_environment\nchannels:\n  - {channel.as_uri()}\ndependencies:\n  - python=3.11\n"
        + "".join(f"  - {p}\n" for p in packages) + f"  - pip:\n    - {wheel}\n")
    return Environment.from_conda_specification("real-conda", tmp_path / "environment.yml")


def test_a_conda_specification_builds_a_real_conda_environment(channel: Path, tmp_path: Path) -> None:
    environment = _environment(channel, tmp_path, "condademo")
    write_script(tmp_path / "src", SCRIPT)
    target = LocalTarget(conda="rattler")
    lines: list[str] = []
    run = Experiment("conda-real").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                          environment=environment))
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", (details, lines)
    seen = json.loads(lines[0])
    assert seen["demo"] == "1.2.3" and seen["lib"] == "2.0" and seen["pip"] == "from pip"  # the solver chose 2.0
    prefix = Path(seen["prefix"])
    assert sorted(p.name.rsplit("-", 2)[0] for p in (prefix / "conda-meta").glob("*.json")) == [
        "condademo", "condalib", "python"]
    description = MlflowClient().get_run(run.id).data.tags[Tags.ENVIRONMENT_DESCRIPTION]
    assert "conda environment" in description and "py-rattler" in description
    lock = Path(MlflowClient().download_artifacts(run.id, "environment/lock.txt", str(tmp_path))).read_text()
    assert "@EXPLICIT" in lock and "condalib-2.0-pyh0_0.conda#sha256:" in lock and "# pip: tinypip==1.0" in lock

    again = target.prepare_environment(environment)
    assert not again.built and again.python == str(prefix / "bin" / "python")


def test_the_lock_holds_until_it_is_refreshed(channel: Path, tmp_path: Path) -> None:
    environment = _environment(channel, tmp_path, "condalib")
    target = LocalTarget(conda="rattler")
    first = target.prepare_environment(environment)
    version = "import condalib; print(condalib.VERSION)"
    assert subprocess.run([first.python, "-c", version], capture_output=True, text=True).stdout.strip() == "2.0"
    conda_channel.noarch_package(channel, "condalib", "3.0", "VERSION = '3.0'\n")  # a new release appears
    conda_channel.index(channel)
    try:
        assert target.prepare_environment(environment).fingerprint == first.fingerprint, "the lock holds"
        assert environment.refresh_lock() >= 1
        newer = target.prepare_environment(environment)
        assert newer.built and newer.fingerprint != first.fingerprint
        assert subprocess.run([newer.python, "-c", version], capture_output=True, text=True).stdout.strip() == "3.0"
    finally:
        (channel / "noarch" / "condalib-3.0-pyh0_0.conda").unlink()
        conda_channel.index(channel)


def test_an_unsatisfiable_specification_names_the_package(channel: Path, tmp_path: Path) -> None:
    environment = _environment(channel, tmp_path, "condademo>=9")
    with pytest.raises(ConfigurationError) as caught:
        LocalTarget(conda="rattler").prepare_environment(environment)
    assert caught.value.field == "environment.python.conda_dependencies" and "condademo" in str(caught.value)


def test_a_local_channel_that_does_not_exist_is_refused_before_any_run(tmp_path: Path) -> None:
    environment = Environment("missing-channel")
    environment.python.conda_dependencies = CondaDependencies.create(conda_packages=["numpy"],
                                                                     channels=[str(tmp_path / "nowhere")])
    write_script(tmp_path / "src", "print('never')\n")
    experiment = Experiment("conda-missing-channel")
    with pytest.raises(ConfigurationError, match="nowhere"):
        experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", environment=environment))
    assert MlflowClient().search_runs([experiment.id]) == []


def test_from_run_rebuilds_the_same_conda_packages(channel: Path, tmp_path: Path) -> None:
    environment = _environment(channel, tmp_path, "condademo")
    write_script(tmp_path / "src", SCRIPT)
    target = LocalTarget(conda="rattler")
    run = Experiment("conda-from-run").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                              environment=environment))
    assert run.wait_for_completion()["status"] == "Completed"
    again = Environment.from_run(run.id)
    spec = again.conda_specification()
    assert spec is not None and spec.channels == [channel.as_uri()]
    assert spec.get_python_version() == ".".join(map(str, __import__("sys").version_info[:3]))
    assert sorted(spec.conda_packages) == ["condademo==1.2.3=pyh0_0", "condalib==2.0=pyh0_0"]
    assert spec.pip_packages == ["tinypip==1.0"]
