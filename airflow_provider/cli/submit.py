"""``submit JOB``: an Azure ML v2 command or sweep job YAML, or an MLflow ``MLproject``.

The run is submitted through the core API as ``Experiment.submit`` would. With ``--stream`` the
command shows its output and waits for its end (the exit status tells how it ended); without, it
prints the run id at once and a detached watcher takes the run to its end, so its results reach
MLflow after the command has returned.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from airflow_provider.core.errors import ConfigurationError

if TYPE_CHECKING:
    import argparse

    from airflow_provider.cli.context import Context

__all__ = ["overrides", "submit"]

_RUN_ID = re.compile(r"[0-9a-f]{32}")
EXIT_INTERRUPTED = 4
"""``--stream`` was interrupted (Ctrl-C): the run goes on, watched in the background."""


def overrides(items: list[str], as_text: bool = False) -> dict[str, Any]:
    """``--set KEY=VALUE`` items: for a job YAML, a value JSON reads (``0.1``, ``true``, ``[1, 2]``,
    ``null``) is that value, anything else the text as given (``010`` stays ``"010"``, as ``az ml
    job create --set`` does); for an MLproject, always the text (as ``mlflow run -P`` does: the
    entry point's parameter types convert it).

    :param items: the ``--set`` values.
    :param as_text: keep every value as text (an MLproject).
    :raises ConfigurationError: an item without ``=``.
    """
    found: dict[str, Any] = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ConfigurationError("--set", f"expects KEY=VALUE, got {item!r}.",
                                     "write --set inputs.learning_rate=0.1 (or name=value for an MLproject).")
        found[key.strip()] = value if as_text else _json_or_text(value)
    return found


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _is_mlproject(path: str) -> bool:
    given = Path(path)
    return given.name.lower() == "mlproject" or (given.is_dir() and any(
        child.name.lower() == "mlproject" for child in given.iterdir()))


def submit(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Load, check and submit the job file; stream it with ``--stream``."""
    from airflow_provider.core.finalizer import finalize_in_background
    from airflow_provider.core.job_spec import load_job
    from airflow_provider.core.script_run import ScriptRun

    job = load_job(args.job, overrides=overrides(args.set, as_text=_is_mlproject(args.job)) or None,
                   entry_point=args.entry_point)
    if args.validate:
        out.write(f"{job.source_path}: valid {job.kind} job\n")
        return 0
    if job.kind == "sweep" and not args.stream:
        return _sweep_in_background(context, args, out)
    target_name = args.target or job.compute or "local"
    target = context.target(target_name)
    experiment = context.experiment(args.experiment or job.experiment_name)
    if job.kind == "sweep":
        # a run key: a driver started again (after Ctrl-C, in the background) picks the same sweep up
        args.run_key = args.run_key or f"cli/{uuid.uuid4().hex}"
        run: Any = experiment.submit(job.hyperdrive_config(target), tags=job.run_tags(), run_name=job.run_name,
                                     run_key=args.run_key)
    else:
        run = experiment.submit(job.script_run_config(target), tags=job.run_tags(), run_name=job.run_name,
                                params=dict(job.parameters) or None, secret_variables=job.secret_variables() or None)
    out.write(f"{run.id}\n")
    out.flush()
    sys.stderr.write(f"submitted {job.kind} run {run.id} to {target.describe()} (experiment {experiment.name!r})\n")
    if args.stream:
        def show(line: str) -> None:
            out.write(line + "\n")
            out.flush()

        try:
            details = run.wait_for_completion(output=show)
        except KeyboardInterrupt:  # the user stops watching, not the run: it goes on, watched in the background
            if isinstance(run, ScriptRun) and run.target is not None and run.handle is not None:
                finalize_in_background(run, watch=True)
            elif job.kind == "sweep":
                _sweep_in_background(context, args, out, quiet=True)
            sys.stderr.write(f"\ntraining-runs: stopped watching; run {run.id} goes on in the background "
                             f"(`training-runs cancel {run.id}` stops it)\n")
            return EXIT_INTERRUPTED
        sys.stderr.write(f"run {run.id}: {details['status']}\n")
        return 0
    if isinstance(run, ScriptRun) and run.target is not None and run.handle is not None:
        finalize_in_background(run, watch=True)
        sys.stderr.write(f"follow it with `training-runs logs --follow {run.id}`\n")
    return 0


def _sweep_in_background(context: Context, args: argparse.Namespace, out: TextIO, quiet: bool = False) -> int:
    """A sweep's trials are launched while a driver runs: this command submits it in a detached
    process of its own (``submit --stream``, its output in ``<state>/logs/``), prints the sweep's
    id once that process has it, and returns. With ``args.run_key`` (a sweep already submitted) the
    process picks that sweep up; ``quiet`` then returns at once."""
    import subprocess
    import time

    from airflow_provider.core.paths import state_dir

    command = [sys.executable, "-m", "airflow_provider"]
    if context.tracking_uri:
        command += ["--tracking-uri", context.tracking_uri]
    command += ["submit", str(Path(args.job).resolve()), "--stream"]
    for option, value in (("--target", args.target), ("--entry-point", args.entry_point),
                          ("--experiment", args.experiment)):
        if value:
            command += [option, value]
    for item in args.set:
        command += ["--set", item]
    args.run_key = getattr(args, "run_key", None) or f"cli/{uuid.uuid4().hex}"
    command += ["--run-key", args.run_key]
    folder = state_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.log"
    with open(log, "wb") as stream:
        driver = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stream, stderr=subprocess.STDOUT,
                                  start_new_session=True, close_fds=True)
    if quiet:
        return 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        lines = log.read_text(errors="replace").splitlines()
        first = next((line.strip() for line in lines if _RUN_ID.fullmatch(line.strip())), None)
        if first is not None:
            out.write(f"{first}\n")
            sys.stderr.write(f"the sweep runs in the background (process {driver.pid}, its output in {log}); "
                             f"follow it with `training-runs show {first}`\n")
            return 0
        if driver.poll() is not None:
            sys.stderr.write(log.read_text(errors="replace")[-3000:])
            return driver.returncode or 1
        time.sleep(0.2)
    raise ConfigurationError("submit", f"the sweep's process did not start its sweep within 10 minutes (see {log}).",
                             "check the log; the sweep may still start.")
