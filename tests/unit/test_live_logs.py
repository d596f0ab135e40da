"""Live ``./logs``: what files gained goes up as parts, and a reader puts them back together (a real
embedded MLflow store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider.core.live_logs import Grown, LiveLogReader, LiveLogUploader, Part, grown_files, part_name
from airflow_provider.core.tracking import RunState, Tracker


@pytest.fixture
def run(tracking_uri: str) -> Iterator[tuple[Tracker, str]]:
    tracker = Tracker(tracking_uri)
    run_id = tracker.create_run(tracker.experiment_id("live-logs"), {})
    yield tracker, run_id
    tracker.end(run_id, RunState.COMPLETED)


def test_appended_bytes_go_up_once_and_a_rewrite_starts_a_new_generation(run: tuple[Tracker, str],
                                                                          tmp_path: Path) -> None:
    tracker, run_id = run
    logs = tmp_path / "logs"
    (logs / "tb").mkdir(parents=True)
    uploader = LiveLogUploader(tracker, run_id)
    reader = LiveLogReader(tracker, run_id, tmp_path / "copy")

    (logs / "tb" / "events").write_bytes(b"abc")
    assert uploader.upload(grown_files(logs, uploader.sent)) == 3
    assert uploader.upload(grown_files(logs, uploader.sent)) == 0, "nothing new, nothing sent"
    with open(logs / "tb" / "events", "ab") as stream:
        stream.write(b"defg")
    assert uploader.upload(grown_files(logs, uploader.sent)) == 4
    assert reader.sync(ended=False) == 7 and (tmp_path / "copy" / "tb" / "events").read_bytes() == b"abcdefg"
    assert reader.sync(ended=False) == 0

    (logs / "tb" / "events").write_bytes(b"xy")  # rewritten, smaller
    assert uploader.upload(grown_files(logs, uploader.sent)) == 2
    listed = tracker.client.list_artifacts(run_id, "live/logs/tb/events")
    names = sorted(entry.path.rsplit("/", 1)[1] for entry in listed)
    assert names == [part_name(Part(0, 0, 3)), part_name(Part(0, 3, 7)), part_name(Part(1, 0, 2))]
    assert reader.sync(ended=False) == 2 and (tmp_path / "copy" / "tb" / "events").read_bytes() == b"xy"


def test_a_reader_waits_at_a_gap_and_an_uploader_skips_what_does_not_follow(run: tuple[Tracker, str],
                                                                            tmp_path: Path) -> None:
    tracker, run_id = run
    uploader = LiveLogUploader(tracker, run_id)
    assert uploader.upload({"a.log": Grown(0, b"12345")}) == 5
    assert uploader.upload({"a.log": Grown(9, b"zz")}) == 0, "not what follows what was sent"
    late = tmp_path / part_name(Part(0, 7, 9))
    late.write_bytes(b"89")
    tracker.log_artifact(run_id, late, "live/logs/a.log")  # a part listed before the one before it
    reader = LiveLogReader(tracker, run_id, tmp_path / "copy")
    assert reader.sync(ended=False) == 5 and (tmp_path / "copy" / "a.log").read_bytes() == b"12345"
    assert uploader.upload({"a.log": Grown(5, b"67")}) == 2
    assert reader.sync(ended=False) == 4 and (tmp_path / "copy" / "a.log").read_bytes() == b"123456789"


def test_a_part_naming_a_path_outside_the_copy_is_refused(run: tuple[Tracker, str], tmp_path: Path) -> None:
    tracker, run_id = run
    reader = LiveLogReader(tracker, run_id, tmp_path / "copy")
    with pytest.raises(ValueError, match="leaves"):
        reader._local("../outside")
