"""Azure ML v1 training scripts, unchanged, on the local target: real processes, a real MLflow store.

The scripts live in ``tests/azureml_v1_examples/``; each test copies one as a source directory,
submits it with ``azureml_compat=True`` and checks what landed in MLflow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import Environment, Experiment, ScriptRunConfig
from airflow_provider.core.bookkeeping import job_record
from airflow_provider.core.relay import EventRelay
from airflow_provider.core.tracking import Tags
from tests.conftest import skip_or_fail
from tests.helpers import make_wheel, rewrite_bookkeeping, wait_until, write_script

EXAMPLES = Path(__file__).resolve().parent.parent / "azureml_v1_examples"


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def example(name: str, tmp_path: Path) -> Path:
    source = tmp_path / name
    shutil.copytree(EXAMPLES / name, source)
    return source


def artifacts(run_id: str, path: str | None = None) -> set[str]:
    client = MlflowClient()
    found: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        found |= artifacts(run_id, info.path) if info.is_dir else {info.path}
    return found


def children_of(experiment: Experiment, run_id: str) -> list[Any]:
    return MlflowClient().search_runs([experiment.id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")


def test_ridge_over_alphas_with_a_sibling_module(tmp_path: Path) -> None:
    experiment = Experiment("v1-ridge")
    run = experiment.submit(ScriptRunConfig(example("ridge", tmp_path), "train.py", azureml_compat=True))
    details = run.wait_for_completion()
    assert details["status"] == "Completed"
    metrics = run.get_metrics()
    assert metrics["alpha"] == [0.0, 0.25, 0.5, 0.75]
    assert metrics["alphas"] == [0.0, 0.25, 0.5, 0.75]
    assert len(metrics["mse"]) == 4 and all(3000 < m < 4000 for m in metrics["mse"])  # type: ignore[union-attr]
    tags = MlflowClient().get_run(run.id).data.tags
    assert tags["algorithm"] == "ridge" and tags["dataset"] == "diabetes" and tags["owner"] == "data-science"
    assert tags["framework"] == "scikit-learn"  # a property
    assert tags[Tags.AZUREML_COMPAT] == "true"
    files = artifacts(run.id)
    assert {f"outputs/ridge_{a:.2f}.pkl" for a in (0.0, 0.25, 0.5, 0.75)} <= files
    assert {"tables/results.json", "tables/coefficients.json", "best_model/model.pkl"} <= files
    results = json.loads(run.download_file("tables/results.json", tmp_path / "r.json").read_text())
    assert results["columns"] == ["alpha", "mse"] and len(results["data"]) == 4
    client = MlflowClient()
    (uploaded,) = client.search_model_versions("name = 'diabetes-ridge-uploaded'")
    assert uploaded.run_id == run.id and uploaded.source.endswith("/best_model/model.pkl")
    (from_outputs,) = client.search_model_versions("name = 'diabetes-ridge'")
    best_alpha = metrics["best_alpha"]
    assert from_outputs.run_id == run.id and from_outputs.source.endswith(f"/outputs/ridge_{best_alpha:.2f}.pkl")
    assert from_outputs.description == "best ridge model" and from_outputs.tags["alpha"] == str(best_alpha)


def test_hyperparameters_from_arguments_and_a_string_metric(tmp_path: Path) -> None:
    experiment = Experiment("v1-hyperparameters")
    config = ScriptRunConfig(
        example("hyperparameters", tmp_path), "train.py",
        arguments=["--kernel", "rbf", "--penalty", 0.5, "--data-folder", "${DATA_ROOT}/iris",
                   "--run-ref", "$AZUREML_RUN_ID"],
        environment_variables={"DATA_ROOT": "/mnt/data"}, azureml_compat=True,
    )
    run = experiment.submit(config, secret_variables={"API_TOKEN": "t0ken"})
    assert run.wait_for_completion()["status"] == "Completed"
    metrics = run.get_metrics()
    assert metrics["Penalty"] == 0.5 and 0.5 < metrics["Accuracy"] <= 1.0  # type: ignore[operator]
    assert metrics["converged"] == 1.0 and metrics["support_vectors"] > 0  # type: ignore[operator]
    tags = MlflowClient().get_run(run.id).data.tags
    assert tags["Kernel type"] == "rbf"  # a string metric becomes a tag
    assert "Kernel type" not in metrics
    seen = json.loads(run.download_file("outputs/args.json", tmp_path / "a.json").read_text())
    assert seen["data_folder"] == "/mnt/data/iris" and seen["run_ref"] == run.id == seen["run_id"]
    assert seen["env"] == {"AZUREML_RUN_ID": run.id, "AZUREML_ARM_PROJECT_NAME": "v1-hyperparameters"}
    assert seen["experiment"] == "v1-hyperparameters" and seen["parent"] is None and seen["secret"] is True
    assert "outputs/model.joblib" in artifacts(run.id)


def test_child_runs_become_nested_mlflow_runs(tmp_path: Path) -> None:
    experiment = Experiment("v1-children")
    run = experiment.submit(ScriptRunConfig(example("child_runs", tmp_path), "train.py", azureml_compat=True))
    assert run.wait_for_completion()["status"] == "Completed"
    assert run.get_metrics() == {"children": 7.0}
    children = {c.data.tags["mlflow.runName"]: c for c in children_of(experiment, run.id)}
    folds = [children[f"{run.id}_{i}"] for i in range(3)]
    for i, fold in enumerate(folds):
        assert fold.info.status == "FINISHED" and fold.data.tags["kind"] == "fold"
        assert fold.data.metrics["fold"] == i
        assert artifacts(fold.info.run_id) == {"tables/epochs.json", "notes/fold.txt"}
        assert [m.value for m in MlflowClient().get_metric_history(fold.info.run_id, "loss")] == [
            1.0 / (i + 1), 0.5 / (i + 1)]
    models = {children[f"{run.id}_{i}"].data.tags["model"]: children[f"{run.id}_{i}"] for i in (3, 4)}
    assert set(models) == {"ridge", "lasso"}
    for child in models.values():
        assert child.info.status == "FINISHED" and child.data.metrics["score"] == 0.9
        assert child.data.tags["status_text"] == "fitted"
        (nested,) = children_of(experiment, child.info.run_id)
        assert nested.info.status == "FINISHED" and nested.data.metrics["trials"] == 5
        assert nested.data.tags[Tags.CHILD_KEY] == f"{child.data.tags[Tags.CHILD_KEY]}_0"
    diverged = children["diverged"]
    assert diverged.info.status == "FAILED" and diverged.data.tags[Tags.ERROR] == "loss diverged"
    assert children["left-open"].info.status == "FINISHED"  # ended with the run's own status
    assert len(children) == 7


def test_log_image_with_a_matplotlib_plot(tmp_path: Path) -> None:
    run = Experiment("v1-plots").submit(ScriptRunConfig(example("plots", tmp_path), "train.py",
                                                        azureml_compat=True))
    assert run.wait_for_completion()["status"] == "Completed"
    assert {"images/mse_by_alpha.png", "images/residuals.png", "images/chart_from_file.png"} <= artifacts(run.id)
    image = run.download_file("images/mse_by_alpha.png", tmp_path / "plot.png").read_bytes()
    assert image.startswith(b"\x89PNG") and len(image) > 1000
    assert len(run.get_metrics()["mse"]) == 10  # type: ignore[arg-type]


def test_without_the_flag_the_error_names_it(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        from azureml.core import Run
        Run.get_context().log("alpha", 0.1)
    """)
    run = Experiment("v1-no-flag").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    message = details["error"]["message"]
    assert message.startswith("the command exited with code 1; ")
    assert "azureml_compat=True" in message and "Environment" in message and "SubmitTrainingRunOperator" in message
    assert "No module named 'azureml'" in details["error"]["logTail"]


def test_the_flag_on_the_environment_and_run_fail(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import sys
        from azureml.core import Run
        run = Run.get_context()
        run.log("loss", float("nan") if len(sys.argv) > 2 else 1.0)
        print("argv", sys.argv[1:])
        run.fail(error_details="loss is NaN", error_code="UserError")
    """)
    env = Environment("v1-flagged")
    env.azureml_compat = True
    lines: list[str] = []
    run = Experiment("v1-fail").submit(ScriptRunConfig(tmp_path / "src", "train.py", environment=env,
                                                       arguments=["$TOKEN", "${AZUREML_RUN_ID}"]),
                                       secret_variables={"TOKEN": "do-not-expand"})
    details = run.wait_for_completion(raise_on_error=False, output=lines.append)
    assert details["status"] == "Failed" and details["exitCode"] == 0
    assert details["error"]["message"] == "the script called run.fail(): loss is NaN (error code UserError)"
    assert f"argv ['$TOKEN', '{run.id}']" in lines  # secrets are never expanded into the command line


def test_a_real_azureml_core_in_the_environment_wins(tmp_path: Path) -> None:
    real_run = "class Run:\n    REAL = True\n\n    @classmethod\n    def get_context(cls):\n        return cls()\n"
    wheel = make_wheel(tmp_path, "azureml_core", "1.99.0", "", extra_files={
        "azureml/__init__.py": "", "azureml/core/__init__.py": real_run})
    env = Environment("real-azureml")
    env.python.pip_packages = [str(wheel)]
    env.azureml_compat = True
    write_script(tmp_path / "src", """
        import os
        import azureml
        from azureml.core import Run
        os.makedirs("outputs", exist_ok=True)
        open("outputs/which.txt", "w").write(
            f"real={getattr(Run, 'REAL', False)} layer={getattr(azureml, 'COMPATIBILITY_LAYER', False)}")
    """)
    run = Experiment("v1-real").submit(ScriptRunConfig(tmp_path / "src", "train.py", environment=env))
    assert run.wait_for_completion()["status"] == "Completed"
    # our azureml package was imported (it is first on the path) and deferred to the real azureml.core
    assert run.download_file("outputs/which.txt", tmp_path / "w.txt").read_text() == "real=True layer=True"


def test_replayed_child_and_model_events_create_nothing_twice(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os, time
        from azureml.core import Run
        run = Run.get_context()
        child = run.child_run(name="once")
        child.log("loss", 0.5)
        child.complete()
        run.upload_file("model/model.txt", __file__)
        run.register_model("replayed", "model/model.txt")
        os.makedirs("outputs", exist_ok=True)
        open("outputs/late.txt", "w").write("registered when ./outputs is uploaded")
        run.register_model("from-outputs", "outputs/late.txt")
        open("logged", "w").close()
        while not os.path.exists("go"):
            time.sleep(0.05)
    """)
    experiment = Experiment("v1-replay")
    run = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", azureml_compat=True))
    assert run.target is not None and run.handle is not None
    work = Path((job_record(MlflowClient().get_run(run.id).data.tags) or {})["location"]) / "work"
    wait_until(lambda: (work / "logged").exists(), timeout=60, message="the script to log")
    EventRelay(run.tracker, run.target, run.handle, run.id).pump()
    rewrite_bookkeeping(run.id, events_offset=0)  # as if the relay died before saving its offset
    replay = EventRelay(run.tracker, run.target, run.handle, run.id)
    assert replay.pump() > 0
    (work / "go").touch()
    assert run.wait_for_completion()["status"] == "Completed"
    (child,) = children_of(experiment, run.id)
    assert child.info.status == "FINISHED" and child.data.metrics["loss"] == 0.5
    assert len(MlflowClient().search_model_versions("name = 'replayed'")) == 1
    (late,) = MlflowClient().search_model_versions("name = 'from-outputs'")  # pending across relay restarts
    assert late.source.endswith("/outputs/late.txt")


def test_the_layer_needs_only_the_standard_library(tmp_path: Path) -> None:
    """The pure-Python example on a bare system interpreter (no numpy, no mlflow), as in the base image."""
    bare = Path("/usr/bin/python3")
    if not bare.exists() or subprocess.run([str(bare), "-c", "import numpy"], capture_output=True).returncode == 0:
        skip_or_fail("needs a system python3 without numpy at /usr/bin/python3 (python3 of scripts/components.sh)")
    env = Environment("bare-python")
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = str(bare)
    experiment = Experiment("v1-bare")
    run = experiment.submit(ScriptRunConfig(example("stdlib_ridge", tmp_path), "train.py", environment=env,
                                            arguments=["--output-name", "result.json", "--run-ref", "$AZUREML_RUN_ID"],
                                            azureml_compat=True))
    assert run.wait_for_completion()["status"] == "Completed"
    assert run.get_metrics()["alphas"] == [0.0, 0.5, 1.0, 2.0]
    assert len(children_of(experiment, run.id)) == 4
    assert "images/pixel.png" in artifacts(run.id)
    result = json.loads(run.download_file("outputs/result.json", tmp_path / "r.json").read_text())
    assert result == {"run_ref": run.id, "run_id": run.id, "experiment": "v1-bare"}


def test_explicit_child_ids_are_per_run(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        from azureml.core import Run
        child = Run.get_context().child_run(run_id="fold-1")
        child.log("x", 1)
        child.complete()
    """)
    experiment = Experiment("v1-explicit-ids")
    config = ScriptRunConfig(tmp_path / "src", "train.py", azureml_compat=True)
    first, second = (experiment.submit(config) for _ in range(2))
    for run in (first, second):
        run.wait_for_completion()
    (one,) = children_of(experiment, first.id)
    (two,) = children_of(experiment, second.id)
    assert one.info.run_id != two.info.run_id
    assert one.data.tags[Tags.CHILD_KEY] == two.data.tags[Tags.CHILD_KEY] == "fold-1"


def test_a_hyperdrive_sweep_of_an_unchanged_v1_script(tmp_path: Path) -> None:
    from airflow_provider.core.hyperdrive import GridParameterSampling, HyperDriveConfig, choice

    base = ScriptRunConfig(example("hyperparameters", tmp_path), "train.py", azureml_compat=True,
                           arguments=["--run-ref", "$AZUREML_RUN_ID"])
    config = HyperDriveConfig(base, GridParameterSampling({"--kernel": choice("linear", "rbf"),
                                                           "--penalty": choice(0.5, 1.0)}),
                              "Accuracy", "MAXIMIZE", max_concurrent_runs=2)
    sweep = Experiment("v1-sweep").submit(config, secret_variables={"API_TOKEN": "t"})
    details = sweep.wait_for_completion()
    assert details["status"] == "Completed" and len(details["trials"]) == 4
    best = sweep.get_best_run_by_primary_metric()
    assert best is not None
    trial = MlflowClient().get_run(best.id)
    assert trial.data.tags["Kernel type"] in ("linear", "rbf") and 0.5 < trial.data.metrics["Accuracy"] <= 1.0
    seen = json.loads(best.download_file("outputs/args.json", tmp_path / "best.json").read_text())
    assert seen["run_ref"] == best.id == seen["run_id"]  # $AZUREML_RUN_ID is the trial's own run


def test_upload_folder_and_properties_land_as_artifacts_and_tags(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os
        from azureml.core.run import Run
        run = Run.get_context()
        os.makedirs("report/figures", exist_ok=True)
        open("report/summary.txt", "w").write("ok")
        open("report/figures/a.svg", "w").write("<svg/>")
        run.upload_folder(name="reports/final", path="report")
        run.add_properties({"data_version": "2026-11", "rows": 1200})
    """)
    run = Experiment("v1-folders").submit(ScriptRunConfig(tmp_path / "src", "train.py", azureml_compat=True))
    assert run.wait_for_completion()["status"] == "Completed"
    assert {"reports/final/summary.txt", "reports/final/figures/a.svg"} <= artifacts(run.id)
    tags = MlflowClient().get_run(run.id).data.tags
    assert tags["data_version"] == "2026-11" and tags["rows"] == "1200"
