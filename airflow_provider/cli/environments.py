"""``environments list|show|build``: registered and curated environments, and building one on a
target ahead of its runs."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import argparse

    from airflow_provider.cli.context import Context
    from airflow_provider.core.environments.spec import Environment

__all__ = ["build", "list_environments", "show"]


def list_environments(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Print the registered environments (latest versions) and the curated ones."""
    from airflow_provider.core.environments.spec import Environment

    found = Environment.list()
    rows = [{"name": name, "version": env.version, "kind": env.kind} for name, env in found.items()]
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    width = max([len(row["name"] or "") for row in rows] + [4])
    out.write(f"{'NAME'.ljust(width)}  VERSION  KIND\n")
    for row in rows:
        out.write(f"{str(row['name']).ljust(width)}  {str(row['version'] or '-').ljust(7)}  {row['kind']}\n")
    return 0


def show(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Print an environment's definition (``name`` or ``name:version``, or a folder saved with
    ``save_to_directory``) as JSON."""
    json.dump(_environment(args.name).to_dict(), out, indent=2, sort_keys=True)
    out.write("\n")
    return 0


def build(context: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Build (or find cached) an environment on a target, as a run would, and say how long it took."""
    environment = _environment(args.name)
    target = context.target(args.target)
    target.check()
    started = time.monotonic()
    prepared = target.prepare_environment(environment)
    elapsed = time.monotonic() - started
    verb = "built" if prepared.built else "already built"
    out.write(f"{args.name}: {verb} on {target.describe()} in {elapsed:.1f} s\n")
    out.write(f"  fingerprint {prepared.fingerprint}\n  {prepared.description}\n")
    if prepared.image:
        out.write(f"  image {prepared.image}\n")
    return 0


def _environment(reference: str) -> Environment:
    """An environment by ``name[:version]`` (registered or curated), or from a saved folder."""
    from airflow_provider.core.environments.spec import Environment

    if os.path.isdir(reference):
        return Environment.load_from_directory(reference)
    return Environment.resolve(reference)
