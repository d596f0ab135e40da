"""A training task's data as Airflow and OpenLineage see it: assets, outlet events, lineage facets.

- Inputs and outputs with a fixed URI become the task's inlets and outlets as ``Asset``\\ s at
  parse time, so ``DAG(schedule=[Asset(...)])`` runs when a producing task succeeds.
- An output whose URI changes per run (templated, or ``{run_id}``) is an event of the
  ``AssetAlias`` ``training-output:<dag id>.<task id>.<name>``, added when the task succeeds
  with the URI the run wrote (Airflow records events only for assets declared at parse time, or
  added through an alias).
- ``get_openlineage_facets_on_complete`` / ``_on_failure`` name the datasets by OpenLineage's
  rules, from the URIs alone (no network call), imported lazily: the OpenLineage provider is
  optional.
- ``${{inputs.<name>}}`` in a templated field survives Jinja: :class:`DataPlaceholders` renders
  ``{{inputs.<name>}}`` back to itself.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from airflow_provider.core.data.bindings import Input, Output
from airflow_provider.core.data.lineage_names import asset_uri, openlineage_name
from airflow_provider.core.data.run_data import INPUTS_TAG

if TYPE_CHECKING:
    from airflow_provider.core.script_run import ScriptRun

__all__ = ["DataPlaceholders", "LineageMixin", "announce_outputs", "data_assets", "data_secret_values",
           "output_alias_name"]

_DYNAMIC = re.compile(r"\{\{|\{%|\{(run_id|run-id|name|output-name)\}")
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|key|credential|sas|connection_string)", re.IGNORECASE)


class DataPlaceholders:
    """What ``inputs`` / ``outputs`` are while Airflow renders templates: ``{{inputs.train}}``
    renders to itself, so ``${{inputs.train}}`` reaches the run as written.

    :param kind: ``inputs`` or ``outputs``.
    """

    def __init__(self, kind: str) -> None:
        self._kind = kind

    def __getattr__(self, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return "{{" + f"{self._kind}.{name}" + "}}"

    def __getitem__(self, name: str) -> str:
        return self.__getattr__(name)


def output_alias_name(dag_id: str, task_id: str, name: str) -> str:
    """The ``AssetAlias`` name of a per-run output.

    :param dag_id: the DAG (may be empty when unknown at parse time).
    :param task_id: the task.
    :param name: the output's name.
    """
    return f"training-output:{dag_id + '.' if dag_id else ''}{task_id}.{name}"


def _uri(binding: object) -> str | None:
    if isinstance(binding, (Input, Output)):
        return str(binding.uri)
    if isinstance(binding, str):
        return binding
    return None


def _current_dag_id(dag: Any) -> str:
    if dag is not None:
        return str(getattr(dag, "dag_id", "") or "")
    try:
        from airflow.sdk.definitions._internal.contextmanager import DagContext

        current = DagContext.get_current()
    except Exception:
        return ""
    return str(getattr(current, "dag_id", "") or "")


def data_assets(inputs: dict[str, Any] | None, outputs: dict[str, Any] | None, task_id: str,
                dag: Any = None) -> tuple[list[Any], list[Any]]:
    """The task's inlets and outlets for its inputs and outputs (see the module docstring).

    :param inputs: the operator's inputs as given (URIs may still be templates).
    :param outputs: the operator's outputs as given.
    :param task_id: the task's id.
    :param dag: the DAG passed to the operator, if any (else the DAG being defined).
    """
    from airflow.sdk import Asset, AssetAlias

    inlets: list[Any] = []
    outlets: list[Any] = []
    for binding in (inputs or {}).values() if isinstance(inputs, dict) else []:
        uri = _uri(binding)
        if uri and not _DYNAMIC.search(uri) and not (isinstance(binding, Input) and binding.mode == "direct"
                                                     and uri.startswith(("runs:/", "models:/"))):
            inlets.append(Asset(uri=asset_uri(uri)))
    dag_id = _current_dag_id(dag)
    for name, binding in (outputs or {}).items() if isinstance(outputs, dict) else []:
        uri = _uri(binding)
        if not uri:
            continue
        if _DYNAMIC.search(uri):
            outlets.append(AssetAlias(name=output_alias_name(dag_id, task_id, str(name))))
        else:
            outlets.append(Asset(uri=asset_uri(uri)))
    return inlets, outlets


def data_secret_values(bindings: list[Input | Output]) -> list[str]:
    """Values of storage options given on inputs and outputs that look like credentials (masked).

    :param bindings: the task's inputs and outputs.
    """
    values: list[str] = []
    for binding in bindings:
        for key, value in (binding.storage_options or {}).items():
            if isinstance(value, str) and value and _SECRET_KEY.search(str(key)):
                values.append(value)
        if binding.mode == "direct" and binding.connection:  # its credentials reach the job's environment
            values += _connection_secrets(binding)
    return values


def _connection_secrets(binding: Input | Output) -> list[str]:
    """The credential values a direct binding's connection resolves to (none when it cannot be
    read now: submitting says why)."""
    from airflow_provider.core.data.credentials import resolve_options
    from airflow_provider.core.data.locations import parse_location

    try:
        scheme = parse_location(str(binding.uri), "binding").scheme
        options = resolve_options("binding", scheme, binding.connection, None)
    except Exception:
        return []
    found = [value for key, value in options.items() if isinstance(value, str) and value and _SECRET_KEY.search(key)]
    for inner in options.values():
        if isinstance(inner, dict):
            found += [v for k, v in inner.items() if isinstance(v, str) and v and _SECRET_KEY.search(str(k))]
    return found


def announce_outputs(operator: Any, run: ScriptRun, context: Any) -> dict[str, list[str]]:
    """Attach the run's output URIs to the task's outlet events; return the URIs read and written
    (for the lineage facets).

    :param operator: the task.
    :param run: its finished run.
    :param context: the task context (``outlet_events``).
    """
    from airflow.sdk import Asset, AssetAlias

    tags = run.tracker.get_run(run.id).data.tags
    written = run.outputs or ()  # as submitted: the run's tags are a record its script can rewrite
    try:
        read = [str(item["uri"]) for item in json.loads(tags.get(INPUTS_TAG) or "{}").values()]
    except (ValueError, TypeError, KeyError):
        read = []
    events = context.get("outlet_events") if hasattr(context, "get") else None
    if events is not None:
        by_alias = {item.name: item for item in operator.outlets if isinstance(item, AssetAlias)}
        by_uri = {item.uri: item for item in operator.outlets if isinstance(item, Asset)}
        dag_id = getattr(context.get("ti"), "dag_id", "") or getattr(operator, "dag_id", "")
        for output in written:
            digest = tags.get(f"training.data.output.{output.name}.digest")
            if output.mode == "upload" and not digest:
                continue  # not copied to its URI (its files went to the run's artifacts): no event
            extra = {"run_id": run.id, "output": output.name, "digest": digest or ""}
            asset = by_uri.get(asset_uri(output.uri).rstrip("/")) or by_uri.get(asset_uri(output.uri))
            alias = by_alias.get(output_alias_name(dag_id, operator.task_id, output.name)) or by_alias.get(
                output_alias_name("", operator.task_id, output.name))
            if asset is not None:
                events[asset].extra = extra
            elif alias is not None:
                events[alias].add(Asset(uri=asset_uri(output.uri)), extra=extra)
    return {"inputs": read, "outputs": [output.uri for output in written]}


class LineageMixin:
    """OpenLineage methods of a training task (called by the OpenLineage provider when installed)."""

    _data_uris: dict[str, list[str]]

    def _openlineage(self) -> Any:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        uris = getattr(self, "_data_uris", None) or {"inputs": [], "outputs": []}
        if not uris["inputs"] and not uris["outputs"]:  # the task failed before the run recorded them
            uris = {"inputs": [u for u in map(_uri, (getattr(self, "inputs", None) or {}).values()) if u],
                    "outputs": [u for u in map(_uri, (getattr(self, "outputs", None) or {}).values()) if u]}

        def datasets(found: list[str]) -> list[Any]:
            return [Dataset(namespace=namespace, name=name) for namespace, name in map(openlineage_name, found)]

        return OperatorLineage(inputs=datasets(uris["inputs"]), outputs=datasets(uris["outputs"]))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The task's input and output datasets, once it succeeded.

        :param task_instance: the finished task instance.
        """
        return self._openlineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """The task's input and output datasets, when it failed (outputs are copied on failure too).

        :param task_instance: the failed task instance.
        """
        return self._openlineage()
