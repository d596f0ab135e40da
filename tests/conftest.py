"""Shared fixtures: every test gets its own state folder and its own MLflow store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_COMPONENTS = os.environ.get("TRAINING_RUNS_REQUIRE_COMPONENTS") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip a test for a missing component, or fail it when CI requires every component."""
    if REQUIRE_COMPONENTS:
        pytest.fail(f"required component missing (TRAINING_RUNS_REQUIRE_COMPONENTS=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the provider's state folder and MLflow at fresh folders inside the test's tmp_path."""
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("TRAINING_RUNS_HOME", str(state))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    yield state
