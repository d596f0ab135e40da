"""GPUs of an MPI run across hosts: reserved on every node before ``mpirun`` starts (the first
node's supervisor holds the other nodes' reservations over ssh, as ``mpirun`` reaches them), each
rank given its node's devices, a second run waiting ``Queued`` until the first has released them on
every node, nothing left reserved afterwards. The hosts (three containers) declare two GPUs each on
the connection; no GPU is touched."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Experiment, MpiConfiguration, Resources, ScriptRunConfig
from airflow_provider.core.targets.mpi import MPITarget
from airflow_provider.hooks.compute import compute_hook_for
from tests.helpers import wait_until, write_script
from tests.ssh_hosts import SSHHost

pytestmark = pytest.mark.integration

RANK_SCRIPT = """
import os, time
from airflow_provider.core import Run
run = Run.get_context()
run.log("started", time.time())
run.log("first_device", int(os.environ["CUDA_VISIBLE_DEVICES"].split(",")[0]))
run.log("devices", len(os.environ["CUDA_VISIBLE_DEVICES"].split(",")))
time.sleep(float(os.environ.get("HOLD_SECONDS", "0")))
run.log("ended", time.time())
"""


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


@pytest.fixture
def ledger() -> str:
    return f"/tmp/mpi-gpu-reservations-{uuid.uuid4().hex[:8]}.json"


@pytest.fixture
def target(mpi_hosts: list[SSHHost], ledger: str, monkeypatch: pytest.MonkeyPatch) -> MPITarget:
    first = mpi_hosts[0]
    connection = {"conn_type": "training_mpi", "login": first.username, "port": first.port,
                  "extra": {"hosts": ",".join(f"{h.host}:1" for h in mpi_hosts[:2]), "key_file": str(first.key_path),
                            "host_key": first.host_public_key, "work_root": "/root/mpi-runs",
                            "mpirun_options": "--mca btl_tcp_if_include 172.28.0.0/24 "
                                              "--mca oob_tcp_if_include 172.28.0.0/24",
                            "gpus": "0,1", "reservations_file": ledger}}
    monkeypatch.setenv("AIRFLOW_CONN_TEST_MPI_GPUS", json.dumps(connection))
    built = compute_hook_for("test_mpi_gpus").get_target()
    assert isinstance(built, MPITarget)
    return built


def _holders(node: int, ledger: str) -> dict[str, object]:
    text = subprocess.run(["docker", "exec", f"training-runs-mpi-{node}", "cat", ledger], capture_output=True,
                          text=True, timeout=30).stdout
    return dict(json.loads(text or "{}").get("holders", {}))


def _config(source: Path, target: MPITarget, gpus: int, hold: float) -> ScriptRunConfig:
    return ScriptRunConfig(source, "train.py", compute_target=target, resources=Resources(gpus=gpus),
                           distributed_job_config=MpiConfiguration(process_count_per_node=1, node_count=2),
                           environment_variables={"HOLD_SECONDS": str(hold)}, system_metrics_interval_seconds=0)


def test_every_node_reserves_before_mpirun_and_a_second_run_waits_its_turn(target: MPITarget, ledger: str,
                                                                            tmp_path: Path) -> None:
    write_script(tmp_path / "src", RANK_SCRIPT)
    experiment = Experiment("mpi-gpus")
    first = experiment.submit(_config(tmp_path / "src", target, gpus=2, hold=8))
    wait_until(lambda: bool(_holders(1, ledger)) and bool(_holders(2, ledger)), 120,
               "the first run's reservations on both nodes")
    second = experiment.submit(_config(tmp_path / "src", target, gpus=2, hold=0))
    wait_until(lambda: second.get_status() == "Queued", 120, "the second run to wait for the GPUs")
    assert "GPUs" in MlflowClient().get_run(second.id).data.tags["training.queue_reason"]
    assert first.wait_for_completion()["status"] == "Completed"
    assert second.wait_for_completion()["status"] == "Completed"

    runs = [MlflowClient().get_run(run.id).data.metrics for run in (first, second)]
    for metrics in runs:  # every rank saw its node's two reserved GPUs
        assert metrics["devices"] == metrics["rank_1/devices"] == 2
        assert metrics["first_device"] == metrics["rank_1/first_device"] == 0
    ended = max(runs[0]["ended"], runs[0]["rank_1/ended"])
    assert min(runs[1]["started"], runs[1]["rank_1/started"]) >= ended, "the runs held the GPUs at once"
    wait_until(lambda: not _holders(1, ledger) and not _holders(2, ledger), 30, "every reservation released")
    log = second.download_file("system_logs/driver.log", str(tmp_path / "driver.log")).read_text()
    assert "reserved after waiting" in log and "on the other nodes: 172.28.0.22 GPUs 0,1" in log


def test_more_gpus_per_node_than_a_host_declares_is_refused_before_compute(target: MPITarget,
                                                                          tmp_path: Path) -> None:
    write_script(tmp_path / "src", RANK_SCRIPT)
    with pytest.raises(ConfigurationError, match=r"resources\.gpus.*declares 2"):
        Experiment("mpi-gpus-refused").submit(_config(tmp_path / "src", target, gpus=3, hold=0))
