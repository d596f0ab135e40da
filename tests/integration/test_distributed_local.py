"""Distributed runs on one node (the local target): real mpirun with mpi4py, TensorFlow-style
TF_CONFIG processes, per-rank logs and metrics, fail-fast and stop-everything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import (
    ConfigurationError,
    Experiment,
    MpiConfiguration,
    RunFailedError,
    ScriptRunConfig,
    TensorflowConfiguration,
)
from tests.conftest import skip_or_fail
from tests.helpers import pid_alive, script_metrics, wait_until, write_script
from tests.ssh_hosts import SSHHost


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


@pytest.fixture
def mpirun() -> None:
    if shutil.which("mpirun") is None:
        skip_or_fail("no mpirun (run scripts/components.sh as root: it installs openmpi-bin)")
    pytest.importorskip("mpi4py")


def _artifacts(run_id: str, folder: str) -> list[str]:
    return sorted(info.path for info in MlflowClient().list_artifacts(run_id, folder))


@pytest.mark.usefixtures("mpirun")
def test_four_mpi_ranks_allreduce_with_rank_logs_and_metrics_apart(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os
        from mpi4py import MPI
        from airflow_provider.core import Run
        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
        total = comm.allreduce(rank)
        run = Run.get_context()
        run.log("loss", 1.0 / (rank + 1))
        print(f"rank {rank} of {size}: sum {total} env {os.environ['OMPI_COMM_WORLD_RANK']}", flush=True)
    """)
    lines: list[str] = []
    run = Experiment("mpi-local").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", distributed_job_config=MpiConfiguration(process_count_per_node=4)))
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", details
    assert lines == ["rank 0 of 4: sum 6 env 0"], "the task log shows rank 0 only"
    assert _artifacts(run.id, "system_logs") == ["system_logs/driver.log"] + [
        f"system_logs/rank_{r}.log" for r in range(4)]
    rank_2 = run.download_file("system_logs/rank_2.log", tmp_path / "r2.log").read_text()
    assert rank_2 == "rank 2 of 4: sum 6 env 2\n"
    metrics = script_metrics(run.id)
    assert metrics == {"loss": 1.0, "rank_1/loss": 0.5, "rank_2/loss": pytest.approx(1 / 3), "rank_3/loss": 0.25}


@pytest.mark.usefixtures("mpirun")
def test_one_failing_rank_fails_the_run_stops_the_others_and_is_named(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    write_script(tmp_path / "src", """
        import os, sys, time
        from mpi4py import MPI
        rank = MPI.COMM_WORLD.Get_rank()
        with open(os.environ["PIDS"], "a") as out:
            out.write(f"{os.getpid()}\\n")
        if rank == 2:
            time.sleep(1)
            print("rank 2 gives up: bad shard", flush=True)
            sys.exit(5)
        time.sleep(300)
    """)
    run = Experiment("mpi-fail").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", distributed_job_config=MpiConfiguration(process_count_per_node=3),
        environment_variables={"PIDS": str(pids)}))
    with pytest.raises(RunFailedError) as caught:
        run.wait_for_completion()
    assert "rank 2 failed first (exit code 5; its log: system_logs/rank_2.log)" in str(caught.value)
    assert "rank 2 gives up: bad shard" in caught.value.log_tail, "the failing rank's tail, not rank 0's"
    for pid in map(int, pids.read_text().split()):
        wait_until(lambda pid=pid: not pid_alive(pid), timeout=15, message=f"rank process {pid} stopped")


@pytest.mark.usefixtures("mpirun")
def test_a_rank_that_crashes_after_its_script_completed_does_not_fail_the_run(tmp_path: Path) -> None:
    """gloo's "terminate called without an active exception" at interpreter shutdown, made certain:
    the script returns, then the process aborts. A crash before the script returns still fails."""
    write_script(tmp_path / "src", """
        import atexit, os, sys
        from airflow_provider.core import Run
        rank = int(os.environ["OMPI_COMM_WORLD_RANK"])
        Run.get_context().log("done", 1)
        if rank == 1 and sys.argv[1] == "at-exit":
            atexit.register(os.abort)
        if rank == 1 and sys.argv[1] == "mid-run":
            os.abort()
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py", arguments=["at-exit"],
                             distributed_job_config=MpiConfiguration(process_count_per_node=2))
    run = Experiment("mpi-teardown").submit(config)
    assert run.wait_for_completion()["status"] == "Completed"
    assert run.get_metrics()["done"] == 1.0 and run.get_metrics()["rank_1/done"] == 1.0
    log = run.download_file("system_logs/rank_1.log", tmp_path / "rank_1.log").read_text()
    assert "the script completed; the process then died of signal 6 while the interpreter shut down" in log
    crashed = Experiment("mpi-teardown").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", arguments=["mid-run"],
        distributed_job_config=MpiConfiguration(process_count_per_node=2)))
    with pytest.raises(RunFailedError, match="rank 1 failed first"):
        crashed.wait_for_completion()


@pytest.mark.usefixtures("mpirun")
def test_timeout_stops_every_rank(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    write_script(tmp_path / "src", """
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # stubborn ranks: the grace period ends in SIGKILL
        with open(os.environ["PIDS"], "a") as out:
            out.write(f"{os.getpid()}\\n")
        time.sleep(300)
    """)
    run = Experiment("mpi-timeout").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", distributed_job_config=MpiConfiguration(process_count_per_node=2),
        max_run_duration_seconds=8, environment_variables={"PIDS": str(pids)}))
    with pytest.raises(RunFailedError, match="max_run_duration_seconds=8"):
        run.wait_for_completion()
    assert len(pids.read_text().split()) == 2
    for pid in map(int, pids.read_text().split()):
        assert not pid_alive(pid), f"rank process {pid} survived the timeout"


def test_tensorflow_processes_each_get_their_tf_config(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import json, os
        from airflow_provider.core import Run
        config = json.loads(os.environ["TF_CONFIG"])
        task = config["task"]
        Run.get_context().tag("task", f"{task['type']}:{task['index']}")
        Run.get_context().tag("cluster", json.dumps(config["cluster"], sort_keys=True))
        import time
        ready = os.environ["PS_READY_FILE"]
        if task["type"] == "ps":
            open(ready, "w").close()        # tagged: the workers may end (which stops the run's ranks)
            time.sleep(300)                 # a parameter server serves until it is stopped
        for _ in range(6000):               # a worker ends only once the parameter server has tagged
            if os.path.exists(ready):
                break
            time.sleep(0.01)
        print("task", task["type"], task["index"], flush=True)
    """)
    lines: list[str] = []
    run = Experiment("tf-local").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", environment_variables={"PS_READY_FILE": str(tmp_path / "ps-ready")},
        distributed_job_config=TensorflowConfiguration(worker_count=2, parameter_server_count=1)))
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", details
    assert lines == ["task worker 0"]
    tags = MlflowClient().get_run(run.id).data.tags
    assert tags["task"] == "worker:0" and tags["rank_1/task"] == "worker:1" and tags["rank_2/task"] == "ps:0"
    cluster = json.loads(tags["cluster"])
    assert len(cluster["worker"]) == 2 and len(cluster["ps"]) == 1
    assert len(set(cluster["worker"] + cluster["ps"])) == 3, "every task has its own address"


def test_several_nodes_on_a_one_node_target_fail_before_anything_starts(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('never')\n")
    experiment = Experiment("too-many-nodes")
    with pytest.raises(ConfigurationError) as caught:
        experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py",
                                          distributed_job_config=MpiConfiguration(node_count=2)))
    assert caught.value.field == "ScriptRunConfig.distributed_job_config.node_count"
    assert "training_mpi" in str(caught.value)
    assert not MlflowClient().search_runs([experiment.id])


def test_mpi_ranks_inside_one_container(tmp_path: Path) -> None:
    """The Docker target, node_count=1: every rank in the run's one container (an image with Open MPI)."""
    from airflow_provider.core.targets.docker import DockerTarget

    target = DockerTarget(image="training-runs/mpi-host:3.11")
    try:
        target.client.images.get(target.image)
    except Exception as exc:
        skip_or_fail(f"no MPI host image (run scripts/components.sh as root): {exc}")
    write_script(tmp_path / "src", """
        import socket
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        print(f"rank {comm.Get_rank()} of {comm.Get_size()} on {socket.gethostname()}: "
              f"sum {comm.allreduce(comm.Get_rank())}", flush=True)
    """)
    run = Experiment("mpi-docker").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=target,
        distributed_job_config=MpiConfiguration(process_count_per_node=3)))
    lines: list[str] = []
    assert run.wait_for_completion(output=lines.append)["status"] == "Completed"
    assert len(lines) == 1 and lines[0].startswith("rank 0 of 3 on ") and lines[0].endswith("sum 3")
    assert _artifacts(run.id, "system_logs") == ["system_logs/driver.log"] + [
        f"system_logs/rank_{r}.log" for r in range(3)]
    assert not target.client.containers.list(all=True, filters={"label": f"training.run_id={run.id}"})


def test_an_image_without_mpirun_says_what_to_install(tmp_path: Path) -> None:
    from airflow_provider.core.targets.docker import DEFAULT_IMAGE, DockerTarget

    target = DockerTarget(image=DEFAULT_IMAGE)
    try:
        target.check()
    except Exception as exc:
        skip_or_fail(f"no Docker engine (run scripts/components.sh as root): {exc}")
    write_script(tmp_path / "src", "print('never')\n")
    run = Experiment("mpi-missing").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=target, distributed_job_config=MpiConfiguration()))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "could not start 'mpirun'" in details["error"]["message"]
    assert "install openmpi-bin" in details["error"]["message"]


def test_mpi_ranks_on_one_ssh_host(mpi_hosts: list[SSHHost], tmp_path: Path) -> None:
    """The SSH target, node_count=1: every rank on the remote host."""
    from airflow_provider.core.targets.ssh import SSHTarget
    from airflow_provider.core.targets.ssh_connection import SSHSettings

    host = mpi_hosts[0]
    target = SSHTarget(SSHSettings(host.host, host.port, host.username, key_file=str(host.key_path),
                                   host_key=host.host_public_key), work_root="/tmp/training-runs-mpi-test")
    write_script(tmp_path / "src", """
        import socket
        from mpi4py import MPI
        from airflow_provider.core import Run
        comm = MPI.COMM_WORLD
        Run.get_context().log("host_rank", comm.Get_rank())
        print(f"rank {comm.Get_rank()} of {comm.Get_size()} on {socket.gethostname()}", flush=True)
    """)
    run = Experiment("mpi-ssh").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=target,
        distributed_job_config=MpiConfiguration(process_count_per_node=2)))
    lines: list[str] = []
    assert run.wait_for_completion(output=lines.append)["status"] == "Completed"
    assert lines == ["rank 0 of 2 on mpi-1"]
    assert set(script_metrics(run.id)) == {"host_rank", "rank_1/host_rank"}


TORCH_PYTHON = Path("/var/lib/training-runs-components/torch-venv/bin/python")


def test_torchrun_two_processes_allreduce_with_gloo(tmp_path: Path) -> None:
    if not TORCH_PYTHON.exists():
        skip_or_fail(f"no torch venv at {TORCH_PYTHON} (run scripts/components.sh as root)")
    from airflow_provider.core import Environment, PyTorchConfiguration

    write_script(tmp_path / "src", """
        import os
        import torch
        import torch.distributed as dist
        from airflow_provider.core import Run
        dist.init_process_group(os.environ["TRAINING_RUNS_COMMUNICATION_BACKEND"])
        rank = dist.get_rank()
        value = torch.tensor([rank + 1.0])
        dist.all_reduce(value)
        names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK")
        seen = {name: os.environ[name] for name in names}
        Run.get_context().log("sum", value.item())
        print(f"rank {rank}: sum {value.item()} world {seen['WORLD_SIZE']} node {seen['NODE_RANK']}", flush=True)
        dist.destroy_process_group()
    """)
    environment = Environment("torch-cpu")
    environment.python.user_managed_dependencies = True
    environment.python.interpreter_path = str(TORCH_PYTHON)
    run = Experiment("torchrun-local").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", environment=environment,
        distributed_job_config=PyTorchConfiguration(process_count=2)))
    lines: list[str] = []
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", details
    assert lines[-1] == "rank 0: sum 3.0 world 2 node 0", lines  # after torchrun's own notice
    assert not any(line.startswith("rank 1") for line in lines), "rank 1 is in its own log"
    assert script_metrics(run.id) == {"sum": 3.0, "rank_1/sum": 3.0}
    assert "system_logs/rank_1.log" in _artifacts(run.id, "system_logs")


def test_a_backend_this_host_lacks_fails_before_any_process_starts(tmp_path: Path) -> None:
    if not TORCH_PYTHON.exists():
        skip_or_fail(f"no torch venv at {TORCH_PYTHON} (run scripts/components.sh as root)")
    from airflow_provider.core import Environment, PyTorchConfiguration

    marker = tmp_path / "started"
    write_script(tmp_path / "src", f"open({str(marker)!r}, 'w').close()\n")
    environment = Environment("torch-cpu")
    environment.python.user_managed_dependencies = True
    environment.python.interpreter_path = str(TORCH_PYTHON)
    run = Experiment("nccl-on-cpu").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", environment=environment,
        distributed_job_config=PyTorchConfiguration(communication_backend="nccl", process_count=2)))
    with pytest.raises(RunFailedError) as caught:
        run.wait_for_completion()
    assert "communication_backend='nccl' needs CUDA GPUs" in caught.value.log_tail
    assert "use communication_backend='gloo'" in caught.value.log_tail
    assert not marker.exists(), "no process of the run started"
    assert not any(name.startswith("system_logs/rank_") for name in run.get_file_names())
