"""Slurm target: a 5 s script submitted as a run vs a bare ``sbatch --wait`` of the same script on
the same cluster, through the same login node.

* **end to end**: ours is ``Experiment.submit`` (new connection, snapshot, environment check, job
  folder, ``sbatch``) until ``wait_for_completion`` returns with the logs, metrics and outputs in
  MLflow; the baseline is one SSH connection running ``sbatch --wait`` of a batch script that runs
  ``python3 train.py`` in a folder of the shared root, then reading its output file;
* **submit to running**: until the script's first output line is seen: ours through the watcher,
  the baseline after ``sbatch --parsable`` by reading the job's output file every 0.05 s.

Goal: end to end at most 1.5x the baseline. Measured in this one process (medians of N) against
the test cluster ``scripts/components.sh`` starts (login node 172.28.0.40).
Usage: ``.venv/bin/python benchmarks/bench_slurm.py [N]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

KEY = "/var/lib/training-runs-components/sshd/client_ed25519"
HOST_KEY = "/var/lib/training-runs-components/slurm/host_ed25519.pub"
HOST = "172.28.0.40"
SCRIPT = 'import time\nprint("started", flush=True)\ntime.sleep(5)\nprint("done", flush=True)\n'


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    import paramiko

    root = f"/shared/bench-slurm-{uuid.uuid4().hex[:8]}"
    host_key = " ".join(Path(HOST_KEY).read_text().split()[:2])
    with tempfile.TemporaryDirectory(prefix="bench_slurm_") as scratch:
        os.environ["TRAINING_RUNS_HOME"] = str(Path(scratch) / "state")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from airflow_provider.core import Experiment, ScriptRunConfig
        from airflow_provider.core.targets.slurm import SlurmTarget
        from airflow_provider.core.targets.ssh_connection import SSHSettings

        settings = SSHSettings(HOST, 22, "root", key_file=KEY, host_key=host_key)
        source = Path(scratch) / "src"
        source.mkdir()
        (source / "train.py").write_text(SCRIPT)
        experiment = Experiment("bench-slurm")

        def submit_once() -> tuple[float, float]:
            idle()
            target = SlurmTarget(settings, work_root=root)  # a new connection, like a new task
            started = time.perf_counter()
            first_line: list[float] = []

            def seen(line: str) -> None:  # the watcher's own lines ("[queued] ...") come first
                if line == "started" and not first_line:
                    first_line.append(time.perf_counter() - started)

            run = experiment.submit(ScriptRunConfig(source, "train.py", compute_target=target))
            details = run.wait_for_completion(output=seen)
            assert details["status"] == "Completed", details
            return first_line[0], time.perf_counter() - started

        def connect() -> paramiko.SSHClient:
            client = paramiko.SSHClient()
            kind, blob = host_key.split()
            client.get_host_keys().add(HOST, kind, paramiko.PKey.from_type_string(kind, __import__("base64")
                                                                                  .b64decode(blob)))
            client.connect(HOST, 22, "root", pkey=paramiko.PKey.from_path(KEY), allow_agent=False,
                           look_for_keys=False)
            return client

        def command(client: paramiko.SSHClient, line: str) -> str:
            _, out, err = client.exec_command(line)
            text = out.read().decode()
            assert out.channel.recv_exit_status() == 0, err.read().decode()
            return text

        def bare_folder(client: paramiko.SSHClient) -> str:
            folder = f"{root}/bare-{uuid.uuid4().hex[:8]}"
            command(client, f"mkdir -p {folder}")
            with client.open_sftp() as sftp:
                with sftp.open(f"{folder}/train.py", "w") as out:
                    out.write(SCRIPT)
                with sftp.open(f"{folder}/job.sh", "w") as out:
                    out.write("#!/bin/bash\nexec python3 train.py\n")
            return folder

        def bare_once() -> float:
            idle()
            started = time.perf_counter()
            client = connect()
            folder = bare_folder(client)
            command(client, f"cd {folder} && sbatch --wait --job-name=bench-bare --output={folder}/out.txt "
                            f"--chdir={folder} {folder}/job.sh >/dev/null")
            assert command(client, f"cat {folder}/out.txt").split() == ["started", "done"]
            client.close()
            return time.perf_counter() - started

        def idle() -> None:
            """Untimed: the previous job has left its node (a canceled one is COMPLETING for a moment)."""
            client = connect()
            while command(client, "squeue -h -o %i").strip() or command(
                    client, "sinfo -h -p main -t idle -o %D").strip() != "2":
                time.sleep(0.1)
            client.close()

        def bare_to_running() -> float:
            idle()
            started = time.perf_counter()
            client = connect()
            folder = bare_folder(client)
            command(client, f"sbatch --parsable --job-name=bench-bare --output={folder}/out.txt "
                                  f"--chdir={folder} {folder}/job.sh").strip()
            with client.open_sftp() as sftp:  # the script's first line, as ours is measured
                while True:
                    try:
                        with sftp.open(f"{folder}/out.txt") as out:
                            if out.read().startswith(b"started"):
                                break
                    except FileNotFoundError:
                        pass
                    time.sleep(0.05)
            elapsed = time.perf_counter() - started
            client.close()  # the job runs to its end (a canceled job's node delays the next job's start)
            return elapsed

        try:
            submit_once()  # the environment check and the remote helper, once per work root
            bare_once()
            ours = [submit_once() for _ in range(repetitions)]
            bare = [bare_once() for _ in range(repetitions)]
            bare_running = [bare_to_running() for _ in range(repetitions)]
        finally:
            client = connect()
            command(client, f"rm -rf {root}")
            client.close()
    ours_running = statistics.median(first for first, _ in ours)
    ours_total = statistics.median(total for _, total in ours)
    print(f"end to end (5 s script): ours {ours_total:.2f} s, sbatch --wait {statistics.median(bare):.2f} s, "
          f"ratio {ours_total / statistics.median(bare):.2f}x (goal <= 1.5x)")
    print(f"submit to running: ours {ours_running:.2f} s (the script's first line), sbatch + reading "
          f"{statistics.median(bare_running):.2f} s, ratio {ours_running / statistics.median(bare_running):.2f}x")


if __name__ == "__main__":
    main()
