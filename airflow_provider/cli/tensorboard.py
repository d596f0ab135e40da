"""``tensorboard RUN...``: TensorBoard on one or several runs' ``./logs`` while they run.

Each run's ``./logs`` is kept up to date in ``LOGDIR/<run name>-<id>/`` from what its watcher
uploads while it goes on (:mod:`~airflow_provider.core.live_logs`: each byte is downloaded once),
and ``tensorboard --logdir LOGDIR`` reads that folder. When every run has ended, the files are made
whole from their ``logs/`` and TensorBoard stays up until interrupted (``--exit-when-done`` ends
then instead).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from airflow_provider.core.errors import ConfigurationError

if TYPE_CHECKING:
    import argparse

    from airflow_provider.cli.context import Context

__all__ = ["tensorboard"]

_ENDED = ("Completed", "Failed", "Canceled")


def tensorboard(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Sync the runs' logs into ``--logdir`` and serve them with TensorBoard."""
    from airflow_provider.core.live_logs import LiveLogReader
    from airflow_provider.core.paths import state_dir

    logdir = Path(args.logdir) if args.logdir else state_dir() / "tensorboard" / time.strftime("%Y%m%d-%H%M%S")
    readers = []
    for run_id in args.runs:
        run = context.run(run_id)
        name = run.experiment.tracker.get_run(run.id).info.run_name or "run"
        folder = logdir / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}-{run.id[:8]}"
        readers.append((run, LiveLogReader(run.experiment.tracker, run.id, folder)))
    server = None if args.no_server else _start_server(logdir, args.host, args.port, args.reload_interval)
    out.write(f"logdir {logdir}\n")
    if server is not None:
        out.write(f"TensorBoard at http://{args.host}:{args.port}/\n")
    out.flush()
    try:
        pending = list(readers)
        while pending:
            for run, reader in list(pending):
                ended = run.get_details()["status"] in _ENDED
                reader.sync(ended=ended)
                if ended:
                    pending.remove((run, reader))
                    out.write(f"run {run.id} ended; its logs are whole\n")
                    out.flush()
            if pending:
                time.sleep(args.interval)
        if server is not None and not args.exit_when_done:
            out.write("every run has ended; TensorBoard stays up until interrupted (Ctrl-C)\n")
            out.flush()
            server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
    return 0


def _start_server(logdir: Path, host: str, port: int, reload_interval: float) -> subprocess.Popen[bytes]:
    """``tensorboard --logdir LOGDIR`` in its own process."""
    logdir.mkdir(parents=True, exist_ok=True)
    executable = shutil.which("tensorboard") or str(Path(sys.executable).parent / "tensorboard")
    if not Path(executable).exists():
        raise ConfigurationError("tensorboard", "TensorBoard is not installed here.",
                                 "pip install tensorboard (or pass --no-server and point your own at --logdir).")
    return subprocess.Popen([executable, "--logdir", str(logdir), "--host", host, "--port", str(port),
                             "--reload_interval", str(reload_interval), "--load_fast", "false"],
                            stdin=subprocess.DEVNULL)
