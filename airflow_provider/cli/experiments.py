"""``experiments`` and ``archive``: the experiments of the tracking store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import argparse

    from airflow_provider.cli.context import Context

__all__ = ["archive", "list_experiments"]


def list_experiments(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Print the experiments: active ones, or ``--archived`` / ``--all``."""
    from airflow_provider.core import run_listing
    from airflow_provider.core.tracking import Tracker

    view = "all" if args.all else "archived" if args.archived else "active"
    found = run_listing.experiments(Tracker(context.tracking_uri), view)
    rows = [{"name": e.name, "id": str(e.experiment_id), "archived": run_listing.is_archived(e)} for e in found]
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    for row in rows:
        out.write(f"{row['name']}{'  (archived)' if row['archived'] else ''}\n")
    return 0


def archive(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Archive an experiment (hidden, nothing deleted), or bring it back with ``--undo``."""
    experiment = context.experiment(args.experiment)
    if args.undo:
        experiment.reactivate(new_name=args.new_name)
        out.write(f"experiment {experiment.name!r} is active again\n")
    else:
        experiment.archive()
        out.write(f"experiment {experiment.name!r} archived (nothing deleted; `training-runs archive --undo "
                  f"{experiment.name}` brings it back)\n")
    return 0
