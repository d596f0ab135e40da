"""Deferrable tasks through ``dag.test()`` (what ``airflow dags test`` runs): a run shorter than
``defer_after_seconds`` never defers, and a longer one defers and resumes as soon as it ends (no
scheduler, so no race to wait out)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_provider.triggers.training_run import MINIMUM_SECONDS_BEFORE_EVENT

DAG_TEXT = '''
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider.core import Output
from airflow_provider.operators import SubmitTrainingRunOperator

with DAG("deferral_in_dag_test", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    short = SubmitTrainingRunOperator(task_id="short", source_directory={source!r}, script="train.py",
                                      arguments=["short", 10], deferrable=True, poll_interval=0.5,
                                      experiment_name="deferral")
    long = SubmitTrainingRunOperator(task_id="long", source_directory={source!r}, script="train.py",
                                     arguments=["long", 30, "${{{{outputs.model}}}}"], deferrable=True,
                                     defer_after_seconds=1, poll_interval=0.5, experiment_name="deferral",
                                     outputs={{"model": Output({models!r} + "/{{run_id}}")}})
    short >> long
'''

SCRIPT = """
import os, sys, time
name, lines = sys.argv[1], int(sys.argv[2])
for i in range(lines):
    print(name, i, flush=True)
    time.sleep(0.1)
if len(sys.argv) > 3:
    open(os.path.join(sys.argv[3], "model.txt"), "w").write(name)
"""


def _timestamp(line: str) -> datetime:
    return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))


def test_a_short_run_never_defers_and_a_long_one_resumes_when_it_ends(
        run_dag: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text(SCRIPT)
    dags = tmp_path / "dags"
    dags.mkdir()
    models = tmp_path / "models"
    (dags / "deferral.py").write_text(DAG_TEXT.format(source=str(source), models=str(models)))
    outcome = run_dag("deferral_in_dag_test", dags_folder=dags)
    assert outcome["state"] == "success", outcome["output"][-3000:]
    assert outcome["xcom"]["short"]["status"] == outcome["xcom"]["long"]["status"] == "Completed"
    # the output the deferred run was submitted with travels in the trigger's reference to execute_complete
    long_run = outcome["xcom"]["long"]["run_id"]
    assert outcome["xcom"]["long"]["outputs"] == {"model": str(models / long_run)}
    assert (models / long_run / "model.txt").read_text() == "long"
    lines = outcome["output"].splitlines()
    long_starts = next(i for i, line in enumerate(lines) if "starting task_id=long" in line)
    deferrals = [i for i, line in enumerate(lines) if "running trigger in line" in line]
    assert len(deferrals) == 1 and deferrals[0] > long_starts, "only the long run defers"
    for name, count in (("short", 10), ("long", 30)):
        shown = [line.split("[run] ", 1)[1].split()[1] for line in lines if f"[run] {name} " in line]
        assert shown == [str(i) for i in range(count)], f"the {name} run's lines, each once, in order"
    (trigger_done,) = (i for i, line in enumerate(lines) if "Trigger completed" in line)
    watched = (_timestamp(lines[trigger_done]) - _timestamp(lines[deferrals[0]])).total_seconds()
    assert watched < MINIMUM_SECONDS_BEFORE_EVENT, f"the trigger held its event ({watched:.1f} s)"
