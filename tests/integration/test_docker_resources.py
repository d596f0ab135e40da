"""A run's ``Resources`` on the Docker target, against the real daemon: CPU, memory and shared
memory limits on the run's container (a run's own ask winning over the connection's defaults), the
memory limit enforced with an error naming it, and GPUs refused before anything is created when
the daemon has no GPU runtime (this daemon has none, as most test machines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Experiment, Resources, ScriptRunConfig
from airflow_provider.core.targets.docker import LABEL_MANAGED, LABEL_RUN_ID, DockerTarget
from tests.helpers import write_script

pytestmark = pytest.mark.integration

LIMITS_SCRIPT = """
import json, os
def read(path):
    try:
        return open(path).read().strip()
    except OSError:
        return None
st = os.statvfs("/dev/shm")
os.makedirs("outputs", exist_ok=True)
json.dump({"memory_max": read("/sys/fs/cgroup/memory.max") or read("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
           "cpu_max": read("/sys/fs/cgroup/cpu.max"), "shm_bytes": st.f_blocks * st.f_frsize},
          open("outputs/limits.json", "w"))
"""


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _container_of(run_id: str) -> Any:
    import docker

    client = docker.from_env()
    (container,) = client.containers.list(all=True, filters={"label": [f"{LABEL_RUN_ID}={run_id}"]})
    return container


def test_the_runs_resources_limit_its_container_over_the_connections_defaults(
        docker_target: DockerTarget, tmp_path: Path) -> None:
    target = DockerTarget(run_options={"mem_limit": "2g", "nano_cpus": 2_000_000_000, "shm_size": "64m"})
    write_script(tmp_path / "src", LIMITS_SCRIPT)
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                             resources=Resources(cpus=0.5, memory_gb=0.5, shm_size_gb=0.25))
    run = Experiment("docker-resources").submit(config)
    host_config = _container_of(run.id).attrs["HostConfig"]
    assert host_config["NanoCpus"] == 500_000_000
    assert host_config["Memory"] == host_config["MemorySwap"] == 512 * 1024 * 1024  # no swap past the limit
    assert host_config["ShmSize"] == 256 * 1024 * 1024
    assert run.wait_for_completion()["status"] == "Completed"
    run.download_file("outputs/limits.json", str(tmp_path / "limits.json"))
    seen = __import__("json").loads((tmp_path / "limits.json").read_text())
    assert seen["memory_max"] == str(512 * 1024 * 1024)
    assert seen["shm_bytes"] == 256 * 1024 * 1024
    if seen["cpu_max"] is not None:  # cgroup v2
        quota, period = seen["cpu_max"].split()
        assert int(quota) / int(period) == 0.5


def test_a_script_past_its_memory_limit_ends_out_of_memory_naming_the_limit(
        docker_target: DockerTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        blocks = []
        for _ in range(64):
            blocks.append(bytearray(16 * 1024 * 1024))
        print("allocated past the limit")
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=DockerTarget(),
                             resources=Resources(memory_gb=0.125))
    details = Experiment("docker-oom-resources").submit(config).wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    message = details["error"]["message"]
    assert "ran out of memory" in message and "0.125 GiB" in message and "resources.memory_gb" in message, message


def test_gpus_on_a_daemon_without_a_gpu_runtime_are_refused_before_anything_is_made(
        docker_target: DockerTarget, tmp_path: Path) -> None:
    import docker

    client = docker.from_env()
    if "nvidia" in (client.info().get("Runtimes") or {}):
        pytest.skip("this daemon has an NVIDIA runtime: the refusal cannot be seen here")
    write_script(tmp_path / "src", "print('never')\n")
    before = {c.id for c in client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=true"})}
    experiment = Experiment("docker-gpus")
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=DockerTarget(), resources=Resources(gpus=1))
    with pytest.raises(ConfigurationError) as raised:
        experiment.submit(config)
    message = str(raised.value)
    assert "ScriptRunConfig.resources.gpus" in message and "GPU runtime" in message
    assert "NVIDIA Container Toolkit" in message and not raised.value.retryable
    assert MlflowClient().search_runs([experiment.id]) == []  # refused before the run was created
    after = {c.id for c in client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=true"})}
    assert after <= before


def test_a_gpu_model_is_refused_on_docker_naming_the_field(docker_target: DockerTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('never')\n")
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=DockerTarget(),
                             resources=Resources(gpu_type="a100"))
    with pytest.raises(ConfigurationError, match=r"resources\.gpu_type"):
        Experiment("docker-gpu-type").submit(config)
