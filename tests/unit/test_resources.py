"""``Resources``: every bad value refused naming its field; a target refuses what it cannot honour,
before anything is created in MLflow or on the target."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider.core import (
    ConfigurationError,
    Experiment,
    MpiConfiguration,
    PyTorchConfiguration,
    Resources,
    ScriptRunConfig,
)
from airflow_provider.core.targets.local import LocalTarget


@pytest.mark.parametrize(("resources", "field", "words"), [
    (Resources(gpus=-1), "gpus", "0 or more"),
    (Resources(gpus=1.5), "gpus", "whole number"),  # type: ignore[arg-type]
    (Resources(gpus=True), "gpus", "whole number"),  # type: ignore[arg-type]
    (Resources(nodes=0), "nodes", "1 or more"),
    (Resources(tasks_per_node=0), "tasks_per_node", "1 or more"),
    (Resources(cpus=0), "cpus", "positive"),
    (Resources(memory_gb=float("nan")), "memory_gb", "positive"),
    (Resources(shm_size_gb=-2), "shm_size_gb", "positive"),
    (Resources(partition="gpu queue"), "partition", "a name"),
    (Resources(gpu_type="a100"), "gpu_type", "no GPUs"),
])
def test_a_bad_value_is_refused_naming_the_field(resources: Resources, field: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resources.validate("ScriptRunConfig.resources")
    assert caught.value.field == f"ScriptRunConfig.resources.{field}" and words in str(caught.value)


def test_a_templated_dict_becomes_resources_and_unknown_fields_are_refused() -> None:
    rendered = Resources.from_dict({"gpus": "2", "memory_gb": "15.5", "partition": "gpu", "cpus": None})
    assert rendered == Resources(gpus=2, memory_gb=15.5, partition="gpu")
    assert rendered.requested() == ["gpus", "memory_gb", "partition"]
    assert Resources.from_dict(rendered.to_dict()) == rendered
    with pytest.raises(ConfigurationError, match=r"resources\.gpu: is not a resource") as caught:
        Resources.from_dict({"gpu": 1})
    assert "gpus" in str(caught.value)
    with pytest.raises(ConfigurationError, match=r"resources\.gpus"):
        Resources.from_dict({"gpus": "two"}).validate()


def test_nodes_must_agree_with_the_distributed_configuration(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('x')\n")
    config = ScriptRunConfig(tmp_path, "train.py", distributed_job_config=MpiConfiguration(node_count=2),
                             resources=Resources(nodes=3))
    with pytest.raises(ConfigurationError) as caught:
        config.validate()
    assert caught.value.field == "ScriptRunConfig.resources.nodes" and "2 nodes" in str(caught.value)
    config.resources = {"nodes": 2, "tasks_per_node": 4}
    with pytest.raises(ConfigurationError) as caught:
        config.validate()
    assert caught.value.field == "ScriptRunConfig.resources.tasks_per_node" and "1 processes per node" in str(
        caught.value)
    config.distributed_job_config = MpiConfiguration(node_count=2, process_count_per_node=4)
    assert config.validate().resources == Resources(nodes=2, tasks_per_node=4)
    config.distributed_job_config = PyTorchConfiguration(node_count=2, process_count=6)
    with pytest.raises(ConfigurationError, match="starts 3 processes per node"):
        config.validate()


def test_a_target_that_cannot_honour_a_field_refuses_the_run_before_it_exists(tmp_path: Path,
                                                                            isolated_state: Path) -> None:
    (tmp_path / "train.py").write_text("print('never')\n")
    experiment = Experiment("resources-refused")
    with pytest.raises(ConfigurationError) as caught:
        experiment.submit(ScriptRunConfig(tmp_path, "train.py", compute_target=LocalTarget(),
                                          resources=Resources(shm_size_gb=1)))
    assert caught.value.field == "ScriptRunConfig.resources.shm_size_gb"
    assert "not honoured by the local target" in str(caught.value)
    with pytest.raises(ConfigurationError) as caught:  # this machine has no GPU (nvidia-smi lists none)
        experiment.submit(ScriptRunConfig(tmp_path, "train.py", compute_target=LocalTarget(),
                                          resources=Resources(gpus=1)))
    assert caught.value.field == "ScriptRunConfig.resources.gpus"
    assert "asks for 1 GPU;" in str(caught.value) and "nvidia-smi -L lists none" in str(caught.value)
    assert experiment.tracker.client.search_runs([experiment.id]) == []
