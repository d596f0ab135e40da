"""The Slurm target on a real cluster (scripts/slurm_cluster.sh): runs are Slurm jobs, queued behind
each other with Slurm's reason, canceled pending or running, killed over their memory, refused with
Slurm's own message, and found again from another process."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Experiment, Resources, ScriptRunConfig
from airflow_provider.core.script_run import ScriptRun
from airflow_provider.core.targets.slurm import SlurmTarget
from airflow_provider.core.targets.ssh_connection import SSHSettings
from airflow_provider.core.tracking import Tags
from tests.helpers import wait_until, write_script
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


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


@pytest.fixture
def slurm(slurm_cluster: SSHHost) -> Iterator[SlurmTarget]:
    """A Slurm target with its own work root on the cluster's shared folder; no job of it is left."""
    name = f"tr-{uuid.uuid4().hex[:8]}"
    settings = SSHSettings(slurm_cluster.host, slurm_cluster.port, username=slurm_cluster.username,
                           key_file=str(slurm_cluster.key_path), host_key=slurm_cluster.host_public_key)
    target = SlurmTarget(settings, f"/shared/{name}")  # keeps failed runs' folders: a good run's is removed
    yield target
    time.sleep(0.5)
    left = _login(slurm_cluster, "squeue -h -o '%i %j %T' | grep ' training-' || true").split("\n")
    jobs = [line.split()[0] for line in left if line.strip()]
    if jobs:
        _login(slurm_cluster, f"scancel {' '.join(jobs)}")  # the next test starts on an empty cluster
    shutil.rmtree(SLURM_SHARED / name, ignore_errors=True)  # kept folders of failed runs, blobs, environments
    assert not jobs, f"Slurm jobs left behind: {left}"


def _login(host: SSHHost, command: str) -> str:
    return subprocess.run(["docker", "exec", host.name, "sh", "-c", command], capture_output=True, text=True,
                          timeout=60, check=True).stdout


def _accounted(host: SSHHost, run_id: str, fields: str) -> list[list[str]]:
    """``sacct``'s lines for the run's job, once accounting has them (it lags the queue by a moment)."""
    lines: list[list[str]] = []

    def found() -> bool:
        lines[:] = [line.split("|") for line in _login(host, f"sacct -n -X -P --name training-{run_id} -o {fields}")
                    .splitlines() if line]
        return bool(lines)

    wait_until(found, timeout=30, message=f"sacct to account for run {run_id}")
    return lines


def _gate(name: str) -> Path:
    return SLURM_SHARED / f"gate-{name}-{uuid.uuid4().hex[:8]}"


def _submit(target: SlurmTarget, source: Path, experiment: str, gate: Path | None = None,
            **config: object) -> ScriptRun:
    arguments = [f"/shared/{gate.name}"] if gate is not None else []
    return Experiment(experiment).submit(ScriptRunConfig(source, "train.py", arguments=arguments,
                                                         compute_target=target, **config))  # type: ignore[arg-type]


def test_a_run_is_a_slurm_job_that_lands_in_mlflow(slurm: SlurmTarget, slurm_cluster: SSHHost,
                                                   tmp_path: Path) -> None:
    write_script(tmp_path / "src", WAITING_SCRIPT)
    gate = _gate("plain")
    gate.touch()
    lines: list[str] = []
    run = _submit(slurm, tmp_path / "src", "slurm-plain", gate, resources=Resources(cpus=1, memory_gb=0.5))
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", lines
    output = [line for line in lines if not line.startswith("[")]  # [queued] and [running]: the scheduler's
    assert output[0].startswith("started on slurm-node-") and output[-1] == "done", lines
    assert MlflowClient().get_metric_history(run.id, "waited")[0].value == 1.0
    assert _accounted(slurm_cluster, run.id, "JobName,State,Partition,ReqMem") == [
        [f"training-{run.id}", "COMPLETED", "main", "512M"]]
    assert MlflowClient().get_run(run.id).data.tags[Tags.TARGET].startswith("slurm (login node 172.28.0.40")
    assert not (SLURM_SHARED / slurm.login.root.removeprefix("/shared/") / "jobs" / run.id).exists()
    gate.unlink()


def test_a_second_run_waits_queued_with_slurms_reason_then_runs(slurm: SlurmTarget, tmp_path: Path) -> None:
    """Partition small has one node of 2 CPUs: a run asking for both holds it, the next one waits."""
    write_script(tmp_path / "src", WAITING_SCRIPT)
    first_gate, second_gate = _gate("first"), _gate("second")
    both = Resources(cpus=2, partition="small")
    first = _submit(slurm, tmp_path / "src", "slurm-queue", first_gate, resources=both)
    wait_until(lambda: first.get_details()["status"] == "Running" and bool(
        first.target and first.target.poll(first.handle).state == "running"), timeout=60,  # type: ignore[union-attr,arg-type]
        message="the first run to start")
    second = _submit(slurm, tmp_path / "src", "slurm-queue", second_gate, resources=both)
    lines: list[str] = []
    watching = threading.Thread(target=lambda: second.wait_for_completion(output=lines.append))
    watching.start()
    try:
        wait_until(lambda: second.get_details()["status"] == "Queued" and "Resources" in MlflowClient().get_run(
            second.id).data.tags.get(Tags.QUEUE_REASON, ""), timeout=60, message="the second run Queued (Resources)")
        assert "is pending: Resources" in MlflowClient().get_run(second.id).data.tags[Tags.QUEUE_REASON]
        assert any(line.startswith("[queued] ") and "Resources" in line for line in lines), lines
        first_gate.touch()
        second_gate.touch()
        watching.join(timeout=120)
        assert not watching.is_alive()
        assert second.get_details()["status"] == "Completed", lines
        assert lines[-1] == "done", lines
        assert first.wait_for_completion()["status"] == "Completed"
    finally:
        first_gate.touch()
        second_gate.touch()
        watching.join(timeout=120)
        first_gate.unlink(missing_ok=True)
        second_gate.unlink(missing_ok=True)


def test_cancel_a_running_and_a_pending_job(slurm: SlurmTarget, slurm_cluster: SSHHost, tmp_path: Path) -> None:
    write_script(tmp_path / "src", WAITING_SCRIPT)
    gate = _gate("never")
    both = Resources(cpus=2, partition="small")
    running = _submit(slurm, tmp_path / "src", "slurm-cancel", gate, resources=both)
    wait_until(lambda: running.target.poll(running.handle).state == "running", timeout=60,  # type: ignore[union-attr,arg-type]
               message="the first run to start")
    pending = _submit(slurm, tmp_path / "src", "slurm-cancel", gate, resources=both)
    assert pending.target.poll(pending.handle).state == "queued"  # type: ignore[union-attr,arg-type]
    pending.cancel()
    assert pending.wait_for_completion(raise_on_error=False)["status"] == "Canceled"
    running.cancel()
    details = running.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Canceled", details
    wait_until(lambda: _login(slurm_cluster, f"squeue -h -n training-{running.id},training-{pending.id}") == "",
               timeout=60, message="both jobs to leave the queue")
    for node in SLURM_NODES:  # every process of the nodes, seen from outside Slurm
        processes = subprocess.run(["docker", "exec", node, "ps", "-eo", "args"], capture_output=True, text=True,
                                   timeout=30, check=True).stdout
        assert running.id not in processes, f"something of the run is left on {node}: {processes}"


def test_a_run_over_its_memory_fails_saying_so(slurm: SlurmTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import time
        held = [bytes(50 << 20) + b"x" for _ in range(16)]
        time.sleep(30)
    """)
    run = _submit(slurm, tmp_path / "src", "slurm-oom", resources=Resources(memory_gb=0.25))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "more memory than it asked Slurm for (0.25 GiB)" in details["error"]["message"], details["error"]


def test_slurm_refusing_a_job_shows_its_own_message(slurm: SlurmTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('never')\n")
    experiment = Experiment("slurm-refused")
    with pytest.raises(ConfigurationError) as caught:
        _submit(slurm, tmp_path / "src", "slurm-refused", resources=Resources(partition="nosuchpartition"))
    assert "Slurm refused the job" in str(caught.value) and "invalid partition" in str(caught.value).lower()
    (run,) = MlflowClient().search_runs([experiment.id])
    assert run.data.tags[Tags.STATE] == "Failed"


def test_a_resource_slurm_does_not_give_is_refused_before_anything(slurm: SlurmTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('never')\n")
    with pytest.raises(ConfigurationError, match=r"resources\.shm_size_gb.*not honoured by the slurm target"):
        _submit(slurm, tmp_path / "src", "slurm-shm", resources=Resources(shm_size_gb=1))


def test_another_process_finds_the_same_job(slurm: SlurmTarget, slurm_cluster: SSHHost, tmp_path: Path) -> None:
    """A retried task: a new target object (another process) reattaches by run key; one Slurm job."""
    write_script(tmp_path / "src", WAITING_SCRIPT)
    gate = _gate("reattach")
    config = ScriptRunConfig(tmp_path / "src", "train.py", arguments=[f"/shared/{gate.name}"], compute_target=slurm)
    first = Experiment("slurm-reattach").submit(config, run_key="dag/task/1")
    wait_until(lambda: first.target.poll(first.handle).state == "running", timeout=60,  # type: ignore[union-attr,arg-type]
               message="the run to start")
    other = SlurmTarget.from_spec(slurm.to_spec(), secrets={})
    config.compute_target = other
    again = Experiment("slurm-reattach").submit(config, run_key="dag/task/1")
    assert again.id == first.id
    gate.touch()
    try:
        assert again.wait_for_completion()["status"] == "Completed"
        assert len(_accounted(slurm_cluster, first.id, "JobID")) == 1
    finally:
        gate.unlink(missing_ok=True)


def _connection(host: SSHHost, monkeypatch: pytest.MonkeyPatch, conn_id: str, **extra: object) -> None:
    connection = {"conn_type": "training_slurm", "host": host.host, "login": host.username, "port": host.port,
                  "extra": {"key_file": str(host.key_path), "host_key": host.host_public_key, **extra}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))


def test_a_training_slurm_connection_gives_the_clusters_defaults(slurm_cluster: SSHHost, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection's partition and setup lines reach the job; bad fields are refused naming them."""
    from airflow_provider.hooks.compute import compute_hook_for

    root = f"/shared/tr-hook-{uuid.uuid4().hex[:8]}"
    _connection(slurm_cluster, monkeypatch, "test_slurm", work_root=root, partition="small",
                setup="export TRAINING_SETUP=from-the-connection\necho setup ran", sbatch_options="--nice=5")
    target = compute_hook_for("test_slurm").get_target()
    assert isinstance(target, SlurmTarget) and target.defaults.partition == "small"
    write_script(tmp_path / "src", "import os\nprint(os.environ.get('TRAINING_SETUP'))\n")
    run = Experiment("slurm-hook").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))
    lines: list[str] = []
    assert run.wait_for_completion(output=lines.append)["status"] == "Completed", lines
    assert lines[-1] == "from-the-connection"
    assert _accounted(slurm_cluster, run.id, "Partition,Priority")[0][0] == "small"

    for extra, field in (({"partition": "two words"}, "extra.partition"), ({}, "extra.work_root"),
                         ({"work_root": root, "sbatch_options": "--comment='open"}, "extra.sbatch_options")):
        _connection(slurm_cluster, monkeypatch, "bad_slurm", **extra)
        with pytest.raises(ConfigurationError) as caught:
            compute_hook_for("bad_slurm").get_target()
        assert caught.value.field == f"connection 'bad_slurm' {field}", caught.value
