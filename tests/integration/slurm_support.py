"""The Slurm tests' shared pieces: a target per test on the real cluster (no job of it left
behind), commands on the login node, ``sacct``'s lines, gate files, submitting."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider.core import Experiment, ScriptRunConfig
from airflow_provider.core.script_run import ScriptRun
from airflow_provider.core.targets.slurm import SlurmTarget
from airflow_provider.core.targets.ssh_connection import SSHSettings
from tests.helpers import wait_until
from tests.ssh_hosts import SLURM_NODES, SLURM_SHARED, SSHHost

WAITING_SCRIPT = """
    import os, sys, time
    from airflow_provider.core import Run
    gate = sys.argv[1]
    print("started on", os.uname().nodename, flush=True)
    while not os.path.exists(gate):
        time.sleep(0.2)
    Run.get_context().log("waited", 1.0)
    print("done", flush=True)
"""


@pytest.fixture
def slurm(slurm_cluster: SSHHost) -> Iterator[SlurmTarget]:
    """A Slurm target with its own work root on the cluster's shared folder; no job of it is left."""
    name = f"tr-{uuid.uuid4().hex[:8]}"
    target = slurm_target(slurm_cluster, f"/shared/{name}")  # keeps failed runs' folders: a good run's is removed
    yield target
    # A job that just ended can show COMPLETING while Slurm stops what is left of it on its nodes (a
    # step killed over its memory takes a moment): that one is waited for; a pending or running job
    # is what a test left behind.
    deadline = time.monotonic() + 60
    while True:
        left = [line for line in login(slurm_cluster, "squeue -h -o '%i %j %T' | grep ' training-' || true")
                .splitlines() if line.strip()]
        if not left or time.monotonic() > deadline or not all(line.endswith(" COMPLETING") for line in left):
            break
        time.sleep(0.5)
    jobs = [line.split()[0] for line in left if not line.endswith(" COMPLETING")]
    if jobs:
        login(slurm_cluster, f"scancel {' '.join(jobs)}")  # the next test starts on an empty cluster
    shutil.rmtree(SLURM_SHARED / name, ignore_errors=True)  # kept folders of failed runs, blobs, environments
    assert not jobs, f"Slurm jobs left behind: {left}"


def login(host: SSHHost, command: str) -> str:
    return subprocess.run(["docker", "exec", host.name, "sh", "-c", command], capture_output=True, text=True,
                          timeout=60, check=True).stdout


def accounted(host: SSHHost, run_id: str, fields: str) -> list[list[str]]:
    """``sacct``'s lines for the run's job, once accounting has them with the job's final state: it
    lags the queue by a moment, and a run ends when its ``exit.json`` is written, a moment before
    Slurm records the job's end (its epilog, ``COMPLETING``)."""
    lines: list[list[str]] = []

    def found() -> bool:
        rows = [line.split("|") for line in login(host, f"sacct -n -X -P --name training-{run_id} -o {fields},State")
                .splitlines() if line]
        lines[:] = [row[:-1] for row in rows]
        return bool(rows) and all((row[-1].split() or [""])[0] not in _UNSETTLED_STATES for row in rows)

    wait_until(found, timeout=60, message=f"sacct to account for the end of run {run_id}'s job")
    return lines


_UNSETTLED_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING",
                               "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"})


def gate_file(name: str) -> Path:
    return SLURM_SHARED / f"gate-{name}-{uuid.uuid4().hex[:8]}"


def submit(target: SlurmTarget, source: Path, experiment: str, gate: Path | None = None,
            **config: object) -> ScriptRun:
    arguments = [f"/shared/{gate.name}"] if gate is not None else []
    return Experiment(experiment).submit(ScriptRunConfig(source, "train.py", arguments=arguments,
                                                         compute_target=target, **config))  # type: ignore[arg-type]


def slurm_target(cluster: SSHHost, work_root: str, **options: object) -> SlurmTarget:
    """A Slurm target on the test cluster's login node.

    :param cluster: the login node.
    :param work_root: its work root on ``/shared``.
    :param options: more :class:`SlurmTarget` arguments.
    """
    settings = SSHSettings(cluster.host, cluster.port, username=cluster.username, key_file=str(cluster.key_path),
                           host_key=cluster.host_public_key)
    return SlurmTarget(settings, work_root, **options)  # type: ignore[arg-type]


def processes_on_nodes(marker: str) -> list[str]:
    """Every process of the compute nodes whose command line holds ``marker``, seen from outside Slurm."""
    found = []
    for node in SLURM_NODES:
        listing = subprocess.run(["docker", "exec", node, "ps", "-eo", "args"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout
        found += [f"{node}: {line}" for line in listing.splitlines() if marker in line]
    return found
