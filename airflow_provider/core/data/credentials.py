"""Where a data URI's credentials come from: fsspec storage options, by connection name.

The core never reads Airflow connections itself. The Airflow layer registers a resolver
(:func:`register_resolver`) that turns a connection id into fsspec options; a detached process
(the finalizer) gets the options it needs in its environment (:data:`CREDENTIALS_VARIABLE`, JSON,
never in argv or a file). Options given on an ``Input`` / ``Output`` win over a connection's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from airflow_provider.core.errors import ConfigurationError

__all__ = ["CREDENTIALS_VARIABLE", "Resolver", "output_options", "register_resolver", "remember_inline",
           "resolve_options", "resolved_for_environment", "with_inline_options"]

CREDENTIALS_VARIABLE = "TRAINING_RUNS_DATA_CREDENTIALS"
"""JSON ``{connection id: {fsspec option: value}}`` for processes without Airflow (the finalizer)."""

Resolver = Callable[[str, str], dict[str, Any]]
"""``(connection id, URI scheme) -> fsspec storage options``."""

_resolver: Resolver | None = None
_inline: dict[str, dict[str, Any]] = {}
"""Storage options given on a run's outputs, by :func:`_inline_key`: in this process's memory only."""


def _inline_key(run_id: str, name: str) -> str:
    return f"@{run_id}/{name}"


def remember_inline(run_id: str, name: str, options: dict[str, Any] | None) -> None:
    """Keep the storage options given on output ``name`` of ``run_id`` for whoever copies it when the
    run ends in this process (or a finalizer it starts: :func:`with_inline_options`).

    :param run_id: the run.
    :param name: the output's name.
    :param options: the options given on the output (nothing is kept for None).
    """
    if options:
        _inline[_inline_key(run_id, name)] = dict(options)


def output_options(field: str, scheme: str, run_id: str, name: str, connection: str | None) -> dict[str, Any]:
    """The fsspec options to copy output ``name`` of ``run_id``: its connection's, then the options
    given on it (kept in memory by :func:`remember_inline`, or passed to this process).

    :param field: how messages name the output.
    :param scheme: its URI's scheme.
    :param run_id: the run.
    :param name: the output's name.
    :param connection: the connection named on it, if any.
    """
    key = _inline_key(run_id, name)
    return resolve_options(field, scheme, connection, _inline.get(key) or _from_environment(key))


def with_inline_options(environment: dict[str, str], run_id: str) -> dict[str, str]:
    """``environment`` with the options kept for ``run_id``'s outputs added to
    :data:`CREDENTIALS_VARIABLE` (for a detached finalizer).

    :param environment: the variables so far (its credentials variable is merged, not replaced).
    :param run_id: the run.
    """
    prefix = _inline_key(run_id, "")
    kept = {key: value for key, value in _inline.items() if key.startswith(prefix)}
    if not kept:
        return environment
    try:
        known = json.loads(environment.get(CREDENTIALS_VARIABLE) or "{}")
    except ValueError:
        known = {}
    return {**environment, CREDENTIALS_VARIABLE: json.dumps({**known, **kept})}


def register_resolver(resolver: Resolver | None) -> None:
    """Set how connection ids become storage options in this process (the Airflow layer's).

    :param resolver: the function, or None to remove it.
    """
    global _resolver
    _resolver = resolver


def _from_environment(connection: str) -> dict[str, Any] | None:
    text = os.environ.get(CREDENTIALS_VARIABLE)
    if not text:
        return None
    try:
        known = json.loads(text)
    except ValueError:
        return None
    options = known.get(connection) if isinstance(known, dict) else None
    return dict(options) if isinstance(options, dict) else None


def resolve_options(field: str, scheme: str, connection: str | None,
                    storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The fsspec options for one input or output.

    :param field: how messages name the input or output.
    :param scheme: the URI's scheme (``s3``, ``sftp``, ...).
    :param connection: the connection id named on it, if any.
    :param storage_options: options given on it, if any (they win).
    :raises ConfigurationError: a connection is named but nothing here can resolve it.
    """
    options: dict[str, Any] = {}
    if connection:
        found = _from_environment(connection)
        if found is None and _resolver is not None:
            found = _resolver(connection, scheme)
        if found is None:
            raise ConfigurationError(f"{field}.connection",
                                     f"connection {connection!r} cannot be resolved in this process (no Airflow here).",
                                     "submit from an Airflow task, or pass storage_options={...} instead.")
        options.update(found)
    options.update(storage_options or {})
    return options


def resolved_for_environment(connections: dict[str, str]) -> dict[str, str]:
    """The variable a detached process needs to resolve ``connections`` without Airflow.

    :param connections: ``{connection id: scheme}``.
    :return: ``{CREDENTIALS_VARIABLE: json}``, or empty when there is nothing to pass.
    """
    known: dict[str, Any] = {}
    for connection, scheme in connections.items():
        try:
            known[connection] = resolve_options(connection, scheme, connection, None)
        except ConfigurationError:
            continue
    return {CREDENTIALS_VARIABLE: json.dumps(known)} if known else {}
