"""The provider's bookkeeping in one tag: merged writes, runs of earlier versions read, and the
run-key search that finds a retry's run (against a real SQLite MLflow store)."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient

from airflow_provider.core.bookkeeping import BOOKKEEPING_TAG, BookkeepingCache, job_record, read_bookkeeping
from airflow_provider.core.tracking import RunState, Tags, Tracker, run_key_hash


def test_a_run_of_an_earlier_version_is_read_from_its_separate_tags() -> None:
    tags = {"training.run_key_hash": "ab12", "training.relay.events_offset": "120",
            "training.relay.dropped_events": "2", "training.job": json.dumps({"job_id": "r1"}),
            "training.state_time.Queued": "t0", "training.state_time.Running": "t1"}
    assert read_bookkeeping(tags) == {"run_key_hash": "ab12", "events_offset": 120, "dropped_events": 2,
                                      "job": {"job_id": "r1"}, "state_times": {"Queued": "t0", "Running": "t1"}}
    assert job_record(tags) == {"job_id": "r1"}


def test_the_tag_wins_over_leftover_separate_tags_and_a_broken_tag_is_ignored() -> None:
    tags = {"training.relay.events_offset": "5", "training.state_time.Queued": "old",
            BOOKKEEPING_TAG: json.dumps({"events_offset": 9, "state_times": {"Running": "t1"}})}
    assert read_bookkeeping(tags) == {"events_offset": 9, "state_times": {"Queued": "old", "Running": "t1"}}
    assert read_bookkeeping({BOOKKEEPING_TAG: "not json"}) == {}
    assert job_record({BOOKKEEPING_TAG: json.dumps({"job": "not an object"})}) is None


def test_writes_merge_into_what_the_run_holds_reading_it_once() -> None:
    reads: list[str] = []

    def read_tags(run_id: str) -> dict[str, str]:
        reads.append(run_id)
        return {BOOKKEEPING_TAG: json.dumps({"run_key_hash": "h", "state_times": {"Queued": "t0"}})}

    cache = BookkeepingCache("store-merge-test", read_tags)
    first_tags = cache.merged("run-a", {"state_times": {"Running": "t1"}, "job": {"job_id": "run-a"}})
    cache.written("run-a", first_tags)
    first = json.loads(first_tags[BOOKKEEPING_TAG])
    second = json.loads(cache.merged("run-a", {"events_offset": 10})[BOOKKEEPING_TAG])
    assert reads == ["run-a"]
    assert second == {**first, "events_offset": 10}
    assert second["state_times"] == {"Queued": "t0", "Running": "t1"} and second["run_key_hash"] == "h"


def test_an_offset_not_yet_written_with_its_metrics_never_goes_out_with_another_write() -> None:
    cache = BookkeepingCache("store-offset-test", lambda run_id: {})
    cache.merged("run-b", {"events_offset": 500})  # the relay's, its metrics not yet written (or failed)
    state_write = json.loads(cache.merged("run-b", {"state_times": {"Finalizing": "t2"}})[BOOKKEEPING_TAG])
    assert "events_offset" not in state_write


def test_an_earlier_versions_offset_still_advancing_during_an_upgrade_counts() -> None:
    tags = {"training.relay.events_offset": "900", BOOKKEEPING_TAG: json.dumps({"events_offset": 400})}
    assert read_bookkeeping(tags)["events_offset"] == 900


def test_a_retry_finds_its_run_by_key_and_a_run_of_an_earlier_version_too(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracker.experiment_id("bookkeeping")
    run_id = tracker.create_run(experiment, {Tags.RUN_KEY: "dag/task/run_1/-1"})
    tracker.create_run(experiment, {Tags.RUN_KEY: "dag/task/run_1/0"})  # a look-alike key
    tracker.set_state(run_id, RunState.RUNNING, job={"job_id": run_id})
    found = tracker.find_run_by_key(experiment, "dag/task/run_1/-1")
    assert found is not None and found.info.run_id == run_id
    recorded = read_bookkeeping(found.data.tags)
    assert set(recorded["state_times"]) == {"Queued", "Running"} and recorded["job"] == {"job_id": run_id}
    assert tracker.find_run_by_key(experiment, "dag/task/run_2/-1") is None

    client = MlflowClient(tracker.tracking_uri)  # as an earlier version recorded it
    legacy = client.create_run(experiment, tags={"training.run_key_hash": run_key_hash("old/key")}).info.run_id
    found = tracker.find_run_by_key(experiment, "old/key")
    assert found is not None and found.info.run_id == legacy
