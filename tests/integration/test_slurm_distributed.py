"""Distributed runs on the real Slurm cluster (scripts/slurm_cluster.sh): MPI ranks started by
``srun`` (or ``mpirun`` inside the allocation) on two nodes, PyTorch with one ``torchrun`` per
node, per-rank logs and metrics from every node, a failing rank and a run over its time limit
each ending with their own error and nothing left on any node."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from airflow_provider.core import (
    Experiment,
    MpiConfiguration,
    PyTorchConfiguration,
    Resources,
    RunFailedError,
    ScriptRunConfig,
    TensorflowConfiguration,
)
from airflow_provider.core.targets.slurm import SlurmTarget
from airflow_provider.core.targets.slurm_batch import SlurmDefaults
from tests.conftest import skip_or_fail
from tests.distributed_scripts import MPI_RANKS_SCRIPT, TORCH_ALLREDUCE_SCRIPT, remote_torch_environment
from tests.helpers import script_metrics, wait_until, write_script
from tests.integration.slurm_support import accounted, processes_on_nodes, slurm_target
from tests.ssh_hosts import SLURM_NODES, SSHHost


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_two_nodes_by_two_mpi_ranks(launcher: str, slurm: SlurmTarget, slurm_cluster: SSHHost,
                                    tmp_path: Path) -> None:
    target = slurm_target(slurm_cluster, slurm.login.work_root, defaults=SlurmDefaults(mpi_launcher=launcher))  # type: ignore[arg-type]
    write_script(tmp_path / "src", MPI_RANKS_SCRIPT)
    run = Experiment("slurm-mpi").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=target,
        distributed_job_config=MpiConfiguration(process_count_per_node=2, node_count=2)))
    lines: list[str] = []
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", details
    assert [line for line in lines if line.startswith("rank ")] == ["rank 0 of 4 on slurm-node-1: sum 6"], lines
    logs = {r: run.download_file(f"system_logs/rank_{r}.log", tmp_path / f"r{r}.log").read_text() for r in range(4)}
    hosts = {r: log.split(" on ")[1].split(":")[0] for r, log in logs.items()}
    assert hosts == {0: "slurm-node-1", 1: "slurm-node-1", 2: "slurm-node-2", 3: "slurm-node-2"}, logs
    metrics = script_metrics(run.id)
    assert metrics == {"rank_seen": 0.0, **{f"rank_{r}/rank_seen": float(r) for r in range(1, 4)}}
    assert accounted(slurm_cluster, run.id, "NNodes,AllocCPUS,State") == [["2", "4", "COMPLETED"]]


def test_pytorch_on_two_nodes_one_torchrun_each(slurm: SlurmTarget, tmp_path: Path) -> None:
    probe = subprocess.run(["docker", "exec", SLURM_NODES[1], "/opt/torch-venv/bin/python", "-c", "import torch"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        skip_or_fail(f"no torch on the Slurm nodes (run scripts/components.sh as root): {probe.stderr[-300:]}")
    write_script(tmp_path / "src", TORCH_ALLREDUCE_SCRIPT)
    environment = remote_torch_environment("torch-on-slurm")
    run = Experiment("slurm-torch").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=slurm, environment=environment,
        resources=Resources(memory_gb=1.25),  # per node: two processes of torch (200 MB per CPU by default)
        distributed_job_config=PyTorchConfiguration(process_count=4, node_count=2)))
    lines: list[str] = []
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", details
    # torchrun's agents may log after the script's line (an exit-barrier race of theirs): look for it.
    assert "rank 0 of 4 node 0 on slurm-node-1: sum 10.0" in lines, lines
    rank_3 = run.download_file("system_logs/rank_3.log", tmp_path / "r3.log").read_text()
    assert "rank 3 of 4 node 1 on slurm-node-2: sum 10.0" in rank_3.splitlines(), rank_3
    assert script_metrics(run.id) == {"sum": 10.0, **{f"rank_{r}/sum": 10.0 for r in (1, 2, 3)}}


def test_tensorflow_tasks_spread_over_two_nodes_each_with_its_tf_config(slurm: SlurmTarget, tmp_path: Path) -> None:
    """Two workers and a parameter server as Slurm tasks on two nodes: every task's TF_CONFIG names
    the hosts and ports of all three; the parameter server (which never ends by itself, as
    ``server.join()``) is stopped once the workers are done, and the run Completes."""
    write_script(tmp_path / "src", """
        import json, os, socket, time
        config = json.loads(os.environ["TF_CONFIG"])
        task = config["task"]
        print(f"{task['type']} {task['index']} on {socket.gethostname()}: {json.dumps(config['cluster'])}",
              flush=True)
        if task["type"] == "ps":
            while True:
                time.sleep(1)
        time.sleep(1)
    """)
    run = Experiment("slurm-tensorflow").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=slurm, resources=Resources(nodes=2),
        distributed_job_config=TensorflowConfiguration(worker_count=2, parameter_server_count=1)))
    lines: list[str] = []
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", details
    logs = [run.download_file(f"system_logs/rank_{r}.log", tmp_path / f"r{r}.log").read_text() for r in range(3)]
    seen = [log.splitlines()[0] for log in logs]
    assert [line.split(" on ")[0] for line in seen] == ["worker 0", "worker 1", "ps 0"], seen
    clusters = {line.split(": ", 1)[1] for line in seen}
    assert len(clusters) == 1, f"the tasks disagree on the cluster: {seen}"
    cluster = json.loads(clusters.pop())
    hosts = {address.split(":")[0] for addresses in cluster.values() for address in addresses}
    assert hosts == {"slurm-node-1", "slurm-node-2"} and len(cluster["worker"]) == 2 and len(cluster["ps"]) == 1
    assert {line.split(" on ")[1].split(":")[0] for line in seen} == hosts
    assert any(line.startswith("worker 0 on slurm-node-1") for line in lines), lines  # rank 0 in the task log


def test_a_failing_rank_stops_the_job_on_every_node(slurm: SlurmTarget, slurm_cluster: SSHHost,
                                                    tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import time
        from mpi4py import MPI
        rank = MPI.COMM_WORLD.Get_rank()
        if rank == 3:
            time.sleep(1)
            print("rank 3 lost its shard", flush=True)
            raise RuntimeError("shard 3 is corrupt")
        time.sleep(300)
    """)
    run = Experiment("slurm-mpi-fail").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=slurm,
        distributed_job_config=MpiConfiguration(process_count_per_node=2, node_count=2)))
    with pytest.raises(RunFailedError) as caught:
        run.wait_for_completion()
    assert "rank 3 failed first" in str(caught.value)
    assert "shard 3 is corrupt" in caught.value.log_tail
    wait_until(lambda: not processes_on_nodes(run.id), timeout=30, message="no rank left on any node")
    assert accounted(slurm_cluster, run.id, "State,ExitCode") == [["FAILED", "1:0"]]  # as the admin sees it


def test_a_run_over_its_time_limit_is_stopped_on_every_node(slurm: SlurmTarget, slurm_cluster: SSHHost,
                                                            tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import signal, time
        from mpi4py import MPI
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # stubborn: only SIGKILL ends them
        MPI.COMM_WORLD.Barrier()
        print("all ranks up", flush=True)
        time.sleep(300)
    """)
    run = Experiment("slurm-timeout").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=slurm, max_run_duration_seconds=5,
        distributed_job_config=MpiConfiguration(process_count_per_node=1, node_count=2)))
    with pytest.raises(RunFailedError, match="max_run_duration_seconds=5"):
        run.wait_for_completion()
    wait_until(lambda: not processes_on_nodes(run.id), timeout=30, message="no rank left on any node")
    assert accounted(slurm_cluster, run.id, "Timelimit") == [["00:02:00"]]  # ours first; Slurm's, the backstop


def test_ranks_over_their_memory_fail_saying_so(slurm: SlurmTarget, tmp_path: Path) -> None:
    """``slurmstepd`` kills the step of ranks over the job's memory; the supervisor survives and records
    only srun's exit code: the run's error still says it was memory."""
    write_script(tmp_path / "src", """
        import time
        from mpi4py import MPI
        MPI.COMM_WORLD.Barrier()
        held = [bytes(50 << 20) + b"x" for _ in range(12)]
        time.sleep(60)
    """)
    run = Experiment("slurm-mpi-oom").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=slurm, resources=Resources(memory_gb=0.25),
        distributed_job_config=MpiConfiguration(process_count_per_node=1, node_count=2)))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "more memory than it asked Slurm for (0.25 GiB)" in details["error"]["message"], details["error"]
    wait_until(lambda: not processes_on_nodes(run.id), timeout=30, message="no rank left on any node")
