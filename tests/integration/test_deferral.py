"""Deferring a run, against real local jobs and a real MLflow store: the worker watches it for a
while first (``ScriptRun.watch_for``), and the trigger that takes over fires at once unless a
triggerer runs it (the scheduler race, see ``airflow_provider.triggers.training_run``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import Experiment, ScriptRun, ScriptRunConfig
from airflow_provider.run_reference import RunReference
from airflow_provider.triggers.training_run import MINIMUM_SECONDS_BEFORE_EVENT, TrainingRunTrigger
from tests.helpers import wait_until, write_script

pytestmark = pytest.mark.usefixtures("tracking_uri")

# Prints two lines and half a third, says so, then finishes the third line once told to go.
HALF_LINE_SCRIPT = """
    import os, sys, time
    print("line 0", flush=True)
    print("line 1", flush=True)
    sys.stdout.write("half-")
    sys.stdout.flush()
    open(os.environ["READY_FILE"], "w").close()
    while not os.path.exists(os.environ["GO_FILE"]):
        time.sleep(0.05)
    print("and-whole", flush=True)
    print("done", flush=True)
"""


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _submit(tmp_path: Path, body: str, **variables: str) -> ScriptRun:
    write_script(tmp_path / "src", body)
    config = ScriptRunConfig(tmp_path / "src", "train.py", environment_variables=variables)
    return Experiment("deferral").submit(config)


def test_a_run_that_ends_within_the_watch_is_finalized_and_never_handed_over(tmp_path: Path) -> None:
    run = _submit(tmp_path, 'print("quick", flush=True)\n')
    lines: list[str] = []
    assert run.watch_for(120, output=lines.append, poll_interval=0.1) is None
    assert lines == ["quick"]
    assert run.get_details()["status"] == "Completed"
    assert MlflowClient().get_run(run.id).info.status == "FINISHED"


def test_a_run_still_going_is_handed_over_and_every_line_is_shown_once_and_whole(tmp_path: Path) -> None:
    ready, go = tmp_path / "ready", tmp_path / "go"
    run = _submit(tmp_path, HALF_LINE_SCRIPT, READY_FILE=str(ready), GO_FILE=str(go))
    wait_until(ready.exists, timeout=120, message="the script to print half a line")
    shown_by_worker: list[str] = []
    offset = run.watch_for(0.5, output=shown_by_worker.append, poll_interval=0.1)
    assert offset is not None, "the run was still going: it must be handed over"
    assert shown_by_worker == ["line 0", "line 1"]
    assert run.get_details()["status"] == "Running"
    go.write_text("go")
    shown_next: list[str] = []
    details = run.wait_for_completion(output=shown_next.append, log_offset=offset, poll_interval=0.1)
    assert details["status"] == "Completed"
    assert shown_next == ["half-and-whole", "done"]


def test_a_zero_watch_hands_over_at_once(tmp_path: Path) -> None:
    go = tmp_path / "go"
    run = _submit(tmp_path, HALF_LINE_SCRIPT, READY_FILE=str(tmp_path / "ready"), GO_FILE=str(go))
    shown: list[str] = []
    assert run.watch_for(0, output=shown.append, log_offset=7) == 7
    assert shown == []
    go.write_text("go")
    assert run.wait_for_completion()["status"] == "Completed"


def _ended_run_trigger(tmp_path: Path) -> TrainingRunTrigger:
    run = _submit(tmp_path, 'print("over", flush=True)\n')
    assert run.handle is not None
    wait_until(lambda: run.target is not None and run.handle is not None
               and run.target.poll(run.handle).state != "running", timeout=120, message="the job to end")
    reference = RunReference(run.id, run.experiment.name, run.experiment.tracking_uri, None, "local",
                             run.handle.to_dict())
    return TrainingRunTrigger(reference.to_dict(), poll_interval=0.1)


def _first_event(trigger: TrainingRunTrigger) -> tuple[dict[str, Any], float]:
    async def first() -> Any:
        return await anext(trigger.run())

    started = time.monotonic()
    event = asyncio.run(first())
    return event.payload, time.monotonic() - started


def test_a_trigger_run_in_line_fires_as_soon_as_the_job_has_ended(tmp_path: Path) -> None:
    """How ``dag.test()`` runs it: no triggerer, no executor, no race to wait out."""
    trigger = _ended_run_trigger(tmp_path)
    payload, seconds = _first_event(trigger)
    assert payload["status"] == "ended"
    assert seconds < MINIMUM_SECONDS_BEFORE_EVENT, f"the event was held {seconds:.1f} s"
    # the task that resumes finalizes the run
    RunReference.from_dict(payload["reference"]).script_run().wait_for_completion(log_offset=payload["log_offset"])


def test_a_trigger_run_by_a_triggerer_holds_its_event_past_the_race(tmp_path: Path) -> None:
    """The triggerer sets ``trigger_id`` before running a trigger; then the scheduler's race applies."""
    trigger = _ended_run_trigger(tmp_path)
    trigger.trigger_id = 1
    payload, seconds = _first_event(trigger)
    assert payload["status"] == "ended"
    assert seconds >= MINIMUM_SECONDS_BEFORE_EVENT
    RunReference.from_dict(payload["reference"]).script_run().wait_for_completion(log_offset=payload["log_offset"])


def test_a_trigger_on_another_machine_than_a_local_job_says_so_and_never_ends_the_run(tmp_path: Path) -> None:
    """A triggerer (or a retry) on another machine than a local job's: its job folder is not there.
    The trigger must not take that for the job's end, which would finalize a running job Failed."""
    go = tmp_path / "go"
    run = _submit(tmp_path, HALF_LINE_SCRIPT, READY_FILE=str(tmp_path / "ready"), GO_FILE=str(go))
    assert run.handle is not None and run.handle.host  # a local job knows its machine
    elsewhere = dict(run.handle.to_dict(), host="another-worker")
    reference = RunReference(run.id, run.experiment.name, run.experiment.tracking_uri, None, "local", elsewhere)
    payload, _ = _first_event(TrainingRunTrigger(reference.to_dict(), poll_interval=0.1))
    assert payload["status"] == "error"
    assert "runs on the machine 'another-worker'" in payload["message"] and "Celery queue" in payload["message"]
    assert run.get_details()["status"] == "Running"  # nothing was finalized
    go.write_text("go")
    assert run.wait_for_completion()["status"] == "Completed"  # its own machine still watches it
