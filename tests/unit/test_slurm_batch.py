"""What the Slurm target asks of Slurm (sbatch's arguments, the batch script) and how it reads how a
job ended without our exit record."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider.core import (
    ConfigurationError,
    MpiConfiguration,
    PyTorchConfiguration,
    Resources,
    TensorflowConfiguration,
)
from airflow_provider.core.distributed import LAUNCHER_MODULE, launch_command
from airflow_provider.core.targets.base import JobSpec
from airflow_provider.core.targets.slurm_batch import (
    SlurmDefaults,
    batch_script,
    ended_status,
    sbatch_argv,
    time_limit_minutes,
)
from airflow_provider.core.targets.slurm_layout import LAUNCH_NODE, slurm_layout
from airflow_provider.runtime.job_runner import run_exit_code


def test_sbatch_asks_for_the_runs_resources_and_the_clusters_defaults() -> None:
    argv = sbatch_argv("/shared/jobs/r1", "/shared/jobs/r1/slurm-batch.sh", "training-r1", "mlflow run r1",
                       Resources(gpus=2, gpu_type="a100", cpus=3.5, memory_gb=1.5),
                       SlurmDefaults(partition="gpu", account="ml", qos="high", sbatch_options=("--exclusive",)), 7)
    assert argv[:2] == ["sbatch", "--parsable"] and argv[-2:] == ["--exclusive", "/shared/jobs/r1/slurm-batch.sh"]
    for expected in ("--job-name=training-r1", "--comment=mlflow run r1", "--chdir=/shared/jobs/r1",
                     "--output=/shared/jobs/r1/slurm.out", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=4",
                     "--mem=1536M", "--gres=gpu:a100:2", "--partition=gpu", "--account=ml", "--qos=high", "--time=7",
                     "--no-requeue"):
        assert expected in argv, expected
    plain = sbatch_argv("/j", "/j/s.sh", "n", "c", Resources(partition="small"), SlurmDefaults(partition="gpu"), None)
    assert "--partition=small" in plain and not [a for a in plain if a.startswith(("--time", "--gres", "--mem"))]


def test_slurms_time_limit_is_a_backstop_behind_the_supervisors() -> None:
    assert time_limit_minutes(None, 10) is None
    assert time_limit_minutes(3, 10) == 2  # 3 s + 10 s grace + a minute's margin, rounded up
    assert time_limit_minutes(3600, 10) == 62


def test_the_batch_script_runs_the_setup_lines_then_the_supervisor() -> None:
    script = batch_script("/opt/py 3/bin/python", "/shared/runtime/v1", "/shared/jobs/r1", ["module load python/3.11"])
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and "set -e" in lines
    assert lines.index("module load python/3.11") < len(lines) - 1
    assert shlex.split(lines[-1]) == ["exec", "/opt/py 3/bin/python", "-I", "-S", "/shared/runtime/v1/job_runner.py",
                                      "/shared/jobs/r1", "--exit-with-run"]


def test_the_supervisor_exits_with_the_runs_code_for_slurms_accounting() -> None:
    assert run_exit_code({"exit_code": 0, "reason": "exited"}) == 0
    assert run_exit_code({"exit_code": 3, "reason": "exited"}) == 3
    assert run_exit_code({"exit_code": 256, "reason": "exited"}) == 1  # never 0 for a failure
    assert run_exit_code({"exit_code": None, "signal": 9, "reason": "exited"}) == 137
    assert run_exit_code({"exit_code": None, "signal": 15, "reason": "canceled"}) == 143
    assert run_exit_code({"exit_code": None, "signal": 15, "reason": "timeout"}) == 124
    assert run_exit_code({"exit_code": None, "reason": "launch_failed"}) == 1
    assert run_exit_code(None) == 1


def test_each_way_slurm_ends_a_job_has_its_own_message() -> None:
    oom = ended_status("FAILED", "0:9", "slurmstepd: error: StepId=4.batch exceeded memory limit", Resources(
        memory_gb=0.25), None)
    assert oom.reason == "oom" and "0.25 GiB" in oom.message and "resources.memory_gb" in oom.message
    assert ended_status("OUT_OF_MEMORY", "0:125", "", None, None).reason == "oom"
    timeout = ended_status("TIMEOUT", "0:15", "", None, 7)
    assert timeout.reason == "timeout" and "7 min" in timeout.message
    canceled = ended_status("CANCELLED by 0", "0:0", "", None, None)
    assert canceled.reason == "canceled" and "canceled" in canceled.message
    node = ended_status("NODE_FAIL", "0:0", "", None, None)
    assert node.state == "lost" and "NODE_FAIL" in node.message and "retry" in node.message
    assert "preempted" in ended_status("PREEMPTED", "0:0", "", None, None).message
    failed = ended_status("FAILED", "127:0", "line 4: module: command not found\n", None, None)
    assert failed.state == "lost" and failed.exit_code == 127 and "module: command not found" in failed.message


def _spec(config: object, resources: Resources | None = None) -> JobSpec:
    argv, env = launch_command(config, ["/env/bin/python", "train.py", "--lr", "0.1"], "/env/bin/python")  # type: ignore[arg-type]
    return JobSpec(tuple(argv), env, resources=resources)


def test_mpi_ranks_are_slurm_tasks_started_by_srun_or_by_mpirun_in_the_allocation() -> None:
    spec = _spec(MpiConfiguration(process_count_per_node=2, node_count=3), Resources(cpus=2))
    by_srun = slurm_layout(spec, "srun", ("--mpi=pmix",))
    assert (by_srun.nodes, by_srun.tasks_per_node, by_srun.cpus_per_task) == (3, 2, 2)
    rank = by_srun.argv[by_srun.argv.index("--mpi=pmix") + 1:]
    assert by_srun.argv[:2] == ("srun", "--kill-on-bad-exit=1") and rank[1:4] == ("-m", LAUNCHER_MODULE, "rank")
    assert rank[-3:] == ("train.py", "--lr", "0.1")
    by_mpirun = slurm_layout(spec, "mpirun")
    assert by_mpirun.argv[:3] == ("mpirun", "-np", "6") and by_mpirun.argv[3:] == rank
    assert "--oversubscribe" not in by_mpirun.argv  # the allocation's slots are the ranks'


def test_pytorch_on_several_nodes_is_one_torchrun_per_node_meeting_on_the_first() -> None:
    layout = slurm_layout(_spec(PyTorchConfiguration(process_count=8, node_count=2)), rendezvous_port=29999)
    assert (layout.nodes, layout.tasks_per_node, layout.cpus_per_task) == (2, 1, 4)  # a CPU per process
    node = layout.argv[layout.argv.index("torchnode") - 2:]
    assert layout.argv[:3] == ("srun", "--kill-on-bad-exit=1", "--ntasks-per-node=1")
    assert node[3:8] == ("--master", LAUNCH_NODE, "--port", "29999", "--")
    torchrun = node[node.index("torch.distributed.run") + 1:]
    assert torchrun[:6] == ("--nnodes", "2", "--nproc_per_node", "4", "--max_restarts", "0")
    assert "--standalone" not in torchrun
    one_node = slurm_layout(_spec(PyTorchConfiguration(process_count=2), Resources(cpus=6)))
    assert (one_node.nodes, one_node.cpus_per_task) == (1, 6) and "--standalone" in one_node.argv


def test_one_process_and_tensorflow_runs_take_their_shape_from_resources() -> None:
    plain = slurm_layout(JobSpec(("/env/bin/python", "train.py"), resources=Resources(nodes=2, tasks_per_node=3)))
    assert (plain.nodes, plain.tasks_per_node, plain.cpus_per_task) == (2, 3, None)
    assert plain.argv == ("/env/bin/python", "train.py")
    tensorflow = slurm_layout(_spec(TensorflowConfiguration(worker_count=2, parameter_server_count=1)))
    assert (tensorflow.nodes, tensorflow.tasks_per_node) == (1, 1) and "tensorflow" in tensorflow.argv


def test_tensorflow_on_several_nodes_is_one_srun_task_per_worker_and_server() -> None:
    config = TensorflowConfiguration(worker_count=2, parameter_server_count=1)
    spread = slurm_layout(_spec(config, Resources(nodes=2, cpus=2)))
    assert (spread.nodes, spread.tasks, spread.cpus_per_task) == (2, 3, 2)
    assert spread.argv[:3] == ("srun", "--kill-on-bad-exit=1", "--mpi=none")
    assert spread.argv[3:12] == ("/env/bin/python", "-m", LAUNCHER_MODULE, "tftask", "--workers", "2", "--ps", "1",
                                 "--")
    assert spread.argv[-3:] == ("train.py", "--lr", "0.1")
    assert "--ntasks=3" in sbatch_argv("/j", "/j/s.sh", "n", "c", None, SlurmDefaults(), None, spread)
    with pytest.raises(ConfigurationError, match=r"resources\.nodes.*more than the TensorflowConfiguration's 3"):
        slurm_layout(_spec(config, Resources(nodes=4)))


def test_an_unknown_launcher_in_the_connection_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"mpi_launcher.*'mpiexec' is not a launcher"):
        SlurmDefaults(mpi_launcher="mpiexec")  # type: ignore[arg-type]


def test_the_batch_script_names_the_supervisors_host_for_the_ranks_events() -> None:
    script = batch_script("python3", "/shared/runtime/v1", "/shared/jobs/r1", [])
    assert 'export TRAINING_RUNS_EVENTS_HOST="$(hostname)"' in script.splitlines()


@pytest.mark.parametrize(("supervisor_host", "expected"), [("another-node", "events.{host}.jsonl"),
                                                            ("{host}", "events.jsonl")])
def test_a_rank_on_another_node_writes_its_events_to_a_file_of_its_own(tmp_path: Path, supervisor_host: str,
                                                                       expected: str) -> None:
    """Appends from several machines to one file of a shared filesystem are not kept whole on NFS:
    a rank away from the supervisor's node writes to ``events.<host>.jsonl`` (merged at the end)."""
    host = os.uname().nodename
    printing = "import os; print(os.environ['TRAINING_RUN_EVENTS_FILE'])"
    environment = {**os.environ, "TRAINING_RUNS_EVENTS_HOST": supervisor_host.format(host=host),
                   "TRAINING_RUN_EVENTS_FILE": str(tmp_path / "events.jsonl"),
                   "TRAINING_RUNS_RANK_LOG_DIR": str(tmp_path / "ranks"), "TRAINING_RUNS_RANK": "0"}
    done = subprocess.run([sys.executable, "-m", "airflow_provider.runtime.rank_launcher", "rank", "--",
                           sys.executable, "-c", printing], env=environment, capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == str(tmp_path / expected.format(host=host))
