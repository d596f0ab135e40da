"""Where the provider keeps its state on this machine.

One project-state folder holds everything the embedded defaults need: the SQLite MLflow store and
its artifacts, the snapshot store, the environment cache, registered environments and the local
target's job folders. It is, in order of precedence:

1. ``$TRAINING_RUNS_HOME``;
2. ``$AIRFLOW_HOME/training_runs`` when ``AIRFLOW_HOME`` is set (the provider inside Airflow);
3. ``~/.local/share/airflow-training-runs``.

It is private to its user (mode 0700, like ``~/.ssh``): it holds the run history, snapshots of
source code and the job folders of running jobs, whatever the process's umask. A folder made
earlier with a looser mode is tightened when it is first used.

A cache folder, shared by every state folder of the user, keeps what only depends on installed
versions (the empty MLflow schema new embedded stores are copied from): ``$TRAINING_RUNS_CACHE``,
else ``$XDG_CACHE_HOME/airflow-training-runs``, else ``~/.cache/airflow-training-runs``; private too.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "private_folder", "state_dir"]

STATE_DIR_VARIABLE = "TRAINING_RUNS_HOME"
CACHE_DIR_VARIABLE = "TRAINING_RUNS_CACHE"


def state_dir() -> Path:
    """Return the project-state folder, creating it when missing."""
    explicit = os.environ.get(STATE_DIR_VARIABLE)
    if explicit:
        path = Path(explicit)
    elif os.environ.get("AIRFLOW_HOME"):
        path = Path(os.environ["AIRFLOW_HOME"]) / "training_runs"
    else:
        path = Path.home() / ".local" / "share" / "airflow-training-runs"
    return private_folder(path)


def cache_dir() -> Path:
    """Return the user's cache folder (see the module's docstring), creating it when missing."""
    explicit = os.environ.get(CACHE_DIR_VARIABLE)
    if explicit:
        path = Path(explicit)
    elif os.environ.get("XDG_CACHE_HOME"):
        path = Path(os.environ["XDG_CACHE_HOME"]) / "airflow-training-runs"
    else:
        path = Path.home() / ".cache" / "airflow-training-runs"
    return private_folder(path)


def private_folder(path: Path) -> Path:
    """Create ``path`` (and its parents) when missing, and make it private to its owner (0700).

    :param path: the folder.
    :return: ``path``.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = path.stat().st_mode
    if mode & 0o077:
        _tighten(path)
    return path


def _tighten(path: Path) -> None:
    if path.stat().st_uid == os.geteuid():  # someone else's folder (shared on purpose) is left as it is
        os.chmod(path, 0o700)
