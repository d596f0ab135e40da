"""The embedded SQLite store used for the first time by many processes at once (issue 14): its
schema is created once, under a lock, and every run completes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

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
