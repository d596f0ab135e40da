"""Finding experiments and runs again (Azure ML v1's ``Experiment.list``, ``Run.list``,
``experiment.get_runs``), and archiving experiments.

Archiving tags the experiment (:data:`ARCHIVED_TAG`): our lists and ``training-runs`` hide it and
refuse new runs in it, and nothing is deleted (MLflow's own delete is not used: it marks every run of
the experiment deleted, a run still going could no longer be recorded, and ``mlflow gc`` would purge
them). The MLflow UI still lists it, with the tag.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.tracking import RunState, Tags, Tracker

if TYPE_CHECKING:
    from mlflow.entities import Experiment as MlflowExperiment
    from mlflow.entities import Run as MlflowRun

__all__ = ["ARCHIVED_TAG", "VIEW_TYPES", "RunFilter", "experiments", "is_archived", "run_filter", "runs",
           "view_type"]

ARCHIVED_TAG = "training.archived"
"""The experiment tag that archives an experiment (value ``true``)."""

VIEW_TYPES = {"activeonly": "active", "active": "active", "archivedonly": "archived", "archived": "archived",
              "all": "all"}
"""Accepted view types (Azure ML v1's ``ActiveOnly``, ``ArchivedOnly``, ``All``, any case) and what
each means."""
_PAGE = 1000


def view_type(value: str, field: str) -> str:
    """``active``, ``archived`` or ``all`` for a v1 or plain view type.

    :param value: what the caller passed.
    :param field: how the caller names it in messages.
    :raises ConfigurationError: an unknown view type.
    """
    found = VIEW_TYPES.get(str(value).replace("_", "").replace(" ", "").lower())
    if found is None:
        raise ConfigurationError(field, f"unknown view type {value!r}.",
                                 'use "ActiveOnly" (default), "ArchivedOnly" or "All".')
    return found


def is_archived(experiment: MlflowExperiment) -> bool:
    """Whether an MLflow experiment is archived here.

    :param experiment: the experiment as MLflow returned it.
    """
    return str(experiment.tags.get(ARCHIVED_TAG, "")).lower() == "true"


def experiments(tracker: Tracker, view: str, name: str | None = None,
                tags: Mapping[str, str] | None = None) -> list[MlflowExperiment]:
    """The experiments of ``tracker``'s store in ``view``, by name (experiments deleted in MLflow
    itself are never listed).

    :param tracker: the store.
    :param view: ``active``, ``archived`` or ``all``.
    :param name: only the experiment of this name.
    :param tags: only experiments with these tags and values.
    """
    from mlflow.entities import ViewType

    clauses = [f"name = {_quoted(name)}"] if name else []
    clauses += [f"tags.`{_key(key, 'tags')}` = {_quoted(value)}" for key, value in (tags or {}).items()]
    found: list[MlflowExperiment] = []
    token = None
    while True:
        page = tracker.client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=_PAGE,
                                                 filter_string=" AND ".join(clauses) or None, page_token=token,
                                                 order_by=["name ASC"])
        found.extend(experiment for experiment in page
                     if view == "all" or is_archived(experiment) == (view == "archived"))
        token = page.token
        if not token:
            return found


@dataclass(frozen=True)
class RunFilter:
    """What :func:`runs` selects: an MLflow filter, and the tags it could not express (a value with
    both kinds of quotes), checked here.

    :param text: the MLflow filter string.
    :param checked_here: tags and values (None: present) each run must also have.
    """

    text: str
    checked_here: Mapping[str, str | None]

    def matches(self, run: MlflowRun) -> bool:
        """Whether ``run`` has the tags checked here.

        :param run: a run MLflow returned for :attr:`text`.
        """
        tags = run.data.tags
        return all(key in tags and (value is None or tags[key] == value) for key, value in self.checked_here.items())


def run_filter(status: str | None = None, tags: Mapping[str, str] | str | None = None,
               properties: Mapping[str, str] | None = None, field: str = "Run.list") -> RunFilter:
    """What :func:`runs` selects.

    :param status: the detailed state (``Completed``, ``Failed``, ``Canceled``, ``Running``, ...).
    :param tags: tags and values each run has; a string is one tag that must be present (any value).
    :param properties: as ``tags`` (v1's properties are tags here).
    :param field: how the caller names these arguments in messages (``Run.list``, ``--tag``).
    :raises ConfigurationError: an unknown status, or a tag name MLflow cannot search for.
    """
    clauses: list[str] = []
    if status is not None:
        states = {state.value.lower(): state.value for state in RunState}
        if str(status).lower() not in states:
            raise ConfigurationError(f"{field}.status" if field.startswith("Run") else "--status",
                                     f"unknown status {status!r}.", f"use one of {', '.join(sorted(states.values()))}.")
        clauses.append(f"tags.`{Tags.STATE}` = '{states[str(status).lower()]}'")
    wanted: dict[str, str | None] = {}
    if isinstance(tags, str):
        wanted[tags] = None
    else:
        wanted.update({key: str(value) for key, value in (tags or {}).items()})
    wanted.update({key: str(value) for key, value in (properties or {}).items()})
    checked_here: dict[str, str | None] = {}
    for key, value in wanted.items():
        name = _key(key, f"{field}.tags" if field.startswith("Run") else field)
        if value is None:
            clauses.append(f"tags.`{name}` LIKE '%'")
        elif "'" in value and '"' in value:
            checked_here[key] = value
            clauses.append(f"tags.`{name}` LIKE '%'")
        else:
            clauses.append(f"tags.`{name}` = {_quoted(value)}")
    return RunFilter(" AND ".join(clauses), checked_here)


def runs(tracker: Tracker, experiment_id: str, selected: RunFilter, include_children: bool = False,
         limit: int | None = None, run_type: str | None = None) -> Iterator[MlflowRun]:
    """The runs of one experiment that ``selected`` selects, newest first, page by page.

    :param tracker: the store.
    :param experiment_id: the experiment.
    :param selected: what :func:`run_filter` built.
    :param include_children: also runs that have a parent run (a sweep's trials, child runs).
    :param limit: at most this many; None for all.
    :param run_type: ``sweep`` for sweeps' parent runs only, ``run`` for the others; None for both.
    :raises ConfigurationError: an unknown run type.
    """
    if run_type not in (None, "sweep", "run"):
        raise ConfigurationError("Run.list.type", f"unknown run type {run_type!r}.",
                                 'use "sweep" (sweeps\' parent runs), "run" (the others) or None.')
    token = None
    given = 0
    while True:
        page = tracker.client.search_runs([experiment_id], filter_string=selected.text, max_results=_PAGE,
                                          order_by=["attributes.start_time DESC"], page_token=token)
        for run in page:
            if (not include_children and Tags.PARENT_RUN_ID in run.data.tags) or not selected.matches(run):
                continue
            if run_type is not None and (run.data.tags.get(Tags.SWEEP_ROLE) == "sweep") != (run_type == "sweep"):
                continue
            yield run
            given += 1
            if limit is not None and given >= limit:
                return
        token = page.token
        if not token:
            return


def _quoted(value: Any) -> str:
    """``value`` quoted for an MLflow filter (which strips the quotes and unescapes nothing): in single
    quotes, or double quotes when it holds a single quote (never both: see :class:`RunFilter`)."""
    text = str(value)
    return f'"{text}"' if "'" in text else f"'{text}'"


def _key(name: str, field: str) -> str:
    """A tag name for an MLflow filter (inside backticks).

    :raises ConfigurationError: a name with a backtick, or an empty one.
    """
    if not name or "`" in name:
        raise ConfigurationError(field, f"cannot search for the tag name {name!r}.",
                                 "use a tag name without backticks.")
    return name
