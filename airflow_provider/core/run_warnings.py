"""What a watcher skipped and why, kept in the run where its user looks.

A training script can write anything into its events file and its ``./outputs``: a line that is
not an event, a tag the provider owns, an artifact path leaving the run, a link to a file outside
the job. None of that may stop the run from being collected, so each is skipped and noted here:
the notes go to the artifact ``system_logs/warnings.log`` (rewritten whole, so a new watcher of
the same run keeps the earlier ones) and their count to the tag ``training.warnings``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

from airflow_provider.core.tracking import WARNINGS_ARTIFACT, Tags, Tracker

__all__ = ["RunWarnings"]

log = logging.getLogger(__name__)

_MAX_NOTES = 1000
"""Notes kept in the artifact; past this only the count grows (a script looping on a bad call)."""
_MAX_NOTE_CHARS = 500


class RunWarnings:
    """The warnings of one run.

    :param tracker: where the run lives.
    :param run_id: the MLflow run id.
    :param recorded: how many warnings the run already holds (its ``training.warnings`` tag).
    """

    def __init__(self, tracker: Tracker, run_id: str, recorded: int = 0) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.count = recorded
        self._notes: list[str] | None = None if recorded else []
        self._dirty = False

    def add(self, message: str) -> None:
        """Note one skipped thing (also logged as a warning where the watcher runs).

        :param message: what was skipped and why.
        """
        log.warning("Run %s: %s", self.run_id, message)
        self.count += 1
        notes = self._loaded()
        if len(notes) < _MAX_NOTES:
            text = message if len(message) <= _MAX_NOTE_CHARS else message[:_MAX_NOTE_CHARS] + "..."
            notes.append(text)
        self._dirty = True

    def flush(self) -> None:
        """Write new notes to the run (nothing when there are none)."""
        if not self._dirty:
            return
        notes = self._loaded()
        more = self.count - len(notes)
        text = "\n".join(notes) + (f"\n... and {more} more\n" if more > 0 else "\n")
        self.tracker.log_text(self.run_id, text, WARNINGS_ARTIFACT)
        self.tracker.set_tags(self.run_id, {Tags.WARNINGS: f"{self.count} (see {WARNINGS_ARTIFACT})"})
        self._dirty = False

    def _loaded(self) -> list[str]:
        if self._notes is None:  # an earlier watcher wrote some: keep them
            self._notes = []
            with tempfile.TemporaryDirectory(prefix="warnings-") as scratch:
                try:
                    local = self.tracker.client.download_artifacts(self.run_id, WARNINGS_ARTIFACT, scratch)
                    lines = Path(local).read_text(encoding="utf-8", errors="replace").splitlines()
                    self._notes = [line for line in lines if line and not line.startswith("... and ")]
                except Exception:  # not written yet: start afresh
                    log.debug("Run %s has no %s yet", self.run_id, WARNINGS_ARTIFACT)
        return self._notes

    @staticmethod
    def recorded_in(tags: Mapping[str, str]) -> int:
        """How many warnings a run's tags say it holds.

        :param tags: the run's tags.
        """
        value = tags.get(Tags.WARNINGS, "0").split(" ", 1)[0]
        return int(value) if value.isdigit() else 0
