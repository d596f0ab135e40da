"""The Slurm test cluster itself (scripts/slurm_cluster.sh): what the Slurm target's tests rely on.
Two idle compute nodes in two partitions, jobs across both, the shared folder seen from here, job
accounting (sacct), and a job over its memory limit killed."""

from __future__ import annotations

import subprocess
import time
import uuid

from tests.ssh_hosts import SLURM_SHARED, SSHHost


def _login(host: SSHHost, command: str, timeout: float = 120) -> str:
    done = subprocess.run(["docker", "exec", host.name, "sh", "-c", command], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


def _sacct(host: SSHHost, job: str, fields: str = "State") -> list[str]:
    """The job's accounting record once it has ended (accounting fills its fields a moment after the
    queue lets the job go: the name reads "allocation" until then)."""
    deadline = time.monotonic() + 60
    record: list[str] = []
    while time.monotonic() < deadline:
        record = _login(host, f"sacct -n -X -P -j {job} -o State,JobName,{fields}").strip().split("|")
        if record[0] and record[0] not in ("PENDING", "RUNNING", "COMPLETING") and record[1] != "allocation":
            return [record[0], *record[2:]]
        time.sleep(0.5)
    return record


def test_two_nodes_in_two_partitions_run_jobs_across_both(slurm_cluster: SSHHost) -> None:
    assert _login(slurm_cluster, "sinfo -h -o '%P %D %t' -p main").split() == ["main*", "2", "idle"]
    assert _login(slurm_cluster, "sinfo -h -o '%P %N' -p small").split() == ["small", "slurm-node-1"]
    hosts = _login(slurm_cluster, "srun -N2 -n2 hostname").split()
    assert sorted(hosts) == ["slurm-node-1", "slurm-node-2"]


def test_a_batch_job_writes_to_the_shared_folder_and_is_accounted(slurm_cluster: SSHHost) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    job = _login(slurm_cluster, f"sbatch --parsable -J {name} -o /shared/{name}.out --wrap 'hostname; echo done'"
                 ).strip()
    assert _sacct(slurm_cluster, job, "JobName") == ["COMPLETED", name]
    output = (SLURM_SHARED / f"{name}.out").read_text().split()
    assert output[0].startswith("slurm-node-") and output[1] == "done"
    (SLURM_SHARED / f"{name}.out").unlink()


def test_a_job_over_its_memory_is_killed_and_says_so(slurm_cluster: SSHHost) -> None:
    """Without cgroups, slurmstepd polls the job's memory (jobacct_gather/linux, OverMemoryKill): the
    job is killed (FAILED, signal 9) and slurmstepd says why in the job's output; Slurm's
    OUT_OF_MEMORY state needs cgroups, which these containers do not have."""
    hog = SLURM_SHARED / f"hog-{uuid.uuid4().hex[:8]}.py"
    output = hog.with_suffix(".out")
    hog.write_text("import time\nheld = [bytes(50 << 20) + b'x' for _ in range(20)]\ntime.sleep(30)\n")
    try:
        job = _login(slurm_cluster, f"sbatch --parsable --mem=200M -o /shared/{output.name} "
                                    f"--wrap 'python3 /shared/{hog.name}'").strip()
        assert _sacct(slurm_cluster, job, "ExitCode") == ["FAILED", "0:9"]
        assert "exceeded memory limit" in output.read_text()
    finally:
        hog.unlink()
        output.unlink(missing_ok=True)
