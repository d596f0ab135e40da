"""Run details and run history as Azure ML v1 code reads them: ``get_details()`` with v1's keys and
``runDefinition``, the distribution as tags, ``Experiment.archive`` / ``reactivate`` / ``list``,
``Run.list``, ``experiment.get_runs`` and ``Run(experiment, run_id)`` from another process, and a
cancel told from a crash. Against the embedded store and a real ``mlflow server``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import (
    ConfigurationError,
    Experiment,
    Input,
    Output,
    Run,
    RunCanceledError,
    RunFailedError,
    ScriptRun,
    ScriptRunConfig,
)
from airflow_provider.core.run_definition import DEFINITION_TAG
from tests.conftest import skip_or_fail
from tests.helpers import wait_until, write_script


@pytest.fixture(autouse=True)
def _embedded_store(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


@pytest.fixture(params=["embedded", "server"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The embedded store, or a real ``mlflow server`` (experiment names are unique per test)."""
    if request.param == "server":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("mlflow_server"))
    return str(request.param)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_get_details_has_azure_ml_v1_keys_and_the_run_definition(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.csv").write_text("a,b\n1,2\n")
    write_script(tmp_path / "src", """
        import sys
        open("outputs/args.txt", "w").write(" ".join(sys.argv[1:]))
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py", arguments=["--data", "${{inputs.rows}}", "--lr", 0.1],
                             environment_variables={"MODE": "fast"}, max_run_duration_seconds=600,
                             inputs={"rows": Input(str(data))}, outputs={"model": Output(str(tmp_path / "model"))})
    run = Experiment(_name("details")).submit(config, tags={"team": "churn"})
    details = run.wait_for_completion()
    for key in ("runId", "target", "status", "startTimeUtc", "endTimeUtc", "properties", "inputDatasets",
                "outputDatasets", "logFiles", "submittedBy", "runDefinition"):
        assert key in details, key
    assert details["runId"] == run.id and details["status"] == "Completed"
    assert details["submittedBy"] and details["tags"] == {"team": "churn"}
    assert details["startTimeUtc"] <= details["endTimeUtc"]
    assert details["inputDatasets"] == [{"name": "rows", "uri": str(data), "mode": "download", "connection": None}]
    assert [(d["name"], d["mode"]) for d in details["outputDatasets"]] == [("model", "upload")]
    definition = details["runDefinition"]
    assert definition["script"] == "train.py" and definition["command"] is None
    assert definition["arguments"] == ["--data", "${{inputs.rows}}", "--lr", "0.1"]
    assert definition["framework"] == "Python" and definition["communicator"] == "None"
    assert definition["nodeCount"] == 1 and definition["maxRunDurationSeconds"] == 600
    assert definition["environmentVariables"] == {"MODE": "***"}, "names only: a value may hold a secret"
    assert definition["mpi"] == {"processCountPerNode": 1}
    assert definition["target"] == details["target"] and definition["target"].startswith("local")
    assert "system_logs/driver.log" in details["logFiles"]


def test_a_definition_too_long_for_a_tag_is_read_from_its_artifact(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "import sys\nprint(len(sys.argv) - 1)\n")
    arguments = [f"--option-{index}" for index in range(1200)]
    run = Experiment(_name("long")).submit(ScriptRunConfig(tmp_path / "src", "train.py", arguments=arguments))
    lines: list[str] = []
    details = run.wait_for_completion(output=lines.append)
    assert lines == ["1200"]
    assert json.loads(MlflowClient().get_run(run.id).data.tags[DEFINITION_TAG]) == {"artifact": "run_definition.json"}
    assert details["runDefinition"]["arguments"] == arguments


def test_the_distribution_is_recorded_as_tags_and_in_the_definition(tmp_path: Path) -> None:
    from airflow_provider.core import MpiConfiguration

    if shutil.which("mpirun") is None:
        skip_or_fail("no mpirun (run scripts/components.sh as root: it installs openmpi-bin)")
    write_script(tmp_path / "src", "print('rank')\n")
    run = Experiment(_name("mpi-tags")).submit(ScriptRunConfig(
        tmp_path / "src", "train.py", distributed_job_config=MpiConfiguration(process_count_per_node=2)))
    details = run.wait_for_completion()
    tags = MlflowClient().get_run(run.id).data.tags
    assert {key: value for key, value in tags.items() if key.startswith("training.distribution.")} == {
        "training.distribution.type": "mpi", "training.distribution.launcher": "mpirun",
        "training.distribution.node_count": "1", "training.distribution.processes_per_node": "2",
        "training.distribution.process_count": "2"}
    definition = details["runDefinition"]
    assert definition["communicator"] == "Mpi" and definition["mpi"] == {"processCountPerNode": 2}
    assert definition["launcher"] == "mpirun"


def test_the_hyperdrive_notebook_idiom_reads_the_best_trials_arguments(tmp_path: Path) -> None:
    from airflow_provider.core.hyperdrive import GridParameterSampling, HyperDriveConfig, choice

    write_script(tmp_path / "src", """
        import argparse
        from airflow_provider.core import Run
        parser = argparse.ArgumentParser()
        parser.add_argument("--lr", type=float)
        Run.get_context().log("score", parser.parse_known_args()[0].lr)
    """)
    config = HyperDriveConfig(ScriptRunConfig(tmp_path / "src", "train.py", arguments=["--epochs", "2"]),
                              GridParameterSampling({"--lr": choice(0.1, 0.3)}), "score", "MAXIMIZE",
                              max_concurrent_runs=2)
    sweep = Experiment(_name("idiom")).submit(config)
    sweep.wait_for_completion()
    best_run = sweep.get_best_run_by_primary_metric()
    assert best_run is not None
    arguments = best_run.get_details()["runDefinition"]["arguments"]
    assert arguments[:2] == ["--epochs", "2"] and arguments[arguments.index("--lr") + 1] == "0.3"


def test_archive_hides_an_experiment_and_reactivate_brings_it_back(store: str, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "import os, time\nwhile not os.path.exists(os.environ['GO']):\n"
                                   "    time.sleep(0.05)\nprint('ok')\n")
    name = _name(f"archive-{store}")
    experiment = Experiment(name)
    config = ScriptRunConfig(tmp_path / "src", "train.py", environment_variables={"GO": str(tmp_path / "go")})
    (tmp_path / "go").write_text("go")
    run = experiment.submit(config)
    run.wait_for_completion()
    deleted = experiment.submit(config)
    deleted.wait_for_completion()
    MlflowClient().delete_run(deleted.id)  # deleted by hand: archiving and reactivating keep it deleted
    (tmp_path / "go").unlink()
    live = experiment.submit(config)
    assert name in [e.name for e in Experiment.list()]

    experiment.archive()  # with a run still going: it ends and is recorded as usual
    (tmp_path / "go").write_text("go")
    assert live.wait_for_completion()["status"] == "Completed"
    assert name not in [e.name for e in Experiment.list()]
    archived = Experiment.list(experiment_name=name, view_type="ArchivedOnly")
    assert [(e.name, e.archived) for e in archived] == [(name, True)]
    assert name in [e.name for e in Experiment.list(view_type="All")]
    assert run.get_details()["status"] == "Completed", "nothing is deleted: the run reads by id"
    with pytest.raises(ConfigurationError, match=r"is archived.*reactivate"):
        Experiment(name).submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    with pytest.raises(ConfigurationError, match="view type"):
        Experiment.list(view_type="Deleted")

    renamed = _name(f"reactivated-{store}")
    Experiment(name).reactivate(new_name=renamed)
    assert renamed in [e.name for e in Experiment.list()] and name not in [e.name for e in Experiment.list()]
    assert [r.id for r in Experiment(renamed).get_runs()] == [live.id, run.id]
    assert MlflowClient().get_run(deleted.id).info.lifecycle_stage == "deleted"
    again = Experiment(renamed).submit(config)
    assert again.wait_for_completion()["status"] == "Completed"


def test_run_list_and_get_runs_filter_by_status_tags_and_type(store: str, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "import sys\nsys.exit(int(sys.argv[1]))\n")
    experiment = Experiment(_name(f"list-{store}"))
    good = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", arguments=["0"]), tags={"kind": "a"})
    good.wait_for_completion()
    bad = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", arguments=["3"]), tags={"kind": "b"})
    with pytest.raises(RunFailedError) as failure:
        bad.wait_for_completion()
    assert not isinstance(failure.value, RunCanceledError), "a crash is not a cancel"

    assert [r.id for r in experiment.get_runs()] == [bad.id, good.id], "newest first"
    assert [r.id for r in Run.list(experiment, status="Failed")] == [bad.id]
    assert [r.id for r in Run.list(experiment, tags={"kind": "a"})] == [good.id]
    assert [r.id for r in Run.list(experiment, tags="kind")] == [bad.id, good.id]
    quoted = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", arguments=["0"]),
                               tags={"owner": "O'Brien", "path": "C:\\data", "note": "", "both": "'\""})
    quoted.wait_for_completion()
    for tags in ({"owner": "O'Brien"}, {"path": "C:\\data"}, {"both": "'\""}, "note"):
        assert [r.id for r in Run.list(experiment, tags=tags)] == [quoted.id], tags
    with pytest.raises(ConfigurationError, match="tag name"):
        list(Run.list(experiment, tags={"a`b": "1"}))
    assert list(Run.list(experiment, type="sweep")) == []
    with pytest.raises(ConfigurationError, match="status"):
        list(Run.list(experiment, status="Done"))


def test_a_handle_from_another_process_reads_and_cancels_the_run(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    name = _name("handle")
    run = Experiment(name).submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    wait_until(lambda: run.get_status() == "Running", timeout=60, message="the run to start")
    same = Run(Experiment(name), run.id)
    assert isinstance(same, ScriptRun) and same.id == run.id and same.get_status() == "Running"

    program = ("import sys\nfrom airflow_provider.core import Experiment, Run\n"
               "run = Run(Experiment(sys.argv[1]), sys.argv[2])\nprint(run.get_status())\nrun.cancel()\n"
               "print(run.get_status())\n")
    done = subprocess.run([sys.executable, "-c", program, name, run.id], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Running", "Canceled"]
    with pytest.raises(RunCanceledError):
        run.wait_for_completion()
    with pytest.raises(ConfigurationError, match="not in experiment"):
        Run(Experiment(_name("other")), run.id)


def test_a_handle_in_another_state_folder_of_this_machine_reads_waits_for_and_cancels_a_local_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run started by one state folder (an Airflow worker's) is reachable from a shell using another."""
    write_script(tmp_path / "src", "import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    name = _name("elsewhere")
    run = Experiment(name).submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    wait_until(lambda: run.get_status() == "Running", timeout=60, message="the run to start")
    other = tmp_path / "other-state"
    other.mkdir()
    program = ("import sys, threading\nfrom airflow_provider.core import Experiment, Run\n"
               "handle = Run(Experiment(sys.argv[1]), sys.argv[2])\nprint(handle.get_status(), flush=True)\n"
               "waiter = Run(Experiment(sys.argv[1]), sys.argv[2])\nwaiter.handle = waiter.target = None\n"
               "seen = []\nthread = threading.Thread(target=lambda: seen.append(waiter.wait_for_completion("
               "raise_on_error=False)['status']))\nthread.start()\nhandle.cancel()\nthread.join(120)\n"
               "print(handle.get_status(), seen)\n")
    done = subprocess.run([sys.executable, "-c", program, name, run.id], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "TRAINING_RUNS_HOME": str(other)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["Running", "Canceled ['Canceled']"], done.stdout
    with pytest.raises(RunCanceledError):
        run.wait_for_completion()


def test_variable_values_and_url_credentials_never_reach_the_definition(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('ok')\n")
    config = ScriptRunConfig(tmp_path / "src", "train.py",
                             arguments=["--index", "https://user:hunter2@pypi.example/simple"],
                             environment_variables={"API_TOKEN": "t0ken", "DB_PASSWORD": "pw", "MODE": "fast",
                                                    "MIRROR": "https://me:s3cret@mirror.example/x"})
    run = Experiment(_name("secrets")).submit(config)
    run.wait_for_completion()
    tag = MlflowClient().get_run(run.id).data.tags[DEFINITION_TAG]
    for secret in ("t0ken", "hunter2", "s3cret", '"pw"'):
        assert secret not in tag, secret
    variables = run.get_details()["runDefinition"]["environmentVariables"]
    assert variables == dict.fromkeys(("API_TOKEN", "DB_PASSWORD", "MODE", "MIRROR"), "***")
