"""The events a training script logs, as one JSON object per line of the run's events file.

The script side (:mod:`run_context`) appends lines; the watcher (:mod:`relay`) reads them from a
byte offset and relays them to MLflow. This module is the only place that knows the wire format,
and it imports nothing outside the standard library, so the script side stays cheap to import.

Line format: ``{"e": <kind>, ...}`` with kinds ``metric``, ``tag``, ``file``, ``row`` and
``table``; Azure ML v1 compatibility adds ``child`` (create a child run), ``end`` (a child run
completes or fails, or the run itself asks to fail) and ``model`` (register a model). An event
for a child run carries the child's key in ``"ch"`` (absent for the run itself). Only complete
lines (ending with a newline) are ever parsed, so a line being written while the watcher reads is
picked up on the next read.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Union

__all__ = [
    "EVENTS_FILE_VARIABLE",
    "UPLOADS_DIR_VARIABLE",
    "ChildRunEvent",
    "EndRunEvent",
    "Event",
    "FileEvent",
    "MetricEvent",
    "ModelEvent",
    "RowEvent",
    "TableEvent",
    "TagEvent",
    "decode_event",
    "decode_events",
    "encode_event",
    "is_reserved_tag",
    "safe_relative_path",
    "split_complete_lines",
    "valid_name",
]

EVENTS_FILE_VARIABLE = "TRAINING_RUN_EVENTS_FILE"
"""Environment variable holding the absolute path of the run's events file."""
UPLOADS_DIR_VARIABLE = "TRAINING_RUN_UPLOADS_DIR"
"""Environment variable holding the folder where files passed to ``upload_file`` are staged."""


MAX_EVENT_BYTES = 1 << 20
"""The largest event line; bigger payloads belong in files (``upload_file``)."""

_NAME = re.compile(r"^[/\w.\- :]{1,250}\Z")


def valid_name(name: object) -> bool:
    """True when MLflow accepts ``name`` as a metric or tag key (its own rules, checked early).

    :param name: the proposed name.
    """
    return (isinstance(name, str) and _NAME.match(name) is not None
            and posixpath.normpath(name) == name and not name.startswith(("/", "..")))


USER_MLFLOW_TAGS = frozenset({"mlflow.note.content"})
"""MLflow's own tags a script may set (the run's description); every other ``mlflow.*`` tag is MLflow's."""


def is_reserved_tag(key: str) -> bool:
    """True for tags the provider and MLflow own (``training.*``, ``mlflow.*`` system tags): a
    training script cannot set them through the run context, so the run's state, job and source
    tags always say what the provider recorded.

    :param key: the tag's name.
    """
    return key.startswith("training.") or (key.startswith("mlflow.") and key not in USER_MLFLOW_TAGS)


def safe_relative_path(path: object) -> bool:
    """True when ``path`` is a relative POSIX path that stays inside the folder it is relative to
    (no ``..`` part, not absolute, no empty or ``.`` part, no backslash or NUL).

    :param path: the proposed path (an artifact path, a file of the job folder).
    """
    if not isinstance(path, str) or not path or "\\" in path or "\0" in path or path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


@dataclass(frozen=True)
class MetricEvent:
    """One numeric value of a metric series."""

    key: str
    value: float
    step: int
    timestamp_ms: int
    child: str = ""


@dataclass(frozen=True)
class TagEvent:
    """A run tag (string values logged with ``run.log`` also land here)."""

    key: str
    value: str
    child: str = ""


@dataclass(frozen=True)
class FileEvent:
    """A file to upload as a run artifact.

    :param artifact_path: where it lands among the run's artifacts, e.g. ``"images/loss.png"``.
    :param source: its path relative to the job folder on the target.
    """

    artifact_path: str
    source: str
    child: str = ""


@dataclass(frozen=True)
class RowEvent:
    """One row appended to the table ``name`` (``run.log_row``)."""

    name: str
    row: dict[str, Any]
    child: str = ""


@dataclass(frozen=True)
class TableEvent:
    """Columns appended to the table ``name`` (``run.log_table``)."""

    name: str
    columns: dict[str, list[Any]]
    child: str = ""


@dataclass(frozen=True)
class ChildRunEvent:
    """Create the child run ``child`` (Azure ML v1's ``create_children`` / ``child_run``).

    :param child: the child's key, unique within the run (its v1-style id, e.g. ``"<run id>_0"``).
    :param name: the child's display name.
    :param parent: the key of the child run it is nested in; empty for a child of the run itself.
    """

    child: str
    name: str
    parent: str = ""


@dataclass(frozen=True)
class EndRunEvent:
    """A child run ends (``child.complete()`` / ``child.fail()``), or the run itself asks to end
    Failed (``run.fail()``: ``child`` empty; the run still ends when its script does).

    :param status: ``"Completed"`` or ``"Failed"``.
    :param details: the error details given to ``fail()``.
    """

    status: str
    details: str = ""
    child: str = ""


@dataclass(frozen=True)
class ModelEvent:
    """Register the run's artifact ``path`` as a new version of the model ``name``.

    :param name: the registered model's name.
    :param path: the artifact path inside the run, e.g. ``"outputs/model.pkl"``.
    :param tags: tags of the model version.
    :param description: the model version's description.
    """

    name: str
    path: str
    tags: dict[str, str]
    description: str = ""
    child: str = ""


# Union, not |: this module also runs inside the job, on whatever Python the target has.
Event = Union[MetricEvent, TagEvent, FileEvent, RowEvent, TableEvent,  # noqa: UP007
              ChildRunEvent, EndRunEvent, ModelEvent]


def encode_event(event: Event) -> bytes:
    """Encode one event as a complete line.

    :param event: the event to encode.
    """
    if isinstance(event, MetricEvent):
        record: dict[str, Any] = {
            "e": "metric", "k": event.key, "v": event.value, "s": event.step, "t": event.timestamp_ms
        }
    elif isinstance(event, TagEvent):
        record = {"e": "tag", "k": event.key, "v": event.value}
    elif isinstance(event, FileEvent):
        record = {"e": "file", "a": event.artifact_path, "src": event.source}
    elif isinstance(event, RowEvent):
        record = {"e": "row", "n": event.name, "r": event.row}
    elif isinstance(event, TableEvent):
        record = {"e": "table", "n": event.name, "c": event.columns}
    elif isinstance(event, ChildRunEvent):
        record = {"e": "child", "n": event.name, "p": event.parent}
    elif isinstance(event, EndRunEvent):
        record = {"e": "end", "st": event.status, "d": event.details}
    else:
        record = {"e": "model", "n": event.name, "a": event.path, "tg": event.tags, "d": event.description}
    if event.child:
        record["ch"] = event.child
    return (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()


def decode_events(lines: list[bytes]) -> list[Event | None]:
    """Decode many lines at once (one JSON parse for all: 2-3x faster than line by line).

    :param lines: complete lines of the events file, without newlines.
    :return: one entry per line, ``None`` where a line is not an event of a kind we know.
    """
    try:
        records = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:  # a damaged line: decode one by one, so only that line is lost
        return [decode_event(line) for line in lines]
    if len(records) != len(lines):  # a line such as "1,2" holds more than one value
        return [decode_event(line) for line in lines]
    return [_from_record(record) for record in records]


def decode_event(line: bytes) -> Event | None:
    """Decode one line; ``None`` for a line that is not an event of a kind we know.

    :param line: one line of the events file, with or without its newline.
    """
    try:
        return _from_record(json.loads(line))
    except ValueError:
        return None


def _from_record(record: Any) -> Event | None:
    try:
        kind = record["e"]
        child = str(record.get("ch", ""))
        if kind == "metric":
            return MetricEvent(str(record["k"]), float(record["v"]), int(record["s"]), int(record["t"]), child)
        if kind == "tag":
            return TagEvent(str(record["k"]), str(record["v"]), child)
        if kind == "file":
            return FileEvent(str(record["a"]), str(record["src"]), child)
        if kind == "row":
            return RowEvent(str(record["n"]), dict(record["r"]), child)
        if kind == "table":
            return TableEvent(str(record["n"]), {str(k): list(v) for k, v in record["c"].items()}, child)
        if kind == "child":
            return ChildRunEvent(child, str(record["n"]), str(record.get("p", "")))
        if kind == "end":
            return EndRunEvent(str(record["st"]), str(record.get("d", "")), child)
        if kind == "model":
            return ModelEvent(str(record["n"]), str(record["a"]), {str(k): str(v) for k, v in record["tg"].items()},
                              str(record.get("d", "")), child)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None


def split_complete_lines(chunk: bytes) -> tuple[list[bytes], int]:
    """Split a chunk into its complete lines.

    :param chunk: bytes read from some offset.
    :return: the complete lines (without newlines) and how many bytes they span, so the caller
        advances its offset by exactly that much and re-reads the incomplete tail later.
    """
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], 0
    return chunk[:end].split(b"\n"), end + 1
