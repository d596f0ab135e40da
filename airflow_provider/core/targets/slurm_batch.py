"""What the Slurm target asks of Slurm, and how it reads Slurm's answers: plain functions.

* :func:`sbatch_argv`: the ``sbatch`` command of a job (its name, comment, resources, time limit,
  partition, account, QOS, output file and the connection's own options), and
  :func:`batch_script`, the script it runs: the connection's setup lines (``module load ...``),
  then our supervisor on the first node of the allocation;
* :func:`ended_status`: how a job ended that left no ``exit.json`` (killed over its memory,
  stopped at its time limit, canceled while pending, a node failure...), each with its own clear
  message, from ``sacct``'s state and exit code and what ``slurmstepd`` wrote in the job's output.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.resources import Resources
from airflow_provider.core.targets.base import JobStatus
from airflow_provider.core.targets.slurm_layout import MPI_LAUNCHERS, MpiLauncher, SlurmLayout
from airflow_provider.runtime import job_runner
from airflow_provider.runtime.rank_launcher import EVENTS_HOST_VARIABLE

__all__ = ["SLURM_OUTPUT", "SlurmDefaults", "batch_script", "ended_status", "sbatch_argv", "time_limit_minutes"]

SLURM_OUTPUT = "slurm.out"
"""The job folder's file for what Slurm itself writes (``slurmstepd`` messages, the script's own errors)."""
_TIME_MARGIN_SECONDS = 60.0  # our supervisor ends a run at its limit; Slurm's limit is the backstop


@dataclass(frozen=True)
class SlurmDefaults:
    """A cluster's defaults for every job (the connection's fields).

    :param partition: the partition, when a run names none.
    :param account: the account jobs are charged to.
    :param qos: the quality of service.
    :param sbatch_options: more ``sbatch`` arguments, as they are.
    :param setup: shell lines run before the job (``module load python/3.11``).
    :param mpi_launcher: what starts MPI ranks: ``srun`` (Slurm's PMI) or ``mpirun`` inside the allocation.
    :param srun_options: more ``srun`` arguments for the ranks (``--mpi=pmix``).
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_options: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    mpi_launcher: MpiLauncher = "srun"
    srun_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mpi_launcher not in MPI_LAUNCHERS:
            raise ConfigurationError("training_slurm connection extra.mpi_launcher",
                                     f"{self.mpi_launcher!r} is not a launcher.", "use srun or mpirun.")


def time_limit_minutes(max_run_duration_seconds: float | None, grace_seconds: float) -> int | None:
    """Slurm's ``--time`` for a run limit: its minutes rounded up, with the grace period and a margin
    (our supervisor stops the run first, with a clear error; Slurm's limit only catches a stuck one).

    :param max_run_duration_seconds: the run's limit (None: the partition's).
    :param grace_seconds: the time between SIGTERM and SIGKILL.
    """
    if max_run_duration_seconds is None:
        return None
    return max(1, math.ceil((max_run_duration_seconds + grace_seconds + _TIME_MARGIN_SECONDS) / 60))


def sbatch_argv(job_dir: str, script: str, job_name: str, comment: str, resources: Resources | None,
                defaults: SlurmDefaults, minutes: int | None, layout: SlurmLayout | None = None) -> list[str]:
    """The ``sbatch`` command that queues a job.

    :param job_dir: the job folder (the job's working folder; Slurm's output goes to :data:`SLURM_OUTPUT`).
    :param script: the batch script's path.
    :param job_name: the job's name (what ``squeue`` shows).
    :param comment: the job's comment (what ``sacct -o Comment`` shows).
    :param resources: what the run asks for.
    :param defaults: the cluster's defaults.
    :param minutes: the time limit (see :func:`time_limit_minutes`).
    :param layout: the nodes, tasks and CPUs per task (None: from ``resources``, for one process).
    """
    resources = resources or Resources()
    if layout is None:
        layout = SlurmLayout(resources.nodes or 1, resources.tasks_per_node or 1,
                             None if resources.cpus is None else math.ceil(resources.cpus), ())
    # --no-requeue: a job Slurm requeued (node failure, preemption) would run the script a second time
    # in a folder whose first ending may already be recorded; it ends NODE_FAIL or PREEMPTED instead,
    # and Airflow's retry makes the new run.
    argv = ["sbatch", "--parsable", f"--job-name={job_name}", f"--comment={comment}", f"--chdir={job_dir}",
            f"--output={job_dir}/{SLURM_OUTPUT}", "--open-mode=append", "--no-requeue"]
    argv.append(f"--nodes={layout.nodes}")
    argv.append(f"--ntasks={layout.tasks}" if layout.tasks else f"--ntasks-per-node={layout.tasks_per_node}")
    if layout.cpus_per_task is not None:
        argv.append(f"--cpus-per-task={layout.cpus_per_task}")
    if resources.memory_gb is not None:
        argv.append(f"--mem={math.ceil(resources.memory_gb * 1024)}M")
    if resources.gpus:
        argv.append(f"--gres=gpu:{resources.gpu_type + ':' if resources.gpu_type else ''}{resources.gpus}")
    partition = resources.partition or defaults.partition
    for option, value in (("partition", partition), ("account", defaults.account), ("qos", defaults.qos)):
        if value:
            argv.append(f"--{option}={value}")
    if minutes is not None:
        argv.append(f"--time={minutes}")
    return [*argv, *defaults.sbatch_options, script]


def batch_script(python: str, runtime_dir: str, job_dir: str, setup: Sequence[str]) -> str:
    """The script ``sbatch`` runs on the allocation's first node: the setup lines, then the supervisor,
    which exits with the run's code (``sacct`` shows a failed run ``FAILED``).

    :param python: the interpreter that runs the supervisor.
    :param runtime_dir: where the supervisor's file is (the shared root's runtime folder).
    :param job_dir: the job folder.
    :param setup: shell lines run first (``module load ...``); a failing one fails the job.
    """
    supervisor = f"{runtime_dir}/job_runner.py"
    lines = ["#!/bin/bash", "# Written by the training-runs Slurm target: the supervisor of one run.", "set -e",
             # ranks on other nodes write their events to files of their own (merged at the end)
             f'export {EVENTS_HOST_VARIABLE}="$(hostname)"', *setup,
             f"exec {shlex.quote(python)} -I -S {shlex.quote(supervisor)} {shlex.quote(job_dir)} "
             f"{job_runner.EXIT_WITH_RUN}"]
    return "\n".join(lines) + "\n"


def ended_status(state: str, exit_code: str, output_tail: str, resources: Resources | None,
                 minutes: int | None) -> JobStatus:
    """How a job ended that left no ``exit.json``, from ``sacct``.

    :param state: ``sacct``'s State (``FAILED``, ``TIMEOUT``, ``CANCELLED by 0``, ...).
    :param exit_code: ``sacct``'s ExitCode (``code:signal``).
    :param output_tail: the end of the job's Slurm output (``slurmstepd``'s messages).
    :param resources: what the run asked for (its memory, for the message).
    :param minutes: the job's time limit.
    """
    code_text, _, signal_text = exit_code.partition(":")
    code = int(code_text) if code_text.isdigit() else None
    signal = int(signal_text) if signal_text.isdigit() and signal_text != "0" else None
    word = state.split()[0] if state else "UNKNOWN"
    memory = f"{resources.memory_gb:g} GiB" if resources is not None and resources.memory_gb else "its memory"
    if word == "OUT_OF_MEMORY" or "exceeded memory limit" in output_tail or "oom-kill" in output_tail.lower():
        return JobStatus("ended", code, signal or 9, "oom",
                         f"the run used more memory than it asked Slurm for ({memory}) and Slurm killed it: ask for "
                         "more (resources.memory_gb) or use less")
    if word == "TIMEOUT":
        return JobStatus("ended", code, signal, job_runner.REASON_TIMEOUT,
                         f"Slurm stopped the job at its time limit ({minutes} min)" if minutes else
                         "Slurm stopped the job at its partition's time limit: set max_run_duration_seconds, or ask "
                         "for a partition with a longer limit")
    if word == "CANCELLED":
        return JobStatus("ended", code, signal, job_runner.REASON_CANCELED,
                         f"the Slurm job was canceled ({state.lower()}) before the run could record its ending")
    if word == "NODE_FAIL":
        return JobStatus("lost", code, signal, "node_fail",
                         "a node of the job failed (NODE_FAIL); the run's partial output is kept; a retry may help")
    if word == "PREEMPTED":
        return JobStatus("lost", code, signal, "preempted",
                         "the job was preempted by a job of higher priority; a retry runs it again")
    if word in ("BOOT_FAIL", "DEADLINE", "REVOKED"):
        return JobStatus("lost", code, signal, word.lower(), f"Slurm ended the job: {word}")
    tail = output_tail.strip().splitlines()[-5:]
    detail = f": {' | '.join(tail)}" if tail else ""
    return JobStatus("lost", code, signal, "failed",
                     f"the Slurm job ended {word} (exit code {exit_code or '?'}) before the run's supervisor recorded "
                     f"its ending{detail}")
