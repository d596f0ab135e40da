"""What the Slurm target asks of Slurm (sbatch's arguments, the batch script) and how it reads how a
job ended without our exit record."""

from __future__ import annotations

import shlex

from airflow_provider.core import Resources
from airflow_provider.core.targets.slurm_batch import (
    SlurmDefaults,
    batch_script,
    ended_status,
    sbatch_argv,
    time_limit_minutes,
)


def test_sbatch_asks_for_the_runs_resources_and_the_clusters_defaults() -> None:
    argv = sbatch_argv("/shared/jobs/r1", "/shared/jobs/r1/slurm-batch.sh", "training-r1", "mlflow run r1",
                       Resources(gpus=2, gpu_type="a100", cpus=3.5, memory_gb=1.5),
                       SlurmDefaults(partition="gpu", account="ml", qos="high", sbatch_options=("--exclusive",)), 7)
    assert argv[:2] == ["sbatch", "--parsable"] and argv[-2:] == ["--exclusive", "/shared/jobs/r1/slurm-batch.sh"]
    for expected in ("--job-name=training-r1", "--comment=mlflow run r1", "--chdir=/shared/jobs/r1",
                     "--output=/shared/jobs/r1/slurm.out", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=4",
                     "--mem=1536M", "--gres=gpu:a100:2", "--partition=gpu", "--account=ml", "--qos=high", "--time=7"):
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
                                      "/shared/jobs/r1"]


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
