"""The README's steps for a user's own DAG ("Your own DAG, from a shell"), run as they are written.

The shell block under the ``<!-- own-dag-steps`` marker is run by bash in a fresh home folder
(``HOME`` is a temporary folder, so its ``~/airflow`` and ``~/my-dags`` are the test's), with the
provider's environment first on PATH and none of this process's ``AIRFLOW_*`` variables: nothing
but the block migrates the database or names the DAG folder. The DAG is a user's, written by the
test: a ``SubmitTrainingRunOperator`` on the local target running a one-line script.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARKER = "<!-- own-dag-steps"

pytestmark = pytest.mark.slow  # Airflow's migrations and one DAG run: ~15 s

USER_DAG = '''
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider.operators import SubmitTrainingRunOperator

with DAG(dag_id="my_dag", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SubmitTrainingRunOperator(
        task_id="train",
        source_directory=str(Path.home() / "my-training"),
        script="train.py",
        compute_target="local",
        experiment_name="my-experiment",
        max_run_duration_seconds=120,
    )
'''
USER_SCRIPT = ('from airflow_provider.core import Run; Run.get_context().log("score", 0.75); '
               'print("hello from the user script")\n')


def own_dag_steps() -> str:
    """The shell block right after the marker in the README."""
    text = README.read_text()
    assert text.count(MARKER) == 1, f"one {MARKER} marker in the README"
    after = text[text.index(MARKER):]
    opening = after.index("\n") + 1
    assert after[opening:].startswith("```bash\n"), "the marker is right above the ```bash block"
    body = after[opening + len("```bash\n"):]
    return body[:body.index("```\n")]


def user_environment(home: Path) -> dict[str, str]:
    """A user's shell: this process's environment without Airflow's, MLflow's or a run's variables
    and without the test's state folder (the provider's state goes to ``$AIRFLOW_HOME/training_runs``
    as the README says; the cache stays the test session's), HOME the test's, the provider's
    environment first on PATH."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("AIRFLOW_", "MLFLOW_", "TRAINING_RUN_", "AZUREML_"))
                   and key not in ("TRAINING_RUNS_HOME", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    environment["HOME"] = str(home)
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
    environment["PIP_NO_INDEX"] = "1"  # the install line is skipped here (installed); it never reaches an index
    return environment


def test_the_readme_steps_run_a_users_own_dag(tmp_path: Path) -> None:
    steps = own_dag_steps()
    for placeholder in ("~/airflow", "~/my-dags", "airflow db migrate", "airflow dags test my_dag"):
        assert placeholder in steps, f"the README's block changed: no {placeholder!r} in\n{steps}"
    home = tmp_path / "home"
    (home / "my-dags").mkdir(parents=True)
    (home / "my-dags" / "my_dag.py").write_text(USER_DAG)
    (home / "my-training").mkdir()
    (home / "my-training" / "train.py").write_text(USER_SCRIPT)

    started = time.monotonic()
    result = subprocess.run(["bash", "-e", "-c", steps], cwd=home, env=user_environment(home),
                            capture_output=True, text=True, timeout=240)
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    (tmp_path / "steps.log").write_text(output)
    assert result.returncode == 0, f"the README's steps failed ({result.returncode}):\n{output[-5000:]}"
    assert "Database migration required" not in output
    assert "[run] hello from the user script" in output, output[-5000:]
    assert "state=success" in output, output[-5000:]
    assert seconds < 120, f"the README's steps took {seconds:.0f} s"

    airflow_home = home / "airflow"
    assert (airflow_home / "airflow.db").is_file(), "the block's AIRFLOW_HOME holds the database"
    client = MlflowClient(f"sqlite:///{airflow_home / 'training_runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("my-experiment")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["airflow.dag_id"] == "my_dag"
    assert run.data.metrics["score"] == 0.75
    assert not list((airflow_home / "training_runs" / "local" / "jobs").iterdir()), "the job folder is removed"
