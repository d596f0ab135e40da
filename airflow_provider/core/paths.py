"""Where the provider keeps its state on this machine.

One project-state folder holds everything the embedded defaults need: the SQLite MLflow store and
its artifacts, the snapshot store, the environment cache, registered environments and the local
target's job folders. It is, in order of precedence:

1. ``$TRAINING_RUNS_HOME``;
2. ``$AIRFLOW_HOME/training_runs`` when ``AIRFLOW_HOME`` is set (the provider inside Airflow);
3. ``~/.local/share/airflow-training-runs``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["state_dir"]

STATE_DIR_VARIABLE = "TRAINING_RUNS_HOME"


def state_dir() -> Path:
    """Return the project-state folder, creating it when missing."""
    explicit = os.environ.get(STATE_DIR_VARIABLE)
    if explicit:
        path = Path(explicit)
    elif os.environ.get("AIRFLOW_HOME"):
        path = Path(os.environ["AIRFLOW_HOME"]) / "training_runs"
    else:
        path = Path.home() / ".local" / "share" / "airflow-training-runs"
    path.mkdir(parents=True, exist_ok=True)
    return path
