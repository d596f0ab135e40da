"""A run's arguments become MLflow params when it ends, whatever the ending: real runs on the local
target, with the test's own SQLite MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import Experiment, ScriptRunConfig
from airflow_provider.core.run_definition import DEFINITION_ARTIFACT, DEFINITION_TAG
from airflow_provider.core.tracking import _MAX_PARAM_VALUE, Tags
from tests.helpers import wait_until, write_script

# data.csv before --verbose: without the script's parser, "--verbose data.csv" reads as verbose = data.csv.
ARGUMENTS = ["--lr", "1e-3", "--epochs", "3", "data.csv", "--verbose"]
EXPECTED = {"epochs": "3", "verbose": "True", "arg_0": "data.csv"}


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _params(run_id: str) -> dict[str, str]:
    return dict(MlflowClient().get_run(run_id).data.params)


def _tags(run_id: str) -> dict[str, str]:
    return dict(MlflowClient().get_run(run_id).data.tags)


def test_completed_run_keeps_the_scripts_own_params_and_gets_the_others(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os
        import mlflow
        assert os.environ["MLFLOW_RUN_ID"]
        mlflow.log_param("lr", 0.001)  # the script's own spelling of 1e-3: MLflow never changes a param
    """)
    run = Experiment("arguments").submit(ScriptRunConfig(tmp_path / "src", "train.py", arguments=ARGUMENTS))
    details = run.wait_for_completion()
    assert details["status"] == "Completed", details
    assert _params(run.id) == {"lr": "0.001", **EXPECTED}
    tags = _tags(run.id)
    assert Tags.WARNINGS not in tags, tags.get(Tags.WARNINGS)
    assert tags[Tags.COMMAND].endswith("--lr 1e-3 --epochs 3 data.csv --verbose")


def test_failed_run_gets_its_params(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "import sys\nprint('boom')\nsys.exit(1)\n")
    run = Experiment("arguments").submit(ScriptRunConfig(tmp_path / "src", "train.py", arguments=ARGUMENTS))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and details["exitCode"] == 1, details
    assert _params(run.id) == {"lr": "1e-3", **EXPECTED}


def test_canceled_run_gets_its_params(tmp_path: Path) -> None:
    started = tmp_path / "started"
    write_script(tmp_path / "src", """
        import os, time
        open(os.environ["STARTED"], "w").write("yes")
        time.sleep(300)
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py", arguments=ARGUMENTS,
                             environment_variables={"STARTED": str(started)})
    run = Experiment("arguments").submit(config)
    wait_until(started.exists, message="the script to start")
    run.cancel()
    details = run.get_details()
    assert details["status"] == "Canceled" and details["mlflowStatus"] == "KILLED", details
    assert _params(run.id) == {"lr": "1e-3", **EXPECTED}


def test_arguments_of_a_definition_kept_as_an_artifact(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('ok')\n")
    blob = "x" * 9000  # the definition no longer fits a tag
    config = ScriptRunConfig(tmp_path / "src", "train.py", arguments=["--blob", blob, "--seed", -1, "--a=b=c"])
    run = Experiment("arguments").submit(config)
    assert run.wait_for_completion()["status"] == "Completed"
    assert DEFINITION_ARTIFACT in _tags(run.id)[DEFINITION_TAG]
    assert _params(run.id) == {"blob": blob[:_MAX_PARAM_VALUE], "seed": "-1", "a": "b=c"}


def test_a_definition_that_cannot_be_read_is_a_warning_never_a_failure(tmp_path: Path) -> None:
    write_script(tmp_path / "src", f"""
        import mlflow
        mlflow.set_tag("{DEFINITION_TAG}", "{{not json")  # a script may rewrite any tag of its run
    """)
    run = Experiment("arguments").submit(ScriptRunConfig(tmp_path / "src", "train.py", arguments=ARGUMENTS))
    assert run.wait_for_completion()["status"] == "Completed"
    assert _params(run.id) == {}
    assert _tags(run.id)[Tags.WARNINGS].startswith("1 ")
    warnings = run.download_file("system_logs/warnings.log", tmp_path / "warnings.log").read_text()
    assert "the arguments were not logged as params: JSONDecodeError" in warnings
