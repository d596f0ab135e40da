"""Relays a run's events (metrics, tags, files, tables) from its target to MLflow.

The events file on the target is the durable journal. The relay reads it from a byte offset, turns
complete lines into MLflow writes, and records the new offset as the run tag
``training.relay.events_offset`` in the same ``log_batch`` call as the last metrics. A relay that
restarts (a new watcher, a retried task) resumes from that tag. If it died between writing metrics
and the offset, it replays them: MLflow's SQL store ignores a metric value identical in key, value,
step and timestamp, and every event carries its own step and timestamp, so nothing is doubled.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from airflow_provider.core.events import (
    FileEvent,
    MetricEvent,
    RowEvent,
    TableEvent,
    TagEvent,
    decode_event,
    decode_events,
    split_complete_lines,
    valid_name,
)
from airflow_provider.core.targets.base import ComputeTarget, JobHandle
from airflow_provider.core.tracking import MetricValue, Tags, Tracker

__all__ = ["EventRelay"]

_READ_LIMIT = 8 << 20


class EventRelay:
    """Moves one run's events to MLflow, from a durable offset.

    :param tracker: where the run lives.
    :param target: where the job runs.
    :param handle: the job.
    :param run_id: the MLflow run id.
    """

    def __init__(self, tracker: Tracker, target: ComputeTarget, handle: JobHandle, run_id: str) -> None:
        self.tracker = tracker
        self.target = target
        self.handle = handle
        self.run_id = run_id
        tags = tracker.get_run(run_id).data.tags
        self.offset = int(tags.get(Tags.EVENTS_OFFSET, "0"))
        self.relayed = 0
        self.dropped = int(tags.get(Tags.DROPPED_EVENTS, "0"))
        self._tables: dict[str, list[dict[str, Any]]] = {}
        if self.offset:
            self._rebuild_tables()

    def pump(self) -> int:
        """Relay every complete event available now.

        :return: how many events were relayed.
        """
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
        for event in decode_events(lines):
            if isinstance(event, (MetricEvent, TagEvent)) and not valid_name(event.key):
                self.dropped += 1  # MLflow would refuse the whole batch: keep the rest flowing
                continue
            if isinstance(event, MetricEvent):
                metrics.append(MetricValue(event.key, event.value, event.step, event.timestamp_ms))
            elif isinstance(event, TagEvent):
                tags[event.key] = event.value
            elif isinstance(event, FileEvent):
                files.append(event)
            elif isinstance(event, (RowEvent, TableEvent)):
                self._apply_table(event)
                touched_tables.add(event.name)
        for file_event in files:
            self._upload(file_event)
        for name in sorted(touched_tables):
            self.tracker.log_text(self.run_id, json.dumps(self._table_json(name), default=str),
                                  f"tables/{name}.json")
        if len(tags) > 90:
            self.tracker.set_tags(self.run_id, tags)
            tags = {}
        tags[Tags.EVENTS_OFFSET] = str(new_offset)
        if self.dropped:
            tags[Tags.DROPPED_EVENTS] = str(self.dropped)
        self.tracker.log_metrics(self.run_id, metrics, tags)

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
                self.dropped += 1
                self.tracker.set_tags(self.run_id, {Tags.EVENTS_OFFSET: str(self.offset),
                                                    Tags.DROPPED_EVENTS: str(self.dropped)})
                return True
            if len(chunk) < _READ_LIMIT:
                return False
            position += len(chunk)

    def _upload(self, event: FileEvent) -> None:
        with tempfile.TemporaryDirectory(prefix="relay-") as scratch:
            source = self.target.fetch(self.handle, event.source, Path(scratch))
            if source is None:
                return
            artifact = Path(event.artifact_path)
            named = Path(scratch) / "named" / artifact.name
            named.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, named)
            folder = artifact.parent.as_posix()
            self.tracker.log_artifact(self.run_id, named, None if folder in ("", ".") else folder)

    def _apply_table(self, event: RowEvent | TableEvent) -> None:
        rows = self._tables.setdefault(event.name, [])
        if isinstance(event, RowEvent):
            rows.append(event.row)
        else:
            length = max((len(v) for v in event.columns.values()), default=0)
            rows.extend({k: v[i] for k, v in event.columns.items()} for i in range(length))

    def _table_json(self, name: str) -> dict[str, Any]:
        rows = self._tables[name]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        return {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}

    def _rebuild_tables(self) -> None:
        """Recover table rows already relayed (they are rewritten whole on every change)."""
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
            position += consumed
