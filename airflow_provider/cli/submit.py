"""``submit JOB``: an Azure ML v2 command or sweep job YAML, or an MLflow ``MLproject``.

The run is submitted through the core API as ``Experiment.submit`` would. With ``--stream`` the
command shows its output and waits for its end (the exit status tells how it ended); without, it
prints the run id at once and a detached watcher takes the run to its end, so its results reach
MLflow after the command has returned.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from airflow_provider.core.errors import ConfigurationError

if TYPE_CHECKING:
    import argparse

    from airflow_provider.cli.context import Context

__all__ = ["overrides", "submit"]


def overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as typed values (``0.1`` a number, ``true`` a boolean, ``[1, 2]`` a
    list: YAML's reading of the value).

    :param items: the ``--set`` values.
    :raises ConfigurationError: an item without ``=``.
    """
    import yaml

    found: dict[str, Any] = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ConfigurationError("--set", f"expects KEY=VALUE, got {item!r}.",
                                     "write --set inputs.learning_rate=0.1 (or name=value for an MLproject).")
        try:
            found[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            found[key.strip()] = value
    return found


def submit(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Load, check and submit the job file; stream it with ``--stream``."""
    from airflow_provider.core.finalizer import finalize_in_background
    from airflow_provider.core.job_spec import load_job
    from airflow_provider.core.script_run import ScriptRun

    job = load_job(args.job, overrides=overrides(args.set) or None, entry_point=args.entry_point)
    if args.validate:
        out.write(f"{job.source_path}: valid {job.kind} job\n")
        return 0
    target_name = args.target or job.compute or "local"
    target = context.target(target_name)
    experiment = context.experiment(args.experiment or job.experiment_name)
    if job.kind == "sweep":
        run: Any = experiment.submit(job.hyperdrive_config(target), tags=job.run_tags(), run_name=job.run_name)
    else:
        run = experiment.submit(job.script_run_config(target), tags=job.run_tags(), run_name=job.run_name,
                                params=dict(job.parameters) or None)
    out.write(f"{run.id}\n")
    out.flush()
    sys.stderr.write(f"submitted {job.kind} run {run.id} to {target.describe()} (experiment {experiment.name!r})\n")
    if args.stream:
        def show(line: str) -> None:
            out.write(line + "\n")
            out.flush()

        details = run.wait_for_completion(output=show)
        sys.stderr.write(f"run {run.id}: {details['status']}\n")
        return 0
    if isinstance(run, ScriptRun) and run.target is not None and run.handle is not None:
        finalize_in_background(run, watch=True)
        sys.stderr.write(f"follow it with `training-runs logs --follow {run.id}`\n")
    else:  # a sweep launches its trials while a driver runs
        sys.stderr.write("a sweep's trials are launched while it is watched: use --stream to run it to its end\n")
    return 0
