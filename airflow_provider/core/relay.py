"""Relays a run's events (metrics, tags, files, tables) from its target to MLflow.

The events file on the target is the durable journal. The relay reads it from a byte offset, turns
complete lines into MLflow writes, and records the new offset in the run's bookkeeping tag
(``training.bookkeeping``: ``events_offset``) in the same ``log_batch`` call as the last metrics. A relay that
restarts (a new watcher, a retried task) resumes from that tag. If it died between writing metrics
and the offset, it replays them: MLflow's SQL store ignores a metric value identical in key, value,
step and timestamp, and every event carries its own step and timestamp, so nothing is doubled.

A line that is not an event, or an event MLflow or the provider refuses (a tag the provider owns,
an artifact path leaving the run, a name MLflow cannot store), is skipped and noted in the run's
``system_logs/warnings.log`` (:class:`RunWarnings`); everything else still flows.

Azure ML v1 compatibility adds child runs and model registration (:mod:`nested_runs`): events of
a child run go to the MLflow run created for it (found again by its key on replay), and models are
registered as soon as their artifact exists, the rest by :meth:`EventRelay.finish` once the run's
outputs are uploaded.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_provider.core.bookkeeping import read_bookkeeping
from airflow_provider.core.collect import UNREADABLE_ERRORS
from airflow_provider.core.nested_runs import ChildRuns, artifact_exists, register_model
from airflow_provider.core.run_warnings import RunWarnings
from airflow_provider.core.targets.base import ComputeTarget, JobHandle
from airflow_provider.core.tracking import MetricValue, RunState, Tags, Tracker, is_refusal
from airflow_provider.runtime.events import (
    ChildRunEvent,
    EndRunEvent,
    Event,
    FileEvent,
    MetricEvent,
    ModelEvent,
    RowEvent,
    TableEvent,
    TagEvent,
    decode_event,
    decode_events,
    is_reserved_tag,
    safe_relative_path,
    split_complete_lines,
    valid_name,
)

__all__ = ["EventRelay"]

_READ_LIMIT = 8 << 20
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class EventRelay:
    """Moves one run's events to MLflow, from a durable offset.

    :param tracker: where the run lives.
    :param target: where the job runs.
    :param handle: the job.
    :param run_id: the MLflow run id.
    :param run_tags: the run's tags as read under its lock by the watcher (None: read them here).
    """

    def __init__(self, tracker: Tracker, target: ComputeTarget, handle: JobHandle, run_id: str,
                 run_tags: Mapping[str, str] | None = None) -> None:
        self.tracker = tracker
        self.target = target
        self.handle = handle
        self.run_id = run_id
        tags = run_tags if run_tags is not None else tracker.get_run(run_id).data.tags
        recorded = read_bookkeeping(tags)
        self.offset = int(recorded.get("events_offset", 0))
        self.relayed = 0
        self.dropped = int(recorded.get("dropped_events", 0))
        self.warnings = RunWarnings(tracker, run_id, RunWarnings.recorded_in(tags))
        """Notes of what was skipped; the watcher adds its own (files it did not follow)."""
        self._tables: dict[str, list[dict[str, Any]]] = {}
        self._child_tables: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.children = ChildRuns(tracker, run_id)
        self._has_children = False
        self._pending_models: list[ModelEvent] = []
        self._fail_requested: str | None = None
        self.last_metric_keys: set[str] = set()
        """Names of the run's metrics relayed by the last :meth:`pump` (a sweep's policy watches one)."""
        if self.offset:
            self._rebuild_tables()

    def pump(self) -> int:
        """Relay every complete event available now.

        :return: how many events were relayed.
        """
        self.last_metric_keys = set()
        total = 0
        while True:
            chunk = self.target.read(self.handle, "events", self.offset, _READ_LIMIT)
            lines, consumed = split_complete_lines(chunk)
            if not consumed and len(chunk) == _READ_LIMIT:  # a line longer than any event may be
                if self._skip_oversized_line():
                    continue
                return total
            if not consumed:
                return total
            self._relay(lines, self.offset + consumed)
            self.offset += consumed
            total += len(lines)
            self.relayed += len(lines)
            if len(chunk) < _READ_LIMIT:
                return total

    def _relay(self, lines: list[bytes], new_offset: int) -> None:
        metrics: list[MetricValue] = []
        tags: dict[str, str] = {}
        files: list[FileEvent] = []
        touched_tables: set[str] = set()
        nested: list[Event] = []
        for line, event in zip(lines, decode_events(lines), strict=True):
            problem = _refusal(line, event)
            if problem is not None:
                if problem:
                    self._drop(problem)
                continue
            assert event is not None
            if event.child or isinstance(event, (ChildRunEvent, EndRunEvent, ModelEvent)):
                nested.append(event)
            elif isinstance(event, MetricEvent):
                metrics.append(MetricValue(event.key, event.value, event.step, event.timestamp_ms))
            elif isinstance(event, TagEvent):
                tags[event.key] = event.value
            elif isinstance(event, FileEvent):
                files.append(event)
            elif isinstance(event, (RowEvent, TableEvent)):
                self._apply_table(event)
                touched_tables.add(event.name)
        self.last_metric_keys.update(metric.key for metric in metrics)
        for file_event in files:
            self._upload(file_event)
        for name in sorted(touched_tables):
            self.tracker.log_text(self.run_id, json.dumps(_table_json(self._tables[name]), default=str),
                                  f"tables/{name}.json")
        if nested:
            self._relay_nested(nested)
        if len(tags) > 90:
            self.tracker.set_tags(self.run_id, tags)
            tags = {}
        self.warnings.flush()
        tags.update(self._position(new_offset))
        self._log_metrics(self.run_id, metrics, tags)

    def _position(self, offset: int) -> dict[str, str]:
        """The bookkeeping tag recording how far the events file was relayed (and what was dropped)."""
        return self.tracker.bookkeeping_tags(self.run_id, {"events_offset": offset, "dropped_events": self.dropped})

    def _drop(self, problem: str) -> None:
        self.dropped += 1
        self.warnings.add(problem)

    def _log_metrics(self, run_id: str, metrics: list[MetricValue], tags: dict[str, str] | None = None) -> None:
        """``log_batch`` the values; when MLflow refuses the batch for one of them, log them one by one
        and skip only those it refuses."""
        try:
            self.tracker.log_metrics(run_id, metrics, tags)
            return
        except Exception as exc:
            if not is_refusal(exc) or not metrics:
                raise
        for metric in metrics:
            try:
                self.tracker.log_metrics(run_id, [metric])
            except Exception as exc:
                if not is_refusal(exc):
                    raise
                self._drop(f"metric {metric.key!r} = {metric.value!r} (step {metric.step}) was refused by MLflow: "
                           f"{_first_line(exc)}")
        self.warnings.flush()
        if tags:
            self.tracker.set_tags(run_id, tags)

    def _skip_oversized_line(self) -> bool:
        """Move the offset past a line too long to be an event (written by something else).

        :return: False when the line has no end yet (it is still being written).
        """
        position = self.offset + _READ_LIMIT
        while True:
            chunk = self.target.read(self.handle, "events", position, _READ_LIMIT)
            newline = chunk.find(b"\n")
            if newline >= 0:
                self.offset = position + newline + 1
                self._drop(f"events file: a line of more than {_READ_LIMIT} bytes at offset {position - _READ_LIMIT} "
                           "is not an event; skipped")
                self.warnings.flush()
                self.tracker.set_tags(self.run_id, self._position(self.offset))
                return True
            if len(chunk) < _READ_LIMIT:
                return False
            position += len(chunk)

    def _relay_nested(self, events: list[Event]) -> None:
        """Child runs' events, child runs' endings, ``run.fail()`` and model registrations, in order."""
        metrics: dict[str, list[MetricValue]] = {}
        tags: dict[str, dict[str, str]] = {}
        tables: set[tuple[str, str]] = set()
        later: list[EndRunEvent | ModelEvent] = []
        for event in events:
            if isinstance(event, ChildRunEvent):
                self._has_children = True
                if self.children.create(event) is None:
                    self.dropped += 1
                continue
            if isinstance(event, (EndRunEvent, ModelEvent)):
                later.append(event)
                continue
            run_id = self.children.run_id_of(event.child)
            if run_id is None:  # a child that was never created
                self.dropped += 1
            elif isinstance(event, MetricEvent):
                metrics.setdefault(run_id, []).append(
                    MetricValue(event.key, event.value, event.step, event.timestamp_ms))
            elif isinstance(event, TagEvent):
                tags.setdefault(run_id, {})[event.key] = event.value
            elif isinstance(event, FileEvent):
                self._upload(event, run_id)
            elif isinstance(event, (RowEvent, TableEvent)):
                self._apply_table(event)
                tables.add((event.child, event.name))
        for run_id, values in metrics.items():
            self._log_metrics(run_id, values, tags.pop(run_id, None))
        for run_id, values_ in tags.items():
            self.tracker.set_tags(run_id, values_)
        for child, name in sorted(tables):
            child_run = self.children.run_id_of(child)
            if child_run is not None:
                self.tracker.log_text(child_run, json.dumps(_table_json(self._child_tables[(child, name)]),
                                                            default=str), f"tables/{name}.json")
        for ending in later:
            if isinstance(ending, ModelEvent):
                self._register_or_defer(ending)
            elif ending.child:
                self.children.end(ending)
            else:  # run.fail() in the script: the run ends Failed when the script ends
                self._fail_requested = ending.details or "run.fail() was called"
                self.tracker.set_tags(self.run_id, {Tags.FAIL_REQUESTED: self._fail_requested})

    def _register_or_defer(self, event: ModelEvent) -> None:
        run_id = self.children.run_id_of(event.child) if event.child else self.run_id
        if run_id is not None and artifact_exists(self.tracker, run_id, event.path):
            register_model(self.tracker, run_id, event)
        else:  # e.g. a file in ./outputs: uploaded when the run is finalized
            self._pending_models.append(event)

    def finish(self, state: RunState, error: str) -> tuple[RunState, str]:
        """At finalize, once outputs are uploaded: register the models still waiting for their
        artifacts, apply a ``run.fail()`` of the script, end child runs still open.

        :param state: the run's terminal state so far.
        :param error: its error message so far.
        :return: the terminal state and error to record.
        """
        problems = []
        for event in self._pending_models:
            run_id = self.children.run_id_of(event.child) if event.child else self.run_id
            if run_id is None or not artifact_exists(self.tracker, run_id, event.path):
                problems.append(f"register_model({event.name!r}): the run has no artifact {event.path!r}")
                continue
            register_model(self.tracker, run_id, event)
        self._pending_models.clear()
        if problems:
            self.tracker.set_tags(self.run_id, {Tags.MODEL_ERRORS: "; ".join(problems)})
        if state is RunState.COMPLETED and self._fail_requested is not None:
            state, error = RunState.FAILED, f"the script called run.fail(): {self._fail_requested}"
        if self._has_children:
            self.children.end_open(state)
        return state, error

    def _upload(self, event: FileEvent, run_id: str | None = None) -> None:
        with tempfile.TemporaryDirectory(prefix="relay-") as scratch:
            source = self.target.fetch(self.handle, event.source, Path(scratch))
            if source is None:
                return
            if source.is_symlink() or not source.is_file():
                self._drop(f"upload of {event.source!r} as {event.artifact_path!r} skipped: not a regular file")
                return
            artifact = Path(event.artifact_path)
            named = Path(scratch) / "named" / artifact.name
            named.parent.mkdir(parents=True, exist_ok=True)
            folder = artifact.parent.as_posix()
            try:
                shutil.copyfile(source, named)
            except UNREADABLE_ERRORS as exc:  # the script removed it, or made it unreadable
                self._drop(f"upload of {event.source!r} as {event.artifact_path!r} failed: {_first_line(exc)}")
                return
            try:
                self.tracker.log_artifact(run_id or self.run_id, named, None if folder in ("", ".") else folder)
            except Exception as exc:
                if not is_refusal(exc):
                    raise
                self._drop(f"upload of {event.source!r} as {event.artifact_path!r} was refused: {_first_line(exc)}")

    def _apply_table(self, event: RowEvent | TableEvent) -> None:
        if event.child:
            rows = self._child_tables.setdefault((event.child, event.name), [])
        else:
            rows = self._tables.setdefault(event.name, [])
        if isinstance(event, RowEvent):
            rows.append(event.row)
        else:
            length = max((len(v) for v in event.columns.values()), default=0)
            rows.extend({k: v[i] for k, v in event.columns.items()} for i in range(length))

    def _rebuild_tables(self) -> None:
        """Recover table rows already relayed (they are rewritten whole on every change), and the
        model registrations and child runs asked for (both idempotent, see :mod:`nested_runs`)."""
        position = 0
        while position < self.offset:
            chunk = self.target.read(self.handle, "events", position, min(_READ_LIMIT, self.offset - position))
            lines, consumed = split_complete_lines(chunk)
            if not consumed:
                return
            for line in lines:
                if b'"e":"row"' in line or b'"e":"table"' in line:
                    event = decode_event(line)
                    if isinstance(event, (RowEvent, TableEvent)):
                        self._apply_table(event)
                elif b'"e":"child"' in line:
                    self._has_children = True
                elif b'"e":"end"' in line:
                    ending = decode_event(line)
                    if isinstance(ending, EndRunEvent) and not ending.child:
                        self._fail_requested = ending.details or "run.fail() was called"
                elif b'"e":"model"' in line:
                    model = decode_event(line)
                    if isinstance(model, ModelEvent):
                        self._pending_models.append(model)
            position += consumed


def _refusal(line: bytes, event: Event | None) -> str | None:
    """Why ``event`` cannot be relayed (None: it can; "": skip it without a note, a blank line)."""
    if event is None:
        text = line.decode("utf-8", errors="replace").strip()
        return f"events file: skipped a line that is not an event: {text[:200]!r}" if text else ""
    if isinstance(event, (MetricEvent, TagEvent)) and not valid_name(event.key):
        kind = "metric" if isinstance(event, MetricEvent) else "tag"
        return f"{kind} name {event.key!r} cannot be stored in MLflow; skipped"
    if isinstance(event, MetricEvent) and not (_INT64_MIN <= event.step <= _INT64_MAX
                                                and _INT64_MIN <= event.timestamp_ms <= _INT64_MAX):
        return f"metric {event.key!r}: step {event.step} or timestamp {event.timestamp_ms} is out of range; skipped"
    if isinstance(event, TagEvent) and is_reserved_tag(event.key):
        return (f"tag {event.key!r} belongs to the provider (training.*) or MLflow (mlflow.*) and cannot be set "
                "by the script; skipped")
    if isinstance(event, FileEvent) and not (safe_relative_path(event.artifact_path)
                                             and safe_relative_path(event.source)):
        return (f"file {event.source!r} -> artifact {event.artifact_path!r}: a path leaving the job folder or the "
                "run's artifacts; skipped")
    if isinstance(event, (RowEvent, TableEvent)) and not (valid_name(event.name) and safe_relative_path(event.name)):
        return f"table name {event.name!r} cannot name an artifact (tables/<name>.json); skipped"
    if isinstance(event, ModelEvent) and not safe_relative_path(event.path):
        return f"register_model({event.name!r}): artifact path {event.path!r} leaves the run's artifacts; skipped"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _table_json(rows: list[dict[str, Any]]) -> dict[str, Any]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}
