"""Data inputs: staging a folder to an SSH host, cold and warm, vs ``rsync`` of the same folder.

The folder (default 2 GB in 2,000 files, random bytes) is a ``download`` input of a run on the SSH
target at the loopback sshd (127.0.0.1:2222, started by ``scripts/components.sh``; rsync runs on
both ends there). Timed in this one process, interleaved, medians of N:

* ours, cold (empty snapshot store here, new work root on the host): ``plan_inputs`` +
  ``stage_input`` (hash and store the files) + the target's ``stage`` (send the blobs the host
  lacks) + the host building the job folder from its blob store (checked copies).
* ours, warm (nothing changed): the same calls for a second run into the same work root.
* ``rsync -a`` over ssh of the folder into a new folder on the host (the baseline), and
  ``rsync -a`` again into the same folder (nothing changed).

Goals (issue 18): cold at most 1.3x rsync; warm under 0.1x of our cold. Usage::

    .venv/bin/python benchmarks/bench_data_inputs.py [N] [FILES] [MB]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout

KEY = "/var/lib/training-runs-components/sshd/client_ed25519"
HOST_KEY = "/var/lib/training-runs-components/sshd/host_ed25519.pub"
HOST, PORT = "127.0.0.1", 2222
GOAL_COLD_RATIO = 1.3
GOAL_WARM_FRACTION = 0.1


def _tree(folder: Path, files: int, megabytes: int) -> None:
    size = megabytes * (1 << 20) // files
    for index in range(files):
        path = folder / f"part={index % 20:02d}" / f"f{index:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    megabytes = int(sys.argv[3]) if len(sys.argv) > 3 else 2048
    with tempfile.TemporaryDirectory(prefix="bench_data_", dir=os.environ.get("BENCH_DIR")) as scratch:
        os.environ["TRAINING_RUNS_HOME"] = str(Path(scratch) / "state")
        from airflow_provider.core.data.bindings import Input
        from airflow_provider.core.data.inputs import plan_inputs, stage_input
        from airflow_provider.core.snapshot import Snapshot, SnapshotStore
        from airflow_provider.core.targets.base import JobSpec
        from airflow_provider.core.targets.ssh import SSHTarget
        from airflow_provider.core.targets.ssh_connection import SSHSettings

        data = Path(scratch) / "data"
        _tree(data, files, megabytes)
        host_key = " ".join(Path(HOST_KEY).read_text().split()[:2])
        ssh = ["ssh", "-p", str(PORT), "-i", KEY, "-o", "StrictHostKeyChecking=no", "-o",
               f"UserKnownHostsFile={scratch}/known_hosts", "-o", "LogLevel=ERROR"]
        results: dict[str, list[float]] = {"ours_cold": [], "ours_warm": [], "rsync_cold": [], "rsync_warm": []}
        for repetition in range(repetitions):
            root = f"{scratch}/host-{repetition}"
            store_root = Path(scratch) / f"store-{repetition}"
            target = SSHTarget(SSHSettings(HOST, PORT, "root", key_file=KEY, host_key=host_key), work_root=root)
            prepared = target.prepare_environment(None)

            def stage(job: str, target: SSHTarget = target, store_root: Path = store_root,
                      prepared: object = prepared) -> None:
                store = SnapshotStore(store_root)
                (plan,) = plan_inputs({"train": Input(str(data))})
                staged = stage_input(plan, store, "")
                handle = target.stage(job, Snapshot.from_entries(staged.entries), store, {}, prepared)  # type: ignore[arg-type]
                target.materialize(handle, JobSpec(argv=("true",)))

            results["ours_cold"].append(_timed(lambda: stage(f"cold{uuid.uuid4().hex[:6]}")))
            results["ours_warm"].append(_timed(lambda: stage(f"warm{uuid.uuid4().hex[:6]}")))
            destination = f"{scratch}/rsync-{repetition}/"
            rsync = ["rsync", "-a", "-e", " ".join(ssh), f"{data}/", f"root@{HOST}:{destination}"]
            results["rsync_cold"].append(_timed(lambda rsync=rsync: subprocess.run(rsync, check=True)))
            results["rsync_warm"].append(_timed(lambda rsync=rsync: subprocess.run(rsync, check=True)))
            target.connection.close()
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(store_root, ignore_errors=True)
            shutil.rmtree(destination, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"input: {files} files, {megabytes} MB, to the SSH target at {HOST}:{PORT}; medians of {repetitions}")
    for name, value in medians.items():
        print(f"  {name:<11} {value:8.2f} s   (runs: {', '.join(f'{v:.2f}' for v in results[name])})")
    cold = medians["ours_cold"] / medians["rsync_cold"]
    warm = medians["ours_warm"] / medians["ours_cold"]
    cold_verdict = "met" if cold <= GOAL_COLD_RATIO else "MISSED"
    warm_verdict = "met" if warm < GOAL_WARM_FRACTION else "MISSED"
    print(f"cold, ours / rsync:    {cold:.2f}x (goal <= {GOAL_COLD_RATIO}x) {cold_verdict}")
    print(f"warm / cold (ours):    {warm:.3f}x (goal < {GOAL_WARM_FRACTION}x) {warm_verdict}")
    print(f"warm rsync / cold rsync: {medians['rsync_warm'] / medians['rsync_cold']:.3f}x")


if __name__ == "__main__":
    main()
