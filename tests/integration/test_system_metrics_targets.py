"""System metrics of a 20 s run on the local, Docker, SSH and MPI targets: MLflow's own
``system/...`` names, sampled on the target by the job's supervisor (and, for the other nodes of an
MPI run, by the first rank of each node, as ``system/node_<k>/...``) and relayed like the script's
metrics, at the interval the run asked for."""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import Experiment, MpiConfiguration, ScriptRunConfig
from airflow_provider.core.targets.base import ComputeTarget
from airflow_provider.core.targets.mpi import MPITarget
from airflow_provider.core.targets.ssh import SSHTarget
from airflow_provider.core.targets.ssh_connection import SSHSettings
from airflow_provider.hooks.compute import compute_hook_for
from tests.helpers import write_script
from tests.ssh_hosts import SSHHost

pytestmark = pytest.mark.integration

INTERVAL = 4.0
RUN_SECONDS = 20.0
HOST_METRICS = ("cpu_utilization_percentage", "system_memory_usage_megabytes", "system_memory_usage_percentage",
                "disk_usage_percentage", "disk_usage_megabytes", "disk_available_megabytes",
                "network_receive_megabytes", "network_transmit_megabytes")
BUSY_FOR_20_SECONDS = f"""
import time
from airflow_provider.core import Run
run = Run.get_context()
end = time.time() + {RUN_SECONDS}
step = 0
while time.time() < end:
    sum(i * i for i in range(20000))
    time.sleep(0.05)
    step += 1
run.log("steps", step)
"""


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _run(target: ComputeTarget, tmp_path: Path, **config: object) -> str:
    write_script(tmp_path / "src", BUSY_FOR_20_SECONDS)
    run = Experiment("system-metrics").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=target, system_metrics_interval_seconds=INTERVAL,
        **config))  # type: ignore[arg-type]
    assert run.wait_for_completion()["status"] == "Completed"
    return run.id


def _check_node(run_id: str, prefix: str) -> None:
    client = MlflowClient()
    metrics = client.get_run(run_id).data.metrics
    assert {f"{prefix}{name}" for name in HOST_METRICS} <= set(metrics), sorted(metrics)
    history = sorted(client.get_metric_history(run_id, f"{prefix}cpu_utilization_percentage"),
                     key=lambda m: m.step)
    # A point every INTERVAL seconds over the 20 s run (the last one at the end), no more, no less.
    assert RUN_SECONDS / INTERVAL - 1 <= len(history) <= RUN_SECONDS / INTERVAL + 2, [m.step for m in history]
    assert [m.step for m in history] == list(range(len(history)))
    gaps = [(b.timestamp - a.timestamp) / 1000 for a, b in itertools.pairwise(history[:-1])]  # the last: at the end
    assert gaps and all(INTERVAL * 0.8 <= gap <= INTERVAL * 1.5 for gap in gaps), gaps
    assert all(0 <= m.value <= 100 for m in history)
    memory = client.get_metric_history(run_id, f"{prefix}system_memory_usage_megabytes")
    assert all(m.value > 10 for m in memory)


def test_a_local_run_records_the_nodes_use_at_its_interval(tmp_path: Path) -> None:
    from airflow_provider.core.targets.local import LocalTarget

    run_id = _run(LocalTarget(), tmp_path)
    _check_node(run_id, "system/")
    assert not any(key.startswith("system/node_") for key in MlflowClient().get_run(run_id).data.metrics)
    run = Experiment("system-metrics").get_run(run_id)
    assert list(run.get_metrics()) == ["steps"]  # the script's own, as Azure ML's get_metrics
    assert "system/cpu_utilization_percentage" in run.get_metrics(include_system=True)


def test_a_docker_run_records_its_containers_use(docker_target: ComputeTarget, tmp_path: Path) -> None:
    _check_node(_run(docker_target, tmp_path), "system/")


def test_an_ssh_run_records_the_hosts_use(ssh_container: SSHHost, tmp_path: Path) -> None:
    target = SSHTarget(SSHSettings(ssh_container.host, ssh_container.port, username=ssh_container.username,
                                   key_file=str(ssh_container.key_path), host_key=ssh_container.host_public_key),
                       work_root=f"/tmp/training-runs-metrics-{uuid.uuid4().hex[:8]}")
    _check_node(_run(target, tmp_path), "system/")


def test_an_mpi_run_records_every_nodes_use(mpi_hosts: list[SSHHost], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first = mpi_hosts[0]
    connection = {"conn_type": "training_mpi", "login": first.username, "port": first.port,
                  "extra": {"hosts": ",".join(f"{h.host}:1" for h in mpi_hosts[:2]), "key_file": str(first.key_path),
                            "host_key": first.host_public_key, "work_root": "/root/mpi-runs",
                            "mpirun_options": "--mca btl_tcp_if_include 172.28.0.0/24 "
                                              "--mca oob_tcp_if_include 172.28.0.0/24"}}
    monkeypatch.setenv("AIRFLOW_CONN_TEST_MPI_METRICS", json.dumps(connection))
    target = compute_hook_for("test_mpi_metrics").get_target()
    assert isinstance(target, MPITarget)
    run_id = _run(target, tmp_path, distributed_job_config=MpiConfiguration(process_count_per_node=1, node_count=2))
    _check_node(run_id, "system/node_0/")  # the supervisor's node
    _check_node(run_id, "system/node_1/")  # the first rank of the other node
    assert not any(key.startswith("system/cpu") for key in MlflowClient().get_run(run_id).data.metrics)
