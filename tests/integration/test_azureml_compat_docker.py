"""An unchanged Azure ML v1 script in a container (real dockerd, the local base image, no registry).

The base image has only the standard library, so the script is the pure-Python ridge example and
its image is logged from a file (the matplotlib plot is tested on the local target).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import Experiment, ScriptRunConfig
from airflow_provider.core.targets.docker import DockerTarget
from airflow_provider.core.tracking import Tags
from tests.helpers import write_script

EXAMPLES = Path(__file__).resolve().parent.parent / "azureml_v1_examples"


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


@pytest.fixture
def target(docker_target: DockerTarget) -> DockerTarget:
    return docker_target


def test_a_v1_ridge_script_runs_unchanged_in_a_container(target: DockerTarget, tmp_path: Path) -> None:
    source = tmp_path / "stdlib_ridge"
    shutil.copytree(EXAMPLES / "stdlib_ridge", source)
    experiment = Experiment("v1-docker")
    config = ScriptRunConfig(source, "train.py", compute_target=target, azureml_compat=True,
                             arguments=["--output-name", "${RESULT_NAME}.json", "--run-ref", "$AZUREML_RUN_ID"],
                             environment_variables={"RESULT_NAME": "result"})
    run = experiment.submit(config)
    details = run.wait_for_completion()
    assert details["status"] == "Completed", details
    metrics = run.get_metrics()
    assert metrics["alpha"] == [0.0, 0.5, 1.0, 2.0] == metrics["alphas"]
    assert len(metrics["mse"]) == 4  # type: ignore[arg-type]
    client = MlflowClient()
    assert client.get_run(run.id).data.tags["solver"] == "closed-form"
    children = client.search_runs([experiment.id], filter_string=f"tags.`{Tags.PARENT_RUN_ID}` = '{run.id}'")
    assert sorted(c.data.tags["mlflow.runName"] for c in children) == ["alpha-0.0", "alpha-0.5", "alpha-1.0",
                                                                       "alpha-2.0"]
    assert all(c.info.status == "FINISHED" and 1.5 < c.data.metrics["weight"] <= 2.1 for c in children)
    image = run.download_file("images/pixel.png", tmp_path / "pixel.png").read_bytes()
    assert image.startswith(b"\x89PNG")
    result = json.loads(run.download_file("outputs/result.json", tmp_path / "result.json").read_text())
    assert result == {"run_ref": run.id, "run_id": run.id, "experiment": "v1-docker"}


def test_without_the_flag_a_container_run_gets_the_hint(target: DockerTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "from azureml.core import Run\n")
    run = Experiment("v1-docker-no-flag").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and "azureml_compat=True" in details["error"]["message"]
