"""``list``, ``show``, ``logs``, ``cancel`` and ``download``: runs found again from a terminal."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from airflow_provider.core.bookkeeping import job_record
from airflow_provider.core.errors import ArtifactNotFoundError, ConfigurationError, TrackingError

if TYPE_CHECKING:
    import argparse

    from airflow_provider.cli.context import Context

__all__ = ["cancel", "download", "list_runs", "logs", "show"]

_DRIVER_LOG = "system_logs/driver.log"
_ENDED = ("Completed", "Failed", "Canceled")


def list_runs(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Print the runs, newest first: of ``--experiment``, or of every active experiment."""
    from airflow_provider.core import run_listing
    from airflow_provider.core.submit import Experiment
    from airflow_provider.core.tracking import RunState, Tags

    tags = dict(_key_value(item, "--tag") for item in args.tag or [])
    experiments = [context.experiment(args.experiment)] if args.experiment else Experiment.list(
        tracking_uri=context.tracking_uri)
    selected = run_listing.run_filter(args.status, tags or None, field="--tag")
    limit = args.limit or None
    rows: list[dict[str, Any]] = []
    for experiment in experiments:
        found = experiment.tracker.client.get_experiment_by_name(experiment.name)
        if found is None:
            raise ConfigurationError("--experiment", f"no experiment named {experiment.name!r}.",
                                     "`training-runs experiments` lists them.")
        for run in run_listing.runs(experiment.tracker, str(found.experiment_id), selected, args.all, limit):
            rows.append({"run_id": run.info.run_id, "experiment": experiment.name,
                         "status": run.data.tags.get(Tags.STATE, RunState.QUEUED.value),
                         "started": _time(run.info.start_time), "name": run.info.run_name,
                         "target": run.data.tags.get(Tags.TARGET, ""),
                         "command": run.data.tags.get(Tags.COMMAND, "")})
    rows.sort(key=lambda row: row["started"] or "", reverse=True)
    rows = rows[:limit] if limit else rows
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    _table(out, rows, ["run_id", "experiment", "status", "started", "name", "command"])
    return 0


def show(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Print a run's details (``get_details()``) as JSON."""
    run = context.run(args.run)
    details = run.get_details()
    if args.metrics:
        details["metrics"] = run.get_metrics()
    json.dump(details, out, indent=2, default=str)
    out.write("\n")
    return 0


def logs(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Print a run's output; with ``--follow``, until the run ends.

    From the target when the run's job can be read there (a run of the local target, or ``--target``),
    else from the driver log its watcher uploads to MLflow while it goes on (every 15 s).
    """
    from airflow_provider.core.script_run import ScriptRun

    run = context.run(args.run, args.target)
    if not isinstance(run, ScriptRun):
        raise ConfigurationError("RUN", f"{args.run} is a sweep; its trials have the logs.",
                                 f"list them with `training-runs list --all --experiment {run.experiment.name}`.")
    if run.target is not None and run.handle is not None:
        return _stream_from_target(run, args.follow, out)
    offset = 0
    while True:
        offset += _print_new(run, offset, out)
        if not args.follow or run.get_details()["status"] in ("Completed", "Failed", "Canceled"):
            offset += _print_new(run, offset, out)  # what the finalizer uploaded last
            return 0
        time.sleep(args.interval)


def cancel(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Cancel a run: its job is stopped on its target and the run ends Canceled."""
    from airflow_provider.core.script_run import ScriptRun

    run = context.run(args.run, args.target)
    status = run.get_status()
    if status in _ENDED:
        out.write(f"run {run.id} already ended {status}\n")
        return 0
    if isinstance(run, ScriptRun) and (run.target is None or run.handle is None):
        tags = run.experiment.tracker.get_run(run.id).data.tags
        if job_record(tags) is None:
            raise ConfigurationError("RUN", f"run {run.id} is {status} and its job was never launched (a sweep's "
                                     "staged trial, or a submission that died).",
                                     "cancel the sweep or the task that submitted it.")
        raise ConfigurationError("--target", f"run {run.id} runs on {tags.get('training.target')}; this process "
                                 "cannot reach its job without the target.",
                                 "pass --target with the connection id it was submitted to.")
    if isinstance(run, ScriptRun):
        assert run.target is not None and run.handle is not None
        run.target.cancel(run.handle, wait=False)  # its supervisor stops the job; its watcher records the ending
        deadline = time.monotonic() + 60
        status = run.get_status()  # drives the run from here when no watcher of this machine holds it
        while status not in _ENDED and time.monotonic() < deadline:
            time.sleep(0.5)
            status = run.get_status()
        if status not in _ENDED:  # nobody recorded it: this process does
            run.cancel()
    else:
        run.cancel()  # a sweep: its driver (wherever it runs) stops the trials when it sees the sweep ended
    deadline = time.monotonic() + 60
    status = run.get_status()
    while status not in _ENDED and time.monotonic() < deadline:
        time.sleep(0.5)
        status = run.get_status()
    out.write(f"run {run.id}: {status}\n")
    if status not in _ENDED:
        sys.stderr.write(f"training-runs: run {run.id} is still {status}; its job was asked to stop\n")
        return 3
    return 0


def download(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Download a run's artifact (a file or a folder) into ``--to`` (default: the current folder)."""
    run = context.run(args.run)
    destination = Path(args.to or ".")
    destination.mkdir(parents=True, exist_ok=True)
    try:
        local = run.experiment.tracker.download_artifact(run.id, args.path, str(destination))
    except ArtifactNotFoundError as exc:
        names = run.experiment.tracker.list_artifacts(run.id)
        raise ConfigurationError("PATH", f"run {run.id} has no artifact {args.path!r}.",
                                 f"pick one of: {', '.join(names[:20])}.") from exc
    out.write(f"{local}\n")
    return 0


# ---------------------------------------------------------------------- helpers
def _stream_from_target(run: Any, follow: bool, out: TextIO) -> int:
    """Print the job's output as the target has it, without watching (nor finalizing) the run."""
    offset = 0
    while True:
        status = run.target.poll(run.handle)
        while True:
            chunk = run.target.read(run.handle, "driver", offset)
            if not chunk:
                break
            out.write(chunk.decode("utf-8", errors="replace"))
            out.flush()
            offset += len(chunk)
        if not follow or not status.active:
            return 0
        time.sleep(0.5)


def _print_new(run: Any, offset: int, out: TextIO) -> int:
    """Print the uploaded driver log past ``offset``; the number of bytes printed."""
    with tempfile.TemporaryDirectory(prefix="logs-") as scratch:
        try:
            local = run.experiment.tracker.download_artifact(run.id, _DRIVER_LOG, scratch)
        except TrackingError:  # nothing uploaded yet
            return 0
        with open(local, "rb") as stream:
            stream.seek(offset)
            data = stream.read()
    out.write(data.decode("utf-8", errors="replace"))
    out.flush()
    return len(data)


def _key_value(item: str, field: str) -> tuple[str, str]:
    key, separator, value = item.partition("=")
    if not separator or not key:
        raise ConfigurationError(field, f"expects KEY=VALUE, got {item!r}.", f"write {field} team=churn.")
    return key, value


def _time(milliseconds: int | None) -> str | None:
    if not milliseconds:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(milliseconds / 1000))


def _table(out: TextIO, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A plain text table, each column as wide as its widest cell (commands cut at 60 characters)."""
    cells = [[str(row.get(column) or "")[:60] for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[index]) for line in cells)]) for index, column in enumerate(columns)]
    header = "  ".join(column.upper().ljust(width) for column, width in zip(columns, widths, strict=True))
    out.write(header.rstrip() + "\n")
    for line in cells:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n")
    if not rows:
        sys.stderr.write("no runs\n")
