"""Finding experiments and runs again (Azure ML v1's ``Experiment.list``, ``Run.list``,
``experiment.get_runs``), and archiving experiments.

Archiving is MLflow's own soft delete: the experiment and its runs are kept whole (nothing is
deleted, and ``reactivate`` brings it back), and MLflow's lists, searches and UI hide it, as Azure
ML's archive did. Only an operator running ``mlflow gc`` on the tracking store removes deleted
experiments for good; nothing here ever does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.tracking import RunState, Tags, Tracker

if TYPE_CHECKING:
    from mlflow.entities import Experiment as MlflowExperiment
    from mlflow.entities import Run as MlflowRun

__all__ = ["VIEW_TYPES", "experiments", "filter_string", "runs", "view_type"]

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


def experiments(tracker: Tracker, view: str, name: str | None = None,
                tags: Mapping[str, str] | None = None) -> list[MlflowExperiment]:
    """The experiments of ``tracker``'s store in ``view``, by name.

    :param tracker: the store.
    :param view: ``active``, ``archived`` or ``all``.
    :param name: only the experiment of this name.
    :param tags: only experiments with these tags and values.
    """
    from mlflow.entities import ViewType

    mlflow_view = {"active": ViewType.ACTIVE_ONLY, "archived": ViewType.DELETED_ONLY, "all": ViewType.ALL}[view]
    clauses = [f"name = '{_quoted(name)}'"] if name else []
    clauses += [f"tags.`{key}` = '{_quoted(value)}'" for key, value in (tags or {}).items()]
    found: list[MlflowExperiment] = []
    token = None
    while True:
        page = tracker.client.search_experiments(view_type=mlflow_view, max_results=_PAGE,
                                                 filter_string=" AND ".join(clauses) or None, page_token=token,
                                                 order_by=["name ASC"])
        found.extend(page)
        token = page.token
        if not token:
            return found


def filter_string(status: str | None = None, tags: Mapping[str, str] | str | None = None,
                  properties: Mapping[str, str] | None = None) -> str:
    """An MLflow search filter for :func:`runs`.

    :param status: the detailed state (``Completed``, ``Failed``, ``Canceled``, ``Running``, ...).
    :param tags: tags and values each run has; a string is one tag that must be present.
    :param properties: as ``tags`` (v1's properties are tags here).
    :raises ConfigurationError: an unknown status.
    """
    clauses: list[str] = []
    if status is not None:
        states = {state.value.lower(): state.value for state in RunState}
        if str(status).lower() not in states:
            raise ConfigurationError("Run.list.status", f"unknown status {status!r}.",
                                     f"use one of {', '.join(sorted(states.values()))}.")
        clauses.append(f"tags.`{Tags.STATE}` = '{states[str(status).lower()]}'")
    wanted: dict[str, str | None] = {}
    if isinstance(tags, str):
        wanted[tags] = None
    else:
        wanted.update(tags or {})
    wanted.update(properties or {})
    for key, value in wanted.items():
        clauses.append(f"tags.`{key}` != ''" if value is None else f"tags.`{key}` = '{_quoted(str(value))}'")
    return " AND ".join(clauses)


def runs(tracker: Tracker, experiment_id: str, filter_text: str, include_children: bool = False,
         limit: int | None = None, run_type: str | None = None) -> Iterator[MlflowRun]:
    """The runs of one experiment matching ``filter_text``, newest first, page by page.

    :param tracker: the store.
    :param experiment_id: the experiment.
    :param filter_text: what :func:`filter_string` built.
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
        page = tracker.client.search_runs([experiment_id], filter_string=filter_text, max_results=_PAGE,
                                          order_by=["attributes.start_time DESC"], page_token=token)
        for run in page:
            if not include_children and Tags.PARENT_RUN_ID in run.data.tags:
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
    """A value inside single quotes of an MLflow filter."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")
