"""MPI runs across three SSH hosts (containers with their own addresses and filesystems), through
the training_mpi connection: ranks on every node, metrics and logs of every rank, fail-fast and
stop-everything on every node."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Experiment, MpiConfiguration, RunFailedError, ScriptRunConfig
from airflow_provider.core.targets.mpi import MPITarget
from airflow_provider.hooks.compute import compute_hook_for
from tests.distributed_scripts import MPI_RANKS_SCRIPT, TORCH_ALLREDUCE_SCRIPT, remote_torch_environment
from tests.helpers import script_metrics, wait_until, write_script
from tests.ssh_hosts import SSHHost

WORK_ROOT = "/root/mpi-runs"
NETWORK_OPTIONS = "--mca btl_tcp_if_include 172.28.0.0/24 --mca oob_tcp_if_include 172.28.0.0/24"


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


@pytest.fixture
def target(mpi_hosts: list[SSHHost], monkeypatch: pytest.MonkeyPatch) -> MPITarget:
    first = mpi_hosts[0]
    connection = {"conn_type": "training_mpi", "login": first.username, "port": first.port,
                  "extra": {"hosts": ",".join(f"{h.host}:2" for h in mpi_hosts), "key_file": str(first.key_path),
                            "host_key": first.host_public_key, "work_root": WORK_ROOT,
                            "mpirun_options": NETWORK_OPTIONS}}
    monkeypatch.setenv("AIRFLOW_CONN_TEST_MPI", json.dumps(connection))
    built = compute_hook_for("test_mpi").get_target()
    assert isinstance(built, MPITarget)
    return built


def _processes_in(container: str, job_dir: str) -> list[str]:
    listing = subprocess.run(
        ["docker", "exec", container, "sh", "-c",
         'for p in /proc/[0-9]*; do echo "$(readlink $p/cwd) $(tr "\\0" " " < $p/cmdline)"; done'],
        capture_output=True, text=True, timeout=30).stdout
    return [line for line in listing.splitlines() if line.startswith(job_dir)]


def _no_process_left(hosts: list[SSHHost], job_dir: str) -> bool:
    return not any(_processes_in(f"training-runs-mpi-{i + 1}", job_dir) for i in range(len(hosts)))


def test_six_ranks_across_three_hosts(target: MPITarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", MPI_RANKS_SCRIPT)
    run = Experiment("mpi-hosts").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=target,
        distributed_job_config=MpiConfiguration(process_count_per_node=2, node_count=3)))
    lines: list[str] = []
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", details
    # Only rank 0 reaches the task log live; the launcher's own notes (Open MPI may warn about a
    # process group it could not set) are diagnostics that stay in the log, so they are not compared.
    assert [line for line in lines if line.startswith("rank ")] == ["rank 0 of 6 on mpi-1: sum 15"]
    logs = {r: run.download_file(f"system_logs/rank_{r}.log", tmp_path / f"r{r}.log").read_text() for r in range(6)}
    assert {log.split(" on ")[1].split(":")[0] for log in logs.values()} == {"mpi-1", "mpi-2", "mpi-3"}
    metrics = script_metrics(run.id)
    assert metrics == {"rank_seen": 0.0, **{f"rank_{r}/rank_seen": float(r) for r in range(1, 6)}}
    assert MlflowClient().get_run(run.id).data.tags["training.target"].startswith("mpi (172.28.0.21:22")


def test_a_failing_remote_rank_stops_every_node(target: MPITarget, mpi_hosts: list[SSHHost], tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import sys, time
        from mpi4py import MPI
        rank = MPI.COMM_WORLD.Get_rank()
        if rank == 4:
            time.sleep(1)
            print("rank 4 lost its shard", flush=True)
            raise RuntimeError("shard 4 is corrupt")
        time.sleep(300)
    """)
    run = Experiment("mpi-hosts-fail").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=target,
        distributed_job_config=MpiConfiguration(process_count_per_node=2, node_count=3)))
    with pytest.raises(RunFailedError) as caught:
        run.wait_for_completion()
    assert "rank 4 failed first" in str(caught.value)
    assert "shard 4 is corrupt" in caught.value.log_tail
    job_dir = f"{WORK_ROOT}/jobs/{run.id}"
    wait_until(lambda: _no_process_left(mpi_hosts, job_dir), timeout=30, message="no rank left on any node")


def test_timeout_stops_every_rank_on_every_node(target: MPITarget, mpi_hosts: list[SSHHost], tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import signal, time
        from mpi4py import MPI
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # stubborn: only SIGKILL ends them
        MPI.COMM_WORLD.Barrier()
        print("all ranks up", flush=True)
        time.sleep(300)
    """)
    run = Experiment("mpi-hosts-timeout").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=target, max_run_duration_seconds=5,
        distributed_job_config=MpiConfiguration(process_count_per_node=2, node_count=3)))
    with pytest.raises(RunFailedError, match="max_run_duration_seconds=5"):
        run.wait_for_completion()
    job_dir = f"{WORK_ROOT}/jobs/{run.id}"
    assert _no_process_left(mpi_hosts, job_dir), "a rank survived the timeout"


def test_more_nodes_than_hosts_fail_before_anything_starts(target: MPITarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('never')\n")
    experiment = Experiment("mpi-hosts-too-many")
    with pytest.raises(ConfigurationError, match="asks for 4 nodes, but the mpi target runs on 3"):
        experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                          distributed_job_config=MpiConfiguration(node_count=4)))
    assert not MlflowClient().search_runs([experiment.id])


def test_pytorch_two_nodes_one_process_each(target: MPITarget, mpi_hosts: list[SSHHost], tmp_path: Path) -> None:
    from airflow_provider.core import PyTorchConfiguration
    from tests.conftest import skip_or_fail

    probe = subprocess.run(
        ["docker", "exec", "training-runs-mpi-2", "/opt/torch-venv/bin/python", "-c", "import torch"],
        capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        skip_or_fail(f"no torch on the MPI hosts (run scripts/components.sh as root): {probe.stderr[-300:]}")
    write_script(tmp_path / "src", TORCH_ALLREDUCE_SCRIPT)
    environment = remote_torch_environment("torch-on-hosts")
    run = Experiment("torch-hosts").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=target, environment=environment,
        distributed_job_config=PyTorchConfiguration(process_count=2, node_count=2)))
    lines: list[str] = []
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", details
    # torchrun's agents may log after the script's line (an exit-barrier race of theirs): look for it.
    assert "rank 0 of 2 node 0 on mpi-1: sum 3.0" in lines, lines
    assert not any("rank 1 of 2" in line for line in lines), lines
    rank_1 = run.download_file("system_logs/rank_1.log", tmp_path / "r1.log").read_text()
    assert "rank 1 of 2 node 1 on mpi-2: sum 3.0" in rank_1.splitlines(), rank_1
    assert script_metrics(run.id) == {"sum": 3.0, "rank_1/sum": 3.0}


def test_the_spec_rebuilds_every_node_without_secrets(mpi_hosts: list[SSHHost],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider.core.targets.ssh import SSHTarget
    from airflow_provider.core.targets.ssh_connection import SSHSettings

    nodes = [SSHTarget(SSHSettings(h.host, h.port, h.username, private_key=h.key_path.read_text(),
                                   host_key=h.host_public_key), work_root=WORK_ROOT) for h in mpi_hosts]
    target = MPITarget(nodes, [2, 2, 2], NETWORK_OPTIONS.split())
    spec = target.to_spec()
    assert "PRIVATE KEY" not in json.dumps(spec)
    for name, value in target.secret_environment().items():
        monkeypatch.setenv(name, value)
    rebuilt = MPITarget.from_spec(json.loads(json.dumps(spec)))
    rebuilt.check()
    assert [n.settings for n in rebuilt.nodes] == [n.settings for n in nodes]
    assert rebuilt.slots == [2, 2, 2] and rebuilt.mpirun_options == NETWORK_OPTIONS.split()


@pytest.fixture
def mpich_target(mpi_hosts: list[SSHHost], monkeypatch: pytest.MonkeyPatch) -> MPITarget:
    first = mpi_hosts[0]
    connection = {"conn_type": "training_mpi", "login": first.username, "port": first.port,
                  "extra": {"hosts": ",".join(h.host for h in mpi_hosts[:2]), "key_file": str(first.key_path),
                            "host_key": first.host_public_key, "work_root": WORK_ROOT, "launcher": "mpich"}}
    monkeypatch.setenv("AIRFLOW_CONN_TEST_MPICH", json.dumps(connection))
    built = compute_hook_for("test_mpich").get_target()
    assert isinstance(built, MPITarget) and built.launcher == "mpich"
    return built


def test_mpich_ranks_across_two_hosts_and_a_failing_rank_stops_them(mpich_target: MPITarget,
                                                                    mpi_hosts: list[SSHHost],
                                                                    tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os, socket, sys, time
        from airflow_provider.core import Run
        rank, size = int(os.environ["PMI_RANK"]), int(os.environ["PMI_SIZE"])
        Run.get_context().log("pmi_rank", rank)
        print(f"rank {rank} of {size} on {socket.gethostname()}", flush=True)
        if os.environ.get("FAIL_RANK") == str(rank):
            time.sleep(1)
            sys.exit(3)
        if os.environ.get("FAIL_RANK"):
            time.sleep(300)
    """)
    config = MpiConfiguration(process_count_per_node=2, node_count=2)
    run = Experiment("mpich-hosts").submit(ScriptRunConfig(tmp_path / "src", "train.py",
                                                           compute_target=mpich_target, distributed_job_config=config))
    lines: list[str] = []
    assert run.wait_for_completion(output=lines.append)["status"] == "Completed"
    assert lines == ["rank 0 of 4 on mpi-1"]
    logs = [run.download_file(f"system_logs/rank_{r}.log", tmp_path / f"r{r}").read_text() for r in range(4)]
    assert {log.split(" on ")[1].strip() for log in logs} == {"mpi-1", "mpi-2"}
    assert set(script_metrics(run.id)) == {"pmi_rank", "rank_1/pmi_rank", "rank_2/pmi_rank", "rank_3/pmi_rank"}
    failing = Experiment("mpich-hosts").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=mpich_target, distributed_job_config=config,
        environment_variables={"FAIL_RANK": "3"}))
    with pytest.raises(RunFailedError, match="rank 3 failed first"):
        failing.wait_for_completion()
    job_dir = f"{WORK_ROOT}/jobs/{failing.id}"
    wait_until(lambda: _no_process_left(mpi_hosts, job_dir), timeout=30, message="no MPICH rank left on any node")


def test_cancel_stops_every_rank_on_every_node(target: MPITarget, mpi_hosts: list[SSHHost], tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import time
        from mpi4py import MPI
        from airflow_provider.core import Run
        MPI.COMM_WORLD.Barrier()
        Run.get_context().log("up", 1)
        print("all ranks up", flush=True)
        time.sleep(300)
    """)
    run = Experiment("mpi-hosts-cancel").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=target,
        distributed_job_config=MpiConfiguration(process_count_per_node=2, node_count=3)))
    job_dir = f"{WORK_ROOT}/jobs/{run.id}"
    wait_until(lambda: all(_processes_in(f"training-runs-mpi-{i + 1}", job_dir) for i in range(3)), timeout=60,
               message="ranks running on every node")
    run.cancel()
    assert run.get_details()["status"] == "Canceled"
    assert _no_process_left(mpi_hosts, job_dir), "a rank survived the cancel"


def test_more_processes_per_node_than_a_hosts_slots_fail_before_any_rank_starts(target: MPITarget,
                                                                               tmp_path: Path) -> None:
    marker = "/tmp/training-runs-slots-test-started"
    write_script(tmp_path / "src", f"open({marker!r}, 'w').close()\n")
    experiment = Experiment("mpi-hosts-slots")
    with pytest.raises(ConfigurationError, match=r"process_count_per_node.*is 3, but 172\.28\.0\.21 has 2 slots"):
        experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                          distributed_job_config=MpiConfiguration(process_count_per_node=3)))
    (run,) = MlflowClient().search_runs([experiment.id])
    assert run.data.tags["training.state"] == "Failed", "the run records why it never started"
    probe = subprocess.run(["docker", "exec", "training-runs-mpi-1", "test", "-e", marker], timeout=30)
    assert probe.returncode != 0, "no rank started"


def test_every_host_is_checked_staged_and_cleaned_up_at_once(mpi_hosts: list[SSHHost], tmp_path: Path) -> None:
    import threading

    from airflow_provider.core.targets.ssh import SSHTarget
    from airflow_provider.core.targets.ssh_connection import SSHSettings

    timeout = 60  # a step done host after host leaves the first host waiting here, then fails
    meetings = {"check": threading.Barrier(3, timeout=timeout), "stage": threading.Barrier(3, timeout=timeout),
                "materialize": threading.Barrier(2, timeout=timeout), "cleanup": threading.Barrier(3, timeout=timeout)}

    class MeetingHost(SSHTarget):
        """A host whose steps pass only when the other hosts are at the same step at the same time."""

        def check(self) -> None:
            meetings["check"].wait()
            super().check()

        def stage(self, *args: Any, **kwargs: Any) -> Any:
            meetings["stage"].wait()
            return super().stage(*args, **kwargs)

        def materialize(self, *args: Any, **kwargs: Any) -> None:
            meetings["materialize"].wait()
            super().materialize(*args, **kwargs)

        def cleanup(self, *args: Any, **kwargs: Any) -> None:
            meetings["cleanup"].wait()
            super().cleanup(*args, **kwargs)

    nodes = [MeetingHost(SSHSettings(h.host, h.port, h.username, key_file=str(h.key_path), host_key=h.host_public_key),
                         work_root=WORK_ROOT) for h in mpi_hosts]
    write_script(tmp_path / "src", """
        from mpi4py import MPI
        print(f"sum {MPI.COMM_WORLD.allreduce(MPI.COMM_WORLD.Get_rank())}", flush=True)
    """)
    run = Experiment("mpi-hosts-at-once").submit(ScriptRunConfig(
        tmp_path / "src", "train.py", compute_target=MPITarget(nodes, [2, 2, 2], NETWORK_OPTIONS.split()),
        distributed_job_config=MpiConfiguration(process_count_per_node=2, node_count=3)))
    lines: list[str] = []
    assert run.wait_for_completion(output=lines.append)["status"] == "Completed"
    assert [line for line in lines if line.startswith("sum")] == ["sum 15"]
    assert all(meeting.n_waiting == 0 and not meeting.broken for meeting in meetings.values())
    assert _no_process_left(mpi_hosts, f"{WORK_ROOT}/jobs/{run.id}")
