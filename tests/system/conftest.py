"""System tests: the example DAGs run through ``dag.test()`` against a real Airflow database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO / "airflow_provider" / "example_dags"


def airflow_environment(home: Path, dags_folder: Path) -> dict[str, str]:
    """The environment of an Airflow process using ``home`` and ``dags_folder``."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }


@pytest.fixture(scope="session")
def _airflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated Airflow database, made once per session (``airflow db migrate`` takes seconds)."""
    home = tmp_path_factory.mktemp("airflow-template")
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True,
                   env=airflow_environment(home, home / "dags"), capture_output=True)
    return home / "airflow.db"


@pytest.fixture
def airflow_home(tmp_path: Path, _airflow_db_template: Path) -> Path:
    """A fresh AIRFLOW_HOME for one test, with a migrated database."""
    home = tmp_path / "airflow"
    home.mkdir()
    shutil.copyfile(_airflow_db_template, home / "airflow.db")
    return home


@pytest.fixture
def run_dag(airflow_home: Path) -> Callable[..., dict[str, Any]]:
    """Run a DAG with ``dag.test()`` in a subprocess; return its outcome and keep its output."""

    def run(dag_id: str, dags_folder: Path = EXAMPLE_DAGS, logical_date: str | None = None,
            extra_env: dict[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
        command = [sys.executable, str(Path(__file__).parent / "run_dag.py"), dag_id]
        if logical_date:
            command.append(logical_date)
        result = subprocess.run(command, env={**airflow_environment(airflow_home, dags_folder), **(extra_env or {})},
                                capture_output=True, text=True, timeout=timeout)
        output = result.stdout + result.stderr
        (airflow_home / f"{dag_id}.log").write_text(output)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        assert result.returncode == 0 and lines, f"dag.test() of {dag_id} crashed:\n{output[-5000:]}"
        outcome: dict[str, Any] = json.loads(lines[-1])
        outcome["output"] = output
        return outcome

    return run
