"""A detached process that finalizes a canceled run after the process watching it is gone.

When Airflow kills a running task (mark failed/success, clear), ``on_kill`` asks the job to stop
and starts this process, because Airflow SIGKILLs the task a few seconds later, maybe before the
run's outputs, logs and final state reach MLflow; a deferred task's trigger does the same. This
process waits for the job to end, takes the run's watcher lock (released by the kernel when the
task process dies, or by the task itself if it finalized first) and finalizes the run if nobody
has. It imports neither Airflow nor anything that needs an Airflow connection: the target is
rebuilt from its spec, and tracking credentials come in its environment.

With ``watch=True`` it is also the detached watcher of a run nobody waits for (``training-runs
submit`` without ``--stream``): it watches the run to its natural end and finalizes it, stopping
nothing.

Usage: ``python -m airflow_provider.core.finalizer '<JSON>'``; its output goes to
``<state>/logs/finalizer-<run id>.log``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

from airflow_provider.core.data.credentials import with_inline_options
from airflow_provider.core.data.outputs import outputs_from_dict, outputs_to_dict
from airflow_provider.core.paths import state_dir
from airflow_provider.core.script_run import ScriptRun
from airflow_provider.core.submit import Experiment
from airflow_provider.core.targets import target_from_spec
from airflow_provider.core.targets.base import JobHandle

__all__ = ["describe", "finalize_in_background", "main", "script_run"]

_STOP_TIMEOUT_SECONDS = 120.0
_ATTEMPTS = 5


def finalize_in_background(run: ScriptRun, environment: dict[str, str] | None = None, watch: bool = False) -> None:
    """Start the finalizer for ``run`` as a detached process (own session, no stdin).

    :param run: a submitted run with a target and a job handle.
    :param environment: extra variables for the finalizer (tracking credentials): never in argv.
    :param watch: watch the run to its own end instead of stopping it.
    """
    assert run.target is not None
    description = {**describe(run), "watch": watch}
    folder = state_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"finalizer-{run.id}.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "airflow_provider.core.finalizer", json.dumps(description)],
            env=with_inline_options({**os.environ, **(environment or {}), **run.target.secret_environment()}, run.id),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )


def describe(run: ScriptRun) -> dict[str, Any]:
    """What the finalizer is given of ``run`` (plain JSON; no credentials): where the job is, and the
    outputs it copies (as submitted, never read back from the run's tags).

    :param run: a submitted run with a target and a job handle.
    """
    assert run.target is not None and run.handle is not None
    return {
        "run_id": run.id,
        "experiment_name": run.experiment.name,
        "tracking_uri": run.experiment.tracking_uri,
        "target": run.target.to_spec(),
        "handle": run.handle.to_dict(),
        "outputs": None if run.outputs is None else outputs_to_dict(run.outputs),
    }


def script_run(description: dict[str, Any]) -> ScriptRun:
    """Rebuild the run :func:`describe` described.

    :param description: its description.
    """
    experiment = Experiment(description["experiment_name"], tracking_uri=description["tracking_uri"])
    outputs = description.get("outputs")
    return ScriptRun(experiment, description["run_id"], target_from_spec(description["target"]),
                     JobHandle.from_dict(description["handle"]),
                     outputs=None if outputs is None else outputs_from_dict(outputs))


def main(argv: list[str]) -> int:
    """Finalize the run described by ``argv[1]``; retry while the tracking store is busy."""
    logging.basicConfig(level=logging.INFO)
    description = json.loads(argv[1])
    run = script_run(description)
    assert run.target is not None and run.handle is not None
    if description.get("watch"):
        return _watch(run)
    deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if not run.target.poll(run.handle).active:
                break
        except Exception:  # a daemon restarting, a dropped connection: the job is still there
            logging.exception("Polling run %s failed; trying again", run.id)
            time.sleep(2)
        time.sleep(0.2)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            run.cancel(wait=True)  # forces the stop if the job outlived its grace period
            details = run.wait_for_completion(raise_on_error=False)
            logging.info("Run %s finalized: %s", run.id, details["status"])
            return 0
        except Exception:
            logging.exception("Finalizing run %s failed (attempt %d of %d)", run.id, attempt, _ATTEMPTS)
            time.sleep(2 * attempt)
    return 1


_WATCH_GIVE_UP_SECONDS = 24 * 3600.0


def _watch(run: ScriptRun) -> int:
    """Watch ``run`` to its end and finalize it. A watch broken by the tracking store or the target
    (after the watcher's own retries) is taken up again with a growing pause (the run's relay resumes
    from its recorded offset); only a day of failures in a row ends it."""
    failing_since: float | None = None
    pause = 5.0
    while True:
        started = time.monotonic()
        try:
            details = run.wait_for_completion(raise_on_error=False)
            logging.info("Run %s finalized: %s", run.id, details["status"])
            return 0
        except Exception:
            now = time.monotonic()
            if now - started > 600:  # it watched for a while: a new failure, not the same one again
                failing_since, pause = None, 5.0
            failing_since = failing_since or now
            logging.exception("Watching run %s failed; taking it up again in %.0f s", run.id, pause)
            if now - failing_since > _WATCH_GIVE_UP_SECONDS:
                return 1
            time.sleep(pause)
            pause = min(300.0, pause * 2)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
