"""What a training script imports: ``Run.get_context()`` and ``run.log(...)``.

Inside a submitted run the context appends events to the run's events file (its path is in the
``TRAINING_RUN_EVENTS_FILE`` variable); the watcher relays them to MLflow in batches. Each call is
one ``write`` of one complete line to a file opened in append mode, so a script that is killed
loses nothing it logged. Outside a submitted run, ``get_context()`` returns an offline run that
prints what it would log.

This module imports only the standard library: importing it must not import Airflow or MLflow.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from itertools import count
from pathlib import Path
from typing import IO, Any

from airflow_provider.runtime.events import (
    EVENTS_FILE_VARIABLE,
    MAX_EVENT_BYTES,
    UPLOADS_DIR_VARIABLE,
    Event,
    FileEvent,
    MetricEvent,
    RowEvent,
    TableEvent,
    TagEvent,
    encode_event,
    is_reserved_tag,
    valid_name,
)
from airflow_provider.runtime.rank_launcher import current_rank

__all__ = ["DATA_VARIABLE", "OUTPUT_DIRS_VARIABLE", "Run"]

DATA_VARIABLE = "TRAINING_RUNS_DATA"
"""JSON ``{"inputs": {name: path or URI}, "outputs": {name: path or URI}}``: the run's data as
the job sees it (``input_datasets`` / ``output_datasets``)."""
OUTPUT_DIRS_VARIABLE = "TRAINING_RUNS_OUTPUT_DIRS"
"""JSON list of the output folders the supervisor creates before the command starts."""

_LIST_CHUNK = 500  # values per event of log_list, so one event never exceeds MLflow's batch limit


class Run:
    """The run a training script is part of (Azure ML v1's ``Run``, script side).

    Get it with :meth:`get_context`; do not construct it directly.
    """

    _context: Run | None = None
    _context_lock = threading.Lock()

    def __init__(self, events_file: str | None, uploads_dir: str | None, run_id: str | None) -> None:
        self._events_fd = (
            os.open(events_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if events_file else None
        )
        self._uploads_dir = Path(uploads_dir) if uploads_dir else None
        self._run_id = run_id
        self._steps: dict[str, int] = {}
        self._lock = threading.Lock()
        self._upload_counter = count(1)
        rank = current_rank()
        # Ranks other than 0 of a distributed run log apart: "rank_3/loss", not into rank 0's "loss".
        self._rank_prefix = f"rank_{rank}/" if rank else ""
        self._child = ""  # the key of a child run (Azure ML v1 compatibility); "" for the run itself

    # ------------------------------------------------------------------ construction
    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """``Run(experiment, run_id)``, outside a script, is Azure ML v1's way to get a handle on an
        existing run from any process: it returns ``experiment.get_run(run_id)`` (a ``ScriptRun``, or
        a ``HyperDriveRun`` for a sweep). Inside a script use :meth:`get_context`."""
        experiment = args[0] if args else kwargs.get("experiment")
        if experiment is not None and not isinstance(experiment, str):
            if not hasattr(type(experiment), "get_run"):
                raise TypeError(f"Run({type(experiment).__name__}, run_id): a handle on an existing run needs an "
                                "airflow_provider.core.Experiment, outside a training script; inside one, use "
                                "Run.get_context().")
            run_id = args[1] if len(args) > 1 else kwargs.get("run_id")
            return experiment.get_run(run_id)
        return super().__new__(cls)

    @staticmethod
    def list(experiment: Any, type: str | None = None, tags: Any = None,
             properties: Any = None, status: str | None = None, include_children: bool = False) -> Any:
        """The runs of ``experiment``, newest first (Azure ML v1's ``Run.list``): a generator of run
        handles, as ``experiment.get_runs`` gives.

        :param experiment: an ``Experiment``.
        :param type: ``"sweep"`` for sweeps only, ``"run"`` for single runs; None for both.
        :param tags: tags (and values) each run has; a string is a tag that must be present.
        :param properties: as ``tags``.
        :param status: only runs in this state (``Completed``, ``Failed``, ``Running``, ...).
        :param include_children: also sweeps' trials and child runs.
        """
        return experiment.get_runs(type=type, tags=tags, properties=properties, include_children=include_children,
                                   status=status)

    @classmethod
    def get_context(cls, allow_offline: bool = True) -> Run:
        """Return the run this script is part of, or an offline run outside a submitted run.

        :param allow_offline: when False, raise instead of returning an offline run.
        """
        with cls._context_lock:
            if cls._context is None:
                events_file = os.environ.get(EVENTS_FILE_VARIABLE)
                if not events_file and not allow_offline:
                    raise RuntimeError(
                        "Run.get_context(allow_offline=False) was called outside a submitted run "
                        f"({EVENTS_FILE_VARIABLE} is not set)."
                    )
                cls._context = cls(
                    events_file,
                    os.environ.get(UPLOADS_DIR_VARIABLE),
                    os.environ.get("MLFLOW_RUN_ID"),
                )
            return cls._context

    @property
    def id(self) -> str:
        """The MLflow run id, or ``"OfflineRun"`` outside a submitted run."""
        return self._run_id or "OfflineRun"

    @property
    def input_datasets(self) -> dict[str, str]:
        """The run's inputs by name: the local path of a ``download`` or ``mount`` input, the URI of
        a ``direct`` one (what ``${{inputs.<name>}}`` becomes in the command)."""
        return dict(_run_data().get("inputs", {}))

    @property
    def output_datasets(self) -> dict[str, str]:
        """The run's outputs by name: the folder to write an ``upload`` output to (copied to its URI
        when the run ends), the URI of a ``direct`` one."""
        return dict(_run_data().get("outputs", {}))

    @property
    def is_offline(self) -> bool:
        """True outside a submitted run: logging only prints."""
        return self._events_fd is None

    # ------------------------------------------------------------------ metrics
    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        """Log one value of the metric ``name``; repeated calls make a series.

        Numbers (and bools, as 0/1) become MLflow metric values. Strings cannot be MLflow metrics:
        they become the run tag ``name`` (last value wins).

        :param name: metric name.
        :param value: a number, bool or string.
        :param description: kept for Azure ML compatibility; not stored.
        :param step: the value's step; default: one more than the last step of this name.
        """
        _check_name("metric", name)
        if isinstance(value, str):
            if is_reserved_tag(self._rank_prefix + name):
                print(f"run.log({name!r}, {value!r}): a string value becomes a run tag, and tag {name!r} is "
                      "reserved for the provider (training.*) or MLflow (mlflow.*); not logged. Rename it.",
                      file=sys.stderr)
                return
            self._emit(TagEvent(name, value), f"Attempted to log string metric {name}: {value}")
            return
        number = _as_number(name, value)
        self._emit(MetricEvent(name, number, self._next_step(name, step), _now_ms()),
                   f"Attempted to log scalar metric {name}:\n{value}")

    def log_list(self, name: str, value: Iterable[Any], description: str = "") -> None:
        """Log a list of values as the series ``name`` (steps continue from earlier values).

        :param name: metric name.
        :param value: the numbers.
        :param description: kept for Azure ML compatibility; not stored.
        """
        _check_name("metric", name)
        values = [_as_number(name, v) for v in value]
        if self.is_offline:
            print(f"Attempted to log list metric {name}:\n{values}")
            return
        timestamp = _now_ms()
        with self._lock:
            first = self._steps.get(name, 0)
            self._steps[name] = first + len(values)
        lines = b"".join(
            encode_event(MetricEvent(self._rank_prefix + name, v, first + i, timestamp, self._child))
            for i, v in enumerate(values)
        )
        self._write_lines(lines, len(values))

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        """Append one row to the table ``name`` (uploaded as ``tables/<name>.json``).

        :param name: table name.
        :param description: kept for Azure ML compatibility; not stored.
        :param kwargs: the row's columns and values.
        """
        _check_name("table", name)
        self._emit(RowEvent(name, dict(kwargs)), f"Attempted to log row {name}:\n{kwargs}")

    def log_table(self, name: str, value: Mapping[str, Iterable[Any]], description: str = "") -> None:
        """Append columns to the table ``name`` (uploaded as ``tables/<name>.json``).

        :param name: table name.
        :param value: column name -> list of values; all lists of one length.
        :param description: kept for Azure ML compatibility; not stored.
        """
        _check_name("table", name)
        columns = {str(k): list(v) for k, v in value.items()}
        if len({len(v) for v in columns.values()}) > 1:
            raise ValueError(f"log_table({name!r}): all columns must have the same length")
        self._emit(TableEvent(name, columns), f"Attempted to log table {name}:\n{columns}")

    # ------------------------------------------------------------------ tags and files
    def tag(self, key: str, value: Any = None) -> None:
        """Set the run tag ``key`` (an empty value when ``value`` is None).

        :param key: tag name.
        :param value: tag value, converted with ``str``.
        """
        _check_name("tag", key)
        if is_reserved_tag(self._rank_prefix + key):
            raise ValueError(
                f"tag {key!r} is reserved: the provider owns training.* tags and MLflow its mlflow.* tags (except "
                f"mlflow.note.content), and a script cannot set them. Use another name, e.g. 'my_{key.split('.')[-1]}'."
            )
        text = "" if value is None else str(value)
        self._emit(TagEvent(key, text), f"Attempted to set tag {key}: {text}")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set several run tags.

        :param tags: tag name -> value.
        """
        for key, value in tags.items():
            self.tag(key, value)

    def upload_file(self, name: str, path_or_stream: str | os.PathLike[str] | IO[bytes]) -> None:
        """Upload a file as the run artifact ``name`` (e.g. ``"outputs/model.pkl"``).

        The file is copied now, so the script may delete or change it afterwards.

        :param name: artifact path inside the run.
        :param path_or_stream: a file path or a binary stream.
        """
        _check_name("artifact", name)
        if self.is_offline or self._uploads_dir is None:
            print(f"Attempted to upload file {name}")
            return
        staged = self._stage_name(name)
        if isinstance(path_or_stream, (str, os.PathLike)):
            shutil.copyfile(os.fspath(path_or_stream), staged)
        else:
            with open(staged, "wb") as out:
                shutil.copyfileobj(path_or_stream, out)
        self._emit_file(name, staged)

    def log_image(self, name: str, path: str | os.PathLike[str] | None = None, plot: Any = None,
                  description: str = "") -> None:
        """Log an image from a file or a matplotlib figure/pyplot as ``images/<name>.png``.

        :param name: image name.
        :param path: an image file.
        :param plot: a matplotlib figure or ``matplotlib.pyplot`` (anything with ``savefig``).
        :param description: kept for Azure ML compatibility; not stored.
        """
        _check_name("image", name)
        if (path is None) == (plot is None):
            raise ValueError("log_image needs exactly one of path= or plot=")
        if self.is_offline or self._uploads_dir is None:
            print(f"Attempted to log image {name}")
            return
        suffix = Path(os.fspath(path)).suffix if path is not None else ".png"
        staged = self._stage_name(f"{name}{suffix}")
        if path is not None:
            shutil.copyfile(os.fspath(path), staged)
        else:
            plot.savefig(staged, format="png")
        self._emit_file(f"images/{name}{suffix}", staged)

    # ------------------------------------------------------------------ internals
    def _stage_name(self, name: str) -> Path:
        assert self._uploads_dir is not None
        self._uploads_dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        return self._uploads_dir / f"{next(self._upload_counter):06d}_{safe}"

    def _emit_file(self, artifact_path: str, staged: Path) -> None:
        job_dir = self._uploads_dir.parent if self._uploads_dir else staged.parent
        self._emit(FileEvent(artifact_path, staged.relative_to(job_dir).as_posix()), "")

    def _next_step(self, name: str, step: int | None) -> int:
        with self._lock:
            chosen = self._steps.get(name, 0) if step is None else int(step)
            self._steps[name] = max(self._steps.get(name, 0), chosen + 1)
            return chosen

    def _emit(self, event: Event, offline_message: str) -> None:
        if self._events_fd is None:
            if offline_message:
                print(offline_message)
            return
        if self._rank_prefix and isinstance(event, (MetricEvent, TagEvent)):
            event = dataclasses.replace(event, key=self._rank_prefix + event.key)
        elif self._rank_prefix and isinstance(event, (RowEvent, TableEvent)):
            event = dataclasses.replace(event, name=self._rank_prefix + event.name)
        if self._child:
            event = dataclasses.replace(event, child=self._child)
        line = encode_event(event)
        if len(line) > MAX_EVENT_BYTES:
            raise ValueError(
                f"{type(event).__name__} of {len(line)} bytes is over the {MAX_EVENT_BYTES}-byte limit of one "
                "logged value; write it to a file and log it with run.upload_file(name, path)."
            )
        self._write_lines(line, 1)

    def _write_lines(self, data: bytes, events: int) -> None:
        assert self._events_fd is not None
        if events > _LIST_CHUNK:  # keep each write of a bounded size
            lines = data.splitlines(keepends=True)
            for start in range(0, len(lines), _LIST_CHUNK):
                os.write(self._events_fd, b"".join(lines[start : start + _LIST_CHUNK]))
            return
        view = memoryview(data)
        while view:
            written = os.write(self._events_fd, view)
            view = view[written:]


def _check_name(kind: str, name: object) -> None:
    if not valid_name(name):
        raise ValueError(
            f"{kind} name {name!r} cannot be stored in MLflow: use 1-250 letters, digits, '_', '-', '.', ' ', "
            "':' or '/' (no '..', no leading '/'). Rename it, e.g. 'top1_accuracy_val'."
        )


def _as_number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"run.log({name!r}, ...): {type(value).__name__} {value!r} is not a number or string"
        ) from None
    return number


def _now_ms() -> int:
    return int(time.time() * 1000)


# Its public home (users import it from airflow_provider.core; the alias module is shipped too).
Run.__module__ = "airflow_provider.core.run_context"


def _run_data() -> dict[str, dict[str, str]]:
    import json

    try:
        data = json.loads(os.environ.get(DATA_VARIABLE) or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
