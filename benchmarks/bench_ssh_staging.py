"""SSH target: what a resubmit of an unchanged, large snapshot costs to stage on the host, now that
job folders are independent, hash-checked copies of the host's blob store (issue 12), against the
same tree copied on that host by ``cp -a`` (the floor of an independent copy) and ``cp -al`` (hard
links, what the target did before: not safe, a job could change what the next one reads).

Measured in this one process against the SSH host container of ``scripts/components.sh``
(172.28.0.10): the warm job-folder build (the agent's ``materialize``: copy + sha256 of every file)
and the baselines are timed on the host itself, medians of N. Usage:
``.venv/bin/python benchmarks/bench_ssh_staging.py [N] [FILES] [MB]``.
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
HOST_KEY = "/var/lib/training-runs-components/ssh-host/host_ed25519.pub"
HOST = "172.28.0.10"


def _tree(folder: Path, files: int, megabytes: int) -> None:
    size = megabytes * (1 << 20) // files
    for index in range(files):
        path = folder / f"d{index % 50:02d}" / f"f{index:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    (folder / "train.py").write_text('print("ok")\n')


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    megabytes = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    with tempfile.TemporaryDirectory(prefix="bench_ssh_staging_") as scratch:
        os.environ["TRAINING_RUNS_HOME"] = str(Path(scratch) / "state")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from airflow_provider.core.snapshot import SnapshotStore
        from airflow_provider.core.targets.ssh import SSHTarget
        from airflow_provider.core.targets.ssh_connection import SSHSettings

        host_key = " ".join(Path(HOST_KEY).read_text().split()[:2])
        root = f"/tmp/bench-staging-{uuid.uuid4().hex[:8]}"
        target = SSHTarget(SSHSettings(HOST, 22, "root", key_file=KEY, host_key=host_key), work_root=root)
        source = Path(scratch) / "src"
        _tree(source, files, megabytes)
        store = SnapshotStore()
        snapshot = store.take(source).snapshot
        prepared = target.prepare_environment(None)
        target.stage("warmup", snapshot, store, {}, prepared)  # sends the blobs once
        manifest = [[e.path, e.digest, e.executable] for e in snapshot.entries]
        # A tree laid out as a job's work folder, on the host, for the baselines to copy.
        target.agent("materialize", {"root": root, "job_dir": f"{root}/jobs/reference", "manifest": manifest,
                                      "extras": {}, "job_json": {"argv": ["true"]}})

        def on_host(command: str) -> float:
            started = time.perf_counter()
            _, stdout, _ = target.connection.client.exec_command(command)
            stdout.channel.recv_exit_status()
            return time.perf_counter() - started

        ours, copy, links = [], [], []
        for index in range(repetitions):
            job = f"{root}/jobs/bench{index}"
            started = time.perf_counter()
            target.agent("materialize", {"root": root, "job_dir": job, "manifest": manifest, "extras": {},
                                          "job_json": {"argv": ["true"]}})
            ours.append(time.perf_counter() - started)
            copy.append(on_host(f"cp -a {root}/jobs/reference/work {root}/copy{index}"))
            links.append(on_host(f"cp -al {root}/jobs/reference/work {root}/links{index}"))
        on_host(f"rm -rf {root}")
        target.connection.close()
    floor = statistics.median(copy)
    print(f"snapshot: {files} files, {megabytes} MB; medians of {repetitions}")
    print(f"job folder, checked copies (materialize round trip): {statistics.median(ours):.3f} s")
    print(f"cp -a on the host (independent copy, the floor):      {floor:.3f} s")
    print(f"cp -al on the host (hard links, before; unsafe):       {statistics.median(links):.3f} s")
    print(f"ratio to cp -a: {statistics.median(ours) / floor:.2f}x")


if __name__ == "__main__":
    main()
