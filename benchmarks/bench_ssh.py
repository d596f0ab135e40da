"""SSH target: submit+wait of a trivial script vs a bare paramiko connect + exec of
``python3 train.py`` on the same host, and the bytes a resubmit sends after one file changed.

Measured in this one process (medians of N) against the SSH host container that
``scripts/components.sh`` starts (172.28.0.10, root, the client key under
/var/lib/training-runs-components/sshd). Usage: ``.venv/bin/python benchmarks/bench_ssh.py [N]``.
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


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    import paramiko

    with tempfile.TemporaryDirectory(prefix="bench_ssh_") as scratch:
        os.environ["TRAINING_RUNS_HOME"] = str(Path(scratch) / "state")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from airflow_provider.core import Experiment, ScriptRunConfig
        from airflow_provider.core.targets.ssh import SSHTarget
        from airflow_provider.core.targets.ssh_connection import SSHSettings

        host_key = " ".join(Path(HOST_KEY).read_text().split()[:2])
        settings = SSHSettings(HOST, 22, "root", key_file=KEY, host_key=host_key)
        source = Path(scratch) / "src"
        source.mkdir()
        (source / "train.py").write_text('print("ok")\n')
        experiment = Experiment("bench-ssh")

        def submit_once() -> float:
            target = SSHTarget(settings, work_root="/tmp/bench-ssh")  # a new connection, like a new task
            started = time.perf_counter()
            experiment.submit(ScriptRunConfig(source, "train.py", compute_target=target)).wait_for_completion()
            return time.perf_counter() - started

        for _ in range(2):
            submit_once()
        submitted = [submit_once() for _ in range(repetitions)]

        def bare_once() -> float:
            started = time.perf_counter()
            client = paramiko.SSHClient()
            client.get_host_keys().add(HOST, host_key.split()[0],
                                       paramiko.PKey.from_type_string(host_key.split()[0],
                                                                      __import__("base64").b64decode(host_key.split()[1])))
            client.connect(HOST, 22, "root", pkey=paramiko.PKey.from_path(KEY), allow_agent=False, look_for_keys=False)
            sftp = client.open_sftp()
            with sftp.open("/tmp/bench-bare-train.py", "w") as out:
                out.write('print("ok")\n')
            _, stdout, _ = client.exec_command("python3 /tmp/bench-bare-train.py")
            stdout.read()
            stdout.channel.recv_exit_status()
            client.close()
            return time.perf_counter() - started

        bare = [bare_once() for _ in range(repetitions)]
        ours, theirs = statistics.median(submitted), statistics.median(bare)
        print(f"submit+wait on the SSH target (new connection)  {ours:.3f} s  (median of {repetitions})")
        print(f"bare paramiko connect + sftp put + exec          {theirs:.3f} s")
        print(f"ratio                                            {ours / theirs:.2f}x")

        big = Path(scratch) / "big"
        big.mkdir()
        (big / "train.py").write_text('print("ok")\n')
        for index in range(200):
            (big / f"shard_{index:03}.bin").write_bytes(uuid.uuid4().bytes * 4096)  # 64 KiB each
        target = SSHTarget(settings, work_root="/tmp/bench-ssh")
        experiment.submit(ScriptRunConfig(big, "train.py", compute_target=target)).wait_for_completion()
        first = target.bytes_sent
        (big / "shard_042.bin").write_bytes(uuid.uuid4().bytes * 4096)
        experiment.submit(ScriptRunConfig(big, "train.py", compute_target=target)).wait_for_completion()
        size = sum(p.stat().st_size for p in big.iterdir())
        print(f"snapshot {size / 1e6:.1f} MB: first submit sent {first / 1e6:.2f} MB, resubmit after one 64 KiB "
              f"file changed sent {(target.bytes_sent - first) / 1e3:.1f} kB ({(target.bytes_sent - first) / size:.4f} "
              "of the snapshot)")


if __name__ == "__main__":
    main()
