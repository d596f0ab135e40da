"""A detached process that finalizes a canceled run after its task process is gone.

When Airflow kills a running task (mark failed/success, clear), ``on_kill`` asks the job to stop
and starts this process, because Airflow SIGKILLs the task a few seconds later, maybe before the
run's outputs, logs and final state reach MLflow. This process waits for the job to end, takes
the run's watcher lock (released by the kernel when the task process dies, or by the task itself
if it finalized first) and finalizes the run if nobody has.

Usage: ``python -m airflow_provider.finalizer '<RunReference JSON>'``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

from airflow_provider.run_reference import RunReference

__all__ = ["finalize_in_background", "main"]

_STOP_TIMEOUT_SECONDS = 120.0


def finalize_in_background(reference: RunReference) -> None:
    """Start the finalizer for ``reference`` as a detached process (own session, no stdin).

    :param reference: the run to finalize.
    """
    subprocess.Popen(
        [sys.executable, "-m", "airflow_provider.finalizer", json.dumps(reference.to_dict())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def main(argv: list[str]) -> int:
    """Finalize the run described by ``argv[1]``."""
    logging.basicConfig(level=logging.INFO)
    run = RunReference.from_dict(json.loads(argv[1])).script_run()
    assert run.target is not None and run.handle is not None
    deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
    while run.target.poll(run.handle).state == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    run.cancel(wait=True)  # forces the stop if the job outlived its grace period
    run.wait_for_completion(raise_on_error=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
