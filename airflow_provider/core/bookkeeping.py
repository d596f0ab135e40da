"""What the provider keeps about a run for itself, in one JSON tag: ``training.bookkeeping``.

MLflow's run page lists every tag; these values serve the provider, not the reader, so they share
one tag instead of a dozen look-alike names::

    {"dropped_events": 0, "events_offset": 1834, "job": {"target": "ssh", "job_id": ..., "location": ...},
     "run_key_hash": "0ab89d...", "state_times": {"Queued": "2026-...", "Running": "2026-..."}}

- ``run_key_hash``: how a retry finds its run (:meth:`Tracker.find_run_by_key`, a ``LIKE`` search);
- ``job``: the job's handle once launched (what a retry or another process reattaches to);
- ``events_offset`` and ``dropped_events``: how far the relay has read the events file, written in
  the same ``log_batch`` as the metrics it relayed, so a new relay resumes without duplicates;
- ``state_times``: when the run entered each state.

Every write merges into the last value this process knows (one read of the run per process and
run, then kept here): writers of one run follow each other (the submitting process, then its
watcher, which may be another process), never at once. Runs recorded by earlier versions, with one
tag per value, are read too.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "BOOKKEEPING_TAG",
    "LEGACY_TAGS",
    "BookkeepingCache",
    "job_record",
    "read_bookkeeping",
    "run_key_hash_pattern",
]

BOOKKEEPING_TAG = "training.bookkeeping"

_LEGACY_STATE_TIME_PREFIX = "training.state_time."
_LEGACY_FIELDS = {"training.run_key_hash": "run_key_hash", "training.relay.events_offset": "events_offset",
                  "training.relay.dropped_events": "dropped_events", "training.job": "job"}
LEGACY_TAGS = (*_LEGACY_FIELDS, _LEGACY_STATE_TIME_PREFIX)
"""The tags earlier versions wrote instead (the last one a prefix)."""


def read_bookkeeping(tags: Mapping[str, str]) -> dict[str, Any]:
    """The run's bookkeeping: its tag, completed by the separate tags of earlier versions.

    :param tags: the run's tags.
    """
    data: dict[str, Any] = {}
    for legacy, field in _LEGACY_FIELDS.items():
        if legacy in tags:
            value: Any = tags[legacy]
            if field in ("events_offset", "dropped_events"):
                value = int(value) if str(value).isdigit() else 0
            elif field == "job":
                value = _json_object(value)
            data[field] = value
    times = {k[len(_LEGACY_STATE_TIME_PREFIX):]: v for k, v in tags.items() if k.startswith(_LEGACY_STATE_TIME_PREFIX)}
    recorded = _json_object(tags.get(BOOKKEEPING_TAG))
    if recorded is not None:
        times.update(recorded.get("state_times") or {})
        legacy_offset = data.get("events_offset")
        data.update(recorded)
        if legacy_offset is not None:  # an earlier version's watcher, still going during an upgrade,
            # advances the old tag, written with its metrics like this one: the further one counts
            data["events_offset"] = max(int(data.get("events_offset") or 0), int(legacy_offset))
    if times:
        data["state_times"] = times
    return data


def job_record(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The job handle recorded on the run (``JobHandle.to_dict()``), or None before its launch.

    :param tags: the run's tags.
    """
    job = read_bookkeeping(tags).get("job")
    return job if isinstance(job, dict) else None


def run_key_hash_pattern(key_hash: str) -> str:
    """The ``LIKE`` pattern that finds the bookkeeping tag holding ``key_hash`` (hex: nothing to escape).

    :param key_hash: the run key's hash.
    """
    return f'%{_entry("run_key_hash", key_hash)}%'


def _entry(field: str, value: str) -> str:
    return json.dumps({field: value})[1:-1]


def _json_object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class BookkeepingCache:
    """The bookkeeping this process last wrote or read, per run; shared by every tracker of the process.

    :param read_tags: reads a run's tags (once per run, at its first write here).
    """

    _known: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
    _lock = threading.Lock()
    _bound = 4096
    """Runs remembered (a long-lived triggerer watches thousands): the oldest is read again if needed."""

    def __init__(self, store: str, read_tags: Callable[[str], Mapping[str, str]]) -> None:
        self.store = store
        self.read_tags = read_tags

    def seed(self, run_id: str, data: Mapping[str, Any]) -> None:
        """Remember a run's bookkeeping as it is now (a run just created, or its tags just read).

        :param run_id: the run.
        :param data: its bookkeeping.
        """
        with self._lock:
            self._remember((self.store, run_id), json.loads(json.dumps(dict(data))))

    def merged(self, run_id: str, changes: Mapping[str, Any]) -> dict[str, str]:
        """The tag to write for ``changes`` merged into what the run holds (``state_times`` merged
        entry by entry). Remembered only once written (:meth:`written`): an offset the relay has
        not yet written with its metrics never reaches MLflow through another write first.

        :param run_id: the run.
        :param changes: fields to set.
        :return: ``{BOOKKEEPING_TAG: json}``.
        """
        key = (self.store, run_id)
        with self._lock:
            known = self._known.get(key)
        if known is None:
            known = read_bookkeeping(self.read_tags(run_id))
        with self._lock:
            data = json.loads(json.dumps(self._known.get(key, known)))
            for field, value in changes.items():
                if field == "state_times":
                    data["state_times"] = {**(data.get("state_times") or {}), **value}
                else:
                    data[field] = value
            return {BOOKKEEPING_TAG: json.dumps(data, sort_keys=True)}

    def written(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Remember the bookkeeping tag among ``tags`` once MLflow has it.

        :param run_id: the run.
        :param tags: the tags just written.
        """
        recorded = _json_object(tags.get(BOOKKEEPING_TAG))
        if recorded is not None:
            self.seed(run_id, recorded)

    def _remember(self, key: tuple[str, str], data: dict[str, Any]) -> None:
        self._known[key] = data
        self._known.move_to_end(key)
        while len(self._known) > self._bound:
            self._known.popitem(last=False)
