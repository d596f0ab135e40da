"""The Slurm target on a real cluster (scripts/slurm_cluster.sh): runs are Slurm jobs, queued behind
each other with Slurm's reason, canceled pending or running, killed over their memory, refused with
Slurm's own message, and found again from another process."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Experiment, Resources, ScriptRunConfig
from airflow_provider.core.submit import StagedRun
from airflow_provider.core.targets.slurm import SlurmTarget
from airflow_provider.core.targets.slurm_batch import SlurmDefaults
from airflow_provider.core.tracking import Tags
from tests.helpers import wait_until, write_script
from tests.integration.slurm_support import (
    WAITING_SCRIPT,
    accounted,
    gate_file,
    login,
    processes_on_nodes,
    slurm_target,
    submit,
)
from tests.ssh_hosts import SLURM_NODES, SLURM_SHARED, SSHHost


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def test_a_run_is_a_slurm_job_that_lands_in_mlflow(slurm: SlurmTarget, slurm_cluster: SSHHost,
                                                   tmp_path: Path) -> None:
    write_script(tmp_path / "src", WAITING_SCRIPT)
    gate = gate_file("plain")
    gate.touch()
    lines: list[str] = []
    run = submit(slurm, tmp_path / "src", "slurm-plain", gate, resources=Resources(cpus=1, memory_gb=0.5))
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", lines
    output = [line for line in lines if not line.startswith("[")]  # [queued] and [running]: the scheduler's
    assert output[0].startswith("started on slurm-node-") and output[-1] == "done", lines
    assert MlflowClient().get_metric_history(run.id, "waited")[0].value == 1.0
    assert accounted(slurm_cluster, run.id, "JobName,State,Partition,ReqMem") == [
        [f"training-{run.id}", "COMPLETED", "main", "512M"]]
    assert MlflowClient().get_run(run.id).data.tags[Tags.TARGET].startswith("slurm (login node 172.28.0.40")
    assert not (SLURM_SHARED / slurm.login.root.removeprefix("/shared/") / "jobs" / run.id).exists()
    gate.unlink()


def test_a_second_run_waits_queued_with_slurms_reason_then_runs(slurm: SlurmTarget, tmp_path: Path) -> None:
    """Partition small has one node of 2 CPUs: a run asking for both holds it, the next one waits."""
    write_script(tmp_path / "src", WAITING_SCRIPT)
    first_gate, second_gate = gate_file("first"), gate_file("second")
    both = Resources(cpus=2, partition="small")
    first = submit(slurm, tmp_path / "src", "slurm-queue", first_gate, resources=both)
    wait_until(lambda: first.get_details()["status"] == "Running" and bool(
        first.target and first.target.poll(first.handle).state == "running"), timeout=60,  # type: ignore[arg-type]
        message="the first run to start")
    second = submit(slurm, tmp_path / "src", "slurm-queue", second_gate, resources=both)
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
    gate = gate_file("never")
    both = Resources(cpus=2, partition="small")
    running = submit(slurm, tmp_path / "src", "slurm-cancel", gate, resources=both)
    wait_until(lambda: running.target.poll(running.handle).state == "running", timeout=60,  # type: ignore[union-attr,arg-type]
               message="the first run to start")
    pending = submit(slurm, tmp_path / "src", "slurm-cancel", gate, resources=both)
    try:
        assert pending.target.poll(pending.handle).state == "queued"  # type: ignore[union-attr,arg-type]
        pending.cancel()
        assert pending.wait_for_completion(raise_on_error=False)["status"] == "Canceled"
        running.cancel()
        details = running.wait_for_completion(raise_on_error=False)
        assert details["status"] == "Canceled", details
    finally:  # a failed assertion above must not leave a job holding the small partition
        for run in (pending, running):
            run.cancel()
    wait_until(lambda: login(slurm_cluster, f"squeue -h -n training-{running.id},training-{pending.id}") == "",
               timeout=60, message="both jobs to leave the queue")
    assert not processes_on_nodes(running.id), "something of the run is left on a node"
    for run in (pending, running):  # what the cluster's accounting says: canceled, both
        assert accounted(slurm_cluster, run.id, "State")[0][0].startswith("CANCELLED"), run.id


def test_a_run_over_its_memory_fails_saying_so(slurm: SlurmTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import time
        held = [bytes(50 << 20) + b"x" for _ in range(16)]
        time.sleep(30)
    """)
    run = submit(slurm, tmp_path / "src", "slurm-oom", resources=Resources(memory_gb=0.25))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "more memory than it asked Slurm for (0.25 GiB)" in details["error"]["message"], details["error"]


def test_slurm_refusing_a_job_shows_its_own_message(slurm: SlurmTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('never')\n")
    experiment = Experiment("slurm-refused")
    with pytest.raises(ConfigurationError) as caught:
        submit(slurm, tmp_path / "src", "slurm-refused", resources=Resources(partition="nosuchpartition"))
    assert "Slurm refused the job" in str(caught.value) and "invalid partition" in str(caught.value).lower()
    (run,) = MlflowClient().search_runs([experiment.id])
    assert run.data.tags[Tags.STATE] == "Failed"


def test_a_resource_slurm_does_not_give_is_refused_before_anything(slurm: SlurmTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('never')\n")
    with pytest.raises(ConfigurationError, match=r"resources\.shm_size_gb.*not honoured by the slurm target"):
        submit(slurm, tmp_path / "src", "slurm-shm", resources=Resources(shm_size_gb=1))


def test_another_process_finds_the_same_job(slurm: SlurmTarget, slurm_cluster: SSHHost, tmp_path: Path) -> None:
    """A retried task: a new target object (another process) reattaches by run key; one Slurm job."""
    write_script(tmp_path / "src", WAITING_SCRIPT)
    gate = gate_file("reattach")
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
        assert len(accounted(slurm_cluster, first.id, "JobID")) == 1
    finally:
        gate.unlink(missing_ok=True)


def test_a_job_queued_by_a_process_that_died_at_once_is_reattached(slurm: SlurmTarget, slurm_cluster: SSHHost,
                                                                     tmp_path: Path) -> None:
    """The worker died right after ``sbatch`` answered: the run never got its job tag and the job folder
    has no ``slurm.job``. The retry finds the job by its name and watches it: one Slurm job."""
    write_script(tmp_path / "src", WAITING_SCRIPT)
    gate = gate_file("died")
    config = ScriptRunConfig(tmp_path / "src", "train.py", arguments=[f"/shared/{gate.name}"], compute_target=slurm)
    staged = Experiment("slurm-died").stage(config, run_key="dag/task/died")
    assert isinstance(staged, StagedRun)
    staged.target.launch(staged.handle, staged.spec)  # what the dead worker did, and no more
    (SLURM_SHARED / staged.handle.location.removeprefix("/shared/") / "slurm.job").unlink()
    config.compute_target = SlurmTarget.from_spec(slurm.to_spec(), secrets={})
    again = Experiment("slurm-died").submit(config, run_key="dag/task/died")
    gate.touch()
    try:
        assert again.id == staged.id
        assert again.wait_for_completion()["status"] == "Completed"
        assert len(accounted(slurm_cluster, staged.id, "JobID")) == 1
    finally:
        gate.unlink(missing_ok=True)


def test_the_controller_restarted_mid_run_loses_nothing(slurm: SlurmTarget, slurm_cluster: SSHHost,
                                                        tmp_path: Path) -> None:
    """slurmctld stops (squeue and scancel fail meanwhile) and starts again while a run is watched:
    the job goes on on its node, and the run ends Completed with all its output and metrics."""
    write_script(tmp_path / "src", WAITING_SCRIPT)
    gate = gate_file("controller")
    run = submit(slurm, tmp_path / "src", "slurm-controller", gate)
    lines: list[str] = []
    watching = threading.Thread(target=lambda: run.wait_for_completion(output=lines.append, raise_on_error=False))
    watching.start()
    try:
        wait_until(lambda: "started on" in " ".join(lines), timeout=60, message="the run to start")
        login(slurm_cluster, "pkill -TERM -x slurmctld; while pgrep -x slurmctld >/dev/null; do sleep 0.1; done")
        # squeue fails now (after its retries): the job still reads as running, and the watcher polls on
        assert run.target.poll(run.handle).state == "running"  # type: ignore[union-attr,arg-type]
        login(slurm_cluster, "slurmctld")
        wait_until(lambda: subprocess.run(["docker", "exec", slurm_cluster.name, "squeue"], capture_output=True,
                                          timeout=60).returncode == 0, timeout=60, message="slurmctld to answer")
        gate.touch()
        watching.join(timeout=120)
        assert not watching.is_alive()
        assert run.get_details()["status"] == "Completed", lines
        assert lines[-1] == "done", lines
        assert MlflowClient().get_metric_history(run.id, "waited")[0].value == 1.0
        assert len(accounted(slurm_cluster, run.id, "JobID")) == 1
    finally:
        login(slurm_cluster, "pgrep -x slurmctld >/dev/null || slurmctld")
        gate.touch()
        watching.join(timeout=120)
        gate.unlink(missing_ok=True)


def test_a_node_that_dies_mid_run_fails_the_run_with_what_it_wrote(slurm: SlurmTarget, slurm_cluster: SSHHost,
                                                                   tmp_path: Path) -> None:
    """The compute node's machine dies (its container is killed): Slurm marks the job NODE_FAIL once
    the node stops answering; the run ends Failed saying so, with the output and metrics it had."""
    write_script(tmp_path / "src", """
        import os, time
        from airflow_provider.core import Run
        run = Run.get_context()
        print("started on", os.uname().nodename, flush=True)
        for step in range(600):
            run.log("step", step)
            time.sleep(0.5)
    """)
    target = slurm_target(slurm_cluster, slurm.login.work_root,
                          defaults=SlurmDefaults(sbatch_options=("--nodelist=slurm-node-2",)))
    run = submit(target, tmp_path / "src", "slurm-node-fail")
    lines: list[str] = []
    watching = threading.Thread(target=lambda: run.wait_for_completion(output=lines.append, raise_on_error=False))
    watching.start()
    try:
        wait_until(lambda: "started on slurm-node-2" in lines and len(
            MlflowClient().get_metric_history(run.id, "step")) >= 3, timeout=60, message="the run to log steps")
        subprocess.run(["docker", "kill", SLURM_NODES[1]], check=True, capture_output=True, timeout=60)
        watching.join(timeout=180)  # SlurmdTimeout (30 s) until Slurm gives the node up
        assert not watching.is_alive(), "the run did not end after its node died"
        details = run.get_details()
        assert details["status"] == "Failed"
        assert "NODE_FAIL" in details["error"]["message"] and "a retry may help" in details["error"]["message"]
        driver_log = run.download_file("system_logs/driver.log", tmp_path / "driver.log").read_text()
        assert "started on slurm-node-2" in driver_log
        assert len(MlflowClient().get_metric_history(run.id, "step")) >= 3
        assert accounted(slurm_cluster, run.id, "State")[0][0] == "NODE_FAIL"
    finally:
        subprocess.run(["docker", "start", SLURM_NODES[1]], capture_output=True, timeout=60)
        watching.join(timeout=180)
        wait_until(lambda: login(slurm_cluster, "sinfo -h -p main -t idle -o %D").strip() == "2", timeout=120,
                   message="slurm-node-2 back in service")


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
                setup="export TRAINING_SETUP=from-the-connection\necho setup ran", sbatch_options="--nice=5",
                mpi_launcher="mpirun", srun_options="--mpi=pmix --cpu-bind=none")
    target = compute_hook_for("test_slurm").get_target()
    assert isinstance(target, SlurmTarget) and target.defaults.partition == "small"
    assert (target.defaults.mpi_launcher, target.defaults.srun_options) == ("mpirun", ("--mpi=pmix", "--cpu-bind=none"))
    assert SlurmTarget.from_spec(target.to_spec(), secrets={}).defaults == target.defaults
    write_script(tmp_path / "src", "import os\nprint(os.environ.get('TRAINING_SETUP'))\n")
    run = Experiment("slurm-hook").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))
    lines: list[str] = []
    assert run.wait_for_completion(output=lines.append)["status"] == "Completed", lines
    assert lines[-1] == "from-the-connection"
    assert accounted(slurm_cluster, run.id, "Partition,Priority")[0][0] == "small"

    for extra, field in (({"partition": "two words"}, "extra.partition"), ({}, "extra.work_root"),
                         ({"work_root": root, "sbatch_options": "--comment='open"}, "extra.sbatch_options"),
                         ({"work_root": root, "mpi_launcher": "mpiexec"}, "extra.mpi_launcher"),
                         ({"work_root": root, "srun_options": "--mpi='pmix"}, "extra.srun_options")):
        _connection(slurm_cluster, monkeypatch, "bad_slurm", **extra)
        with pytest.raises(ConfigurationError) as caught:
            compute_hook_for("bad_slurm").get_target()
        assert caught.value.field == f"connection 'bad_slurm' {field}", caught.value
