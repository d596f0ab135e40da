"""The events wire format and the script-side run context that writes it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from airflow_provider.runtime.events import (
    FileEvent,
    MetricEvent,
    RowEvent,
    TableEvent,
    TagEvent,
    decode_event,
    decode_events,
    encode_event,
    split_complete_lines,
)
from airflow_provider.runtime.run_context import Run

EVENTS = [
    MetricEvent("loss", 0.25, 3, 1_700_000_000_123),
    TagEvent("optimizer", "adam"),
    FileEvent("images/roc.png", "uploads/000001_roc.png"),
    RowEvent("folds", {"fold": 1, "auc": 0.8}),
    TableEvent("confusion", {"label": ["a", "b"], "count": [3, 4]}),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_kind_round_trips(event: object) -> None:
    line = encode_event(event)  # type: ignore[arg-type]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_event(line) == event


def test_bulk_decoding_matches_line_by_line_and_isolates_a_damaged_line() -> None:
    lines = [encode_event(e).rstrip(b"\n") for e in EVENTS]
    assert decode_events(lines) == EVENTS
    damaged = [*lines[:2], b'{"e":"metric","k":', b'{"e":"unknown"}', *lines[2:]]
    assert decode_events(damaged) == [*EVENTS[:2], None, None, *EVENTS[2:]]


def test_only_complete_lines_are_taken() -> None:
    chunk = encode_event(EVENTS[0]) + encode_event(EVENTS[1]) + b'{"e":"tag","k":"half'
    lines, consumed = split_complete_lines(chunk)
    assert len(lines) == 2 and consumed == chunk.rfind(b"\n") + 1
    assert split_complete_lines(b"no newline yet") == ([], 0)


@pytest.fixture
def context(tmp_path: Path) -> Run:
    return Run(str(tmp_path / "events.jsonl"), str(tmp_path / "uploads"), "run-123")


def read_events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_context_writes_one_line_per_value_with_steps(context: Run, tmp_path: Path) -> None:
    context.log("loss", 1.0)
    context.log("loss", 0.5)
    context.log("loss", 0.1, step=10)
    context.log("loss", 0.05)
    context.log("flag", True)
    context.log("note", "text goes to a tag")
    context.log_list("lr", [0.1] * 1200)  # more than one chunk of a write
    events = read_events(tmp_path / "events.jsonl")
    losses = [(e["v"], e["s"]) for e in events if e.get("k") == "loss"]
    assert losses == [(1.0, 0), (0.5, 1), (0.1, 10), (0.05, 11)]
    assert {"e": "metric", "k": "flag", "v": 1.0} .items() <= next(e for e in events if e.get("k") == "flag").items()
    assert {"e": "tag", "k": "note", "v": "text goes to a tag"} in events
    assert [e["s"] for e in events if e.get("k") == "lr"] == list(range(1200))
    assert context.id == "run-123" and not context.is_offline


def test_run_context_rejects_values_that_are_not_numbers(context: Run) -> None:
    with pytest.raises(TypeError, match=r"run\.log\('bad'"):
        context.log("bad", {"a": 1})
    with pytest.raises(ValueError, match="same length"):
        context.log_table("t", {"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError, match="exactly one of"):
        context.log_image("img")


def test_upload_file_copies_now(context: Run, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    context.upload_file("outputs/model.bin", source)
    source.write_bytes(b"changed later")
    (event,) = read_events(tmp_path / "events.jsonl")
    assert event["a"] == "outputs/model.bin"
    assert (tmp_path / str(event["src"])).read_bytes() == b"weights"


def test_offline_context_prints_what_it_would_log(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAINING_RUN_EVENTS_FILE", raising=False)
    monkeypatch.setattr(Run, "_context", None)
    run = Run.get_context()
    assert run.is_offline and run.id == "OfflineRun"
    run.log("accuracy", 0.9)
    run.log_list("lr", [0.1, 0.01])
    run.tag("team", "search")
    printed = capsys.readouterr().out
    assert "Attempted to log scalar metric accuracy:\n0.9" in printed
    assert "Attempted to log list metric lr" in printed and "Attempted to set tag team: search" in printed
    with pytest.raises(RuntimeError, match="outside a submitted run"):
        monkeypatch.setattr(Run, "_context", None)
        Run.get_context(allow_offline=False)
    assert not os.environ.get("TRAINING_RUN_EVENTS_FILE")
