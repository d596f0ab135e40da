"""The embedded SQLite store used for the first time (issue 14): by many processes at once, its schema
is created once, under a lock, and every run completes; a new store is a copy of the empty schema
MLflow made once for its version, and a cached schema MLflow refuses is forgotten."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core.tracking import Tracker
from tests.helpers import write_script

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SUBMITTER = textwrap.dedent("""
    import sys
    from airflow_provider.core import Experiment, ScriptRunConfig
    run = Experiment("first-use").submit(ScriptRunConfig(sys.argv[1], "train.py", arguments=[sys.argv[2]]))
    print(run.wait_for_completion(raise_on_error=False)["status"])
""")


def test_forty_runs_submitted_at_once_against_a_store_no_run_has_used(isolated_state: Path, tmp_path: Path) -> None:
    assert not (isolated_state / "mlflow.db").exists()
    write_script(tmp_path / "src", """
        import sys
        from airflow_provider.core import Run
        Run.get_context().log("index", int(sys.argv[1]))
    """)
    processes = [subprocess.Popen([sys.executable, "-c", SUBMITTER, str(tmp_path / "src"), str(index)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for index in range(40)]
    results = [process.communicate(timeout=800) for process in processes]
    failed = [(i, err[-800:]) for i, (out, err) in enumerate(results) if out.strip() != "Completed"]
    assert not failed, f"{len(failed)} of 40 runs did not complete; first: {failed[0]}"
    client = MlflowClient(f"sqlite:///{isolated_state / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("first-use")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert sorted(int(r.data.metrics["index"]) for r in runs) == list(range(40))


def _cached_schemas(cache: Path) -> list[Path]:
    return sorted((cache / "mlflow-schemas").glob("mlflow-*.db"))


def _store_works(database: Path) -> None:
    tracker = Tracker(f"sqlite:///{database}")
    run_id = tracker.create_run(tracker.experiment_id("works"), {"k": "v"})
    assert tracker.get_run(run_id).data.tags["k"] == "v"
    tracker.client.set_terminated(run_id)


def test_a_new_store_is_a_copy_of_the_schema_mlflow_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRAINING_RUNS_CACHE", str(cache))
    (tmp_path / "a").mkdir()
    _store_works(tmp_path / "a" / "mlflow.db")  # the first store: MLflow makes the schema, once, in the cache
    [schema] = _cached_schemas(cache)
    with sqlite3.connect(schema) as connection:  # a mark only a copy of this file can carry
        connection.execute("CREATE TABLE copied_from_the_cache (x INTEGER)")
    connection.close()
    (tmp_path / "b").mkdir()
    database = tmp_path / "b" / "mlflow.db"
    _store_works(database)
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        experiments = [row[0] for row in connection.execute("SELECT name FROM experiments ORDER BY name")]
    connection.close()
    assert "copied_from_the_cache" in tables
    assert experiments == ["Default", "works"]  # the schema carried no experiment of the first store
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE(schema.stat().st_mode) == 0o600 and stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_a_cached_schema_mlflow_refuses_is_forgotten_and_the_new_store_still_opens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRAINING_RUNS_CACHE", str(cache))
    (tmp_path / "a").mkdir()
    _store_works(tmp_path / "a" / "mlflow.db")
    [schema] = _cached_schemas(cache)
    with sqlite3.connect(schema) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'not-a-revision'")
    connection.close()
    (tmp_path / "b").mkdir()
    _store_works(tmp_path / "b" / "mlflow.db")
    assert not schema.exists(), "the refused schema was kept for the next store"
    (tmp_path / "c").mkdir()
    _store_works(tmp_path / "c" / "mlflow.db")  # and the next store makes a good one again
    assert _cached_schemas(cache) == [schema]
