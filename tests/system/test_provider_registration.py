"""Provider registration as Airflow sees it: entry point, provider info schema, ``airflow providers ...``.

Every Airflow view runs in its own subprocess with a fresh AIRFLOW_HOME (the CLI commands and one
``ProvidersManager`` probe, started together to keep the module fast). Nothing is mocked: these are
the code paths the scheduler, the API server and the connection form use to discover the provider.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import airflow_provider
from tests.system.conftest import airflow_environment

DISTRIBUTION = "airflow-provider-training-runs"
AIRFLOW_BIN = str(Path(sys.executable).parent / "airflow")
CONNECTION_TYPES = {
    "training_local": ("airflow_provider.hooks.compute.LocalComputeHook", "conn_id"),
    "training_docker": ("airflow_provider.hooks.compute.DockerComputeHook", "conn_id"),
    "training_ssh": ("airflow_provider.hooks.compute.SSHComputeHook", "conn_id"),
    "training_mpi": ("airflow_provider.hooks.compute.MPIComputeHook", "conn_id"),
    "training_slurm": ("airflow_provider.hooks.compute.SlurmComputeHook", "conn_id"),
    "mlflow": ("airflow_provider.hooks.mlflow.MLflowTrackingHook", "tracking_conn_id"),
}
LINK_CLASS = "airflow_provider.links.MLflowRunLink"

MANAGER_PROBE = r"""
import importlib, json, sys
from airflow.providers_manager import ProvidersManager

TYPES = json.loads(sys.argv[1])
manager = ProvidersManager()
hooks = {}
for conn_type in TYPES:
    info = manager.hooks.get(conn_type)
    hooks[conn_type] = None if info is None else info._asdict()
widgets = {name: {"hook_class_name": w.hook_class_name, "package_name": w.package_name, "field": w.field,
                  "field_name": w.field_name, "is_sensitive": w.is_sensitive}
           for name, w in manager.connection_form_widgets.items()
           if any(name.startswith(f"extra__{t}__") for t in TYPES)}
behaviours = {t: b for t, b in manager.field_behaviours.items() if t in TYPES}
provider = manager.providers.get("airflow-provider-training-runs")
imports = {}
for section in ("operators", "hooks", "triggers"):
    for entry in provider.data.get(section, []) if provider else []:
        for module in entry["python-modules"]:
            try:
                importlib.import_module(module)
                imports[module] = "ok"
            except Exception as exc:
                imports[module] = f"{type(exc).__name__}: {exc}"
hook_classes = {}
for conn_type, (path, _) in TYPES.items():
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    hook_classes[conn_type] = {"conn_type": cls.conn_type, "hook_name": cls.hook_name,
                               "conn_name_attr": cls.conn_name_attr}
print(json.dumps({
    "hooks": hooks,
    "widgets": widgets,
    "behaviours": behaviours,
    "extra_links": manager.extra_links_class_names,
    "provider": None if provider is None else {"version": provider.version, "data": provider.data},
    "triggers": [t._asdict() if hasattr(t, "_asdict") else vars(t) for t in manager.trigger],
    "imports": imports,
    "hook_classes": hook_classes,
}, default=str))
"""

COMMANDS: dict[str, list[str]] = {
    "list": [AIRFLOW_BIN, "providers", "list", "-o", "json"],
    "hooks": [AIRFLOW_BIN, "providers", "hooks", "-o", "json"],
    "links": [AIRFLOW_BIN, "providers", "links", "-o", "json"],
    "get": [AIRFLOW_BIN, "providers", "get", DISTRIBUTION, "-o", "json"],
    "get_full": [AIRFLOW_BIN, "providers", "get", DISTRIBUTION, "--full", "-o", "json"],
    "manager": [sys.executable, "-c", MANAGER_PROBE, json.dumps(CONNECTION_TYPES)],
}


@pytest.fixture(scope="module")
def airflow_views(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The JSON each Airflow view prints, all run at once (each with its own fresh AIRFLOW_HOME)."""
    processes = {}
    for name, command in COMMANDS.items():
        home = tmp_path_factory.mktemp(f"airflow-{name}")
        env = {k: v for k, v in airflow_environment(home, home / "dags").items()
               if not k.startswith("AIRFLOW_CONN_")}
        processes[name] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True)
    views: dict[str, Any] = {}
    try:
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=180)
            assert process.returncode == 0, f"{COMMANDS[name]} exited {process.returncode}:\n{stderr[-3000:]}"
            views[name] = _last_json(stdout, f"{COMMANDS[name][:4]} printed no JSON:\n{stdout[-2000:]}\n"
                                             f"{stderr[-2000:]}")
        yield views
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _last_json(stdout: str, message: str) -> Any:
    """The JSON document an Airflow command printed (log lines may come before it)."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    pytest.fail(message)


def _airflow_package_file(name: str) -> Path:
    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.submodule_search_locations, "apache-airflow is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / name
    assert path.is_file(), f"{name} not found in the installed airflow package"
    return path


def _ours(rows: list[dict[str, Any]], key: str = "package_name") -> list[dict[str, Any]]:
    return [row for row in rows if row.get(key) == DISTRIBUTION]


# ---------------------------------------------------------------------- entry point and schema
def test_entry_point_resolves_to_get_provider_info() -> None:
    ours = [ep for ep in metadata.entry_points(group="apache_airflow_provider")
            if ep.dist is not None and ep.dist.name == DISTRIBUTION]
    assert len(ours) == 1, f"expected one apache_airflow_provider entry point of {DISTRIBUTION}, got {ours}"
    entry_point = ours[0]
    assert entry_point.value == "airflow_provider:get_provider_info"
    assert entry_point.load() is airflow_provider.get_provider_info
    info = entry_point.load()()
    distribution = metadata.distribution(DISTRIBUTION)
    assert info["package-name"] == distribution.metadata["Name"] == DISTRIBUTION
    assert info["versions"][0] == distribution.version == airflow_provider.__version__


def test_provider_info_is_valid_for_airflows_schemas() -> None:
    info = airflow_provider.get_provider_info()
    schema = json.loads(_airflow_package_file("provider_info.schema.json").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(info)

    # provider_info.schema.json leaves connection types open; provider.yaml's schema specifies
    # conn-fields and ui-field-behaviour, which Airflow's connection form relies on.
    yaml_schema = json.loads(_airflow_package_file("provider.yaml.schema.json").read_text())
    connection_schema = {**yaml_schema["properties"]["connection-types"],
                         "$schema": yaml_schema.get("$schema", "http://json-schema.org/draft-07/schema#")}
    jsonschema.validators.validator_for(connection_schema)(connection_schema).validate(info["connection-types"])

    behaviours_schema = json.loads(_airflow_package_file("customized_form_field_behaviours.schema.json").read_text())
    behaviours_validator = jsonschema.validators.validator_for(behaviours_schema)(behaviours_schema)
    for connection in info["connection-types"]:
        behaviour = connection["ui-field-behaviour"]
        behaviours_validator.validate({"hidden_fields": behaviour["hidden-fields"],
                                       "relabeling": behaviour["relabeling"],
                                       "placeholders": behaviour["placeholders"]})
        for field, definition in connection["conn-fields"].items():
            try:
                jsonschema.Draft7Validator.check_schema(definition["schema"])
            except jsonschema.SchemaError as exc:  # pragma: no cover - the message is the point
                pytest.fail(f"{connection['connection-type']}.{field}: not a JSON schema: {exc.message}")


def test_declared_connection_types_are_the_six_hooks() -> None:
    info = airflow_provider.get_provider_info()
    declared = {c["connection-type"]: c["hook-class-name"] for c in info["connection-types"]}
    assert declared == {t: path for t, (path, _) in CONNECTION_TYPES.items()}
    assert info["extra-links"] == [LINK_CLASS]


def test_every_conn_field_may_be_left_empty() -> None:
    """Every extra field is optional (a connection with only some fields set is valid).

    A field left empty is null in the connection's extra, so each field's schema must accept null,
    and its declared default, if any.
    """
    info = airflow_provider.get_provider_info()
    refused = {}
    for connection in info["connection-types"]:
        for field, definition in connection["conn-fields"].items():
            validator = jsonschema.Draft7Validator(definition["schema"])
            values = [None] + ([definition["schema"]["default"]] if "default" in definition["schema"] else [])
            for value in values:
                errors = [e.message for e in validator.iter_errors(value)]
                if errors:
                    refused[f"{connection['connection-type']}.{field}={value!r}"] = "; ".join(errors)
    assert not refused, f"conn-fields whose schema rejects an empty value or its own default: {refused}"


# ---------------------------------------------------------------------- the airflow CLI
def test_providers_list_shows_the_provider(airflow_views: dict[str, Any]) -> None:
    rows = _ours(airflow_views["list"])
    assert len(rows) == 1, airflow_views["list"]
    assert rows[0]["version"] == airflow_provider.__version__
    assert rows[0]["description"].startswith("Submit machine-learning training runs")


def _scalars_as_text(value: Any) -> Any:
    if isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, dict):
        return {k: _scalars_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scalars_as_text(v) for v in value]
    return value


def test_providers_get_shows_the_provider_info(airflow_views: dict[str, Any]) -> None:
    assert airflow_views["get"] == [{"Provider": DISTRIBUTION, "Version": airflow_provider.__version__}]
    (full,) = airflow_views["get_full"]
    expected = airflow_provider.get_provider_info()
    # Airflow may add keys of its own (documentation-url); everything we declare is shown unchanged,
    # but for the CLI's output, which writes numbers and booleans as their text ("True", "10")
    assert {k: full.get(k) for k in expected if k != "description"} == {
        k: _scalars_as_text(v) for k, v in expected.items() if k != "description"}
    assert full["description"] == expected["description"].strip(" \n.")
    # the Providers page's documentation link: the package's page (which shows the README), from
    # the package metadata's Documentation URL, not a page of Airflow's own documentation
    assert full["documentation-url"] == "https://pypi.org/project/airflow-provider-training-runs/"


def test_providers_hooks_shows_every_connection_type(airflow_views: dict[str, Any]) -> None:
    rows = {row["connection_type"]: row for row in _ours(airflow_views["hooks"])}
    assert set(rows) == set(CONNECTION_TYPES)
    declared = {c["connection-type"]: c["hook-name"]
                for c in airflow_provider.get_provider_info()["connection-types"]}
    for conn_type, (hook_class, attribute) in CONNECTION_TYPES.items():
        assert rows[conn_type]["class"] == hook_class
        assert rows[conn_type]["conn_id_attribute_name"] == attribute
        assert rows[conn_type]["hook_name"] == declared[conn_type]


def test_providers_links_shows_the_mlflow_run_link(airflow_views: dict[str, Any]) -> None:
    names = [row["extra_link_class_name"] for row in airflow_views["links"]]
    assert LINK_CLASS in names


# ---------------------------------------------------------------------- ProvidersManager
def test_providers_manager_imports_every_declared_module(airflow_views: dict[str, Any]) -> None:
    probe = airflow_views["manager"]
    assert probe["provider"] is not None, "ProvidersManager does not know the provider"
    assert probe["provider"]["version"] == airflow_provider.__version__
    assert probe["imports"] and set(probe["imports"].values()) == {"ok"}, probe["imports"]
    assert LINK_CLASS in probe["extra_links"]
    assert probe["provider"]["data"]["extra-links"] == [LINK_CLASS]
    triggers = [t for t in probe["triggers"] if t["package_name"] == DISTRIBUTION]
    assert [t["trigger_class_name"] for t in triggers] == ["airflow_provider.triggers.training_run"]


def test_providers_manager_hooks_match_the_hook_classes(airflow_views: dict[str, Any]) -> None:
    probe = airflow_views["manager"]
    declared = {c["connection-type"]: c["hook-name"]
                for c in airflow_provider.get_provider_info()["connection-types"]}
    for conn_type, (hook_class, attribute) in CONNECTION_TYPES.items():
        hook = probe["hooks"][conn_type]
        assert hook is not None, f"ProvidersManager could not import the hook of {conn_type!r}"
        assert hook["hook_class_name"] == hook_class
        assert hook["package_name"] == DISTRIBUTION
        assert hook["connection_id_attribute_name"] == attribute
        assert hook["hook_name"] == declared[conn_type]
        # the class attributes agree with what the provider info declares
        assert probe["hook_classes"][conn_type] == {
            "conn_type": conn_type, "hook_name": declared[conn_type], "conn_name_attr": attribute}


def test_providers_manager_sees_the_connection_form_fields(airflow_views: dict[str, Any]) -> None:
    widgets = airflow_views["manager"]["widgets"]
    host_key = widgets.get("extra__training_ssh__host_key")
    assert host_key is not None, sorted(widgets)
    assert host_key["hook_class_name"] == CONNECTION_TYPES["training_ssh"][0]
    assert host_key["package_name"] == DISTRIBUTION
    assert host_key["field_name"] == "host_key"
    assert host_key["field"]["schema"]["title"] == "Pinned host key"
    assert host_key["is_sensitive"] is False

    info = airflow_provider.get_provider_info()
    for connection in info["connection-types"]:
        conn_type = connection["connection-type"]
        for field, definition in connection["conn-fields"].items():
            widget = widgets.get(f"extra__{conn_type}__{field}")
            assert widget is not None, f"{conn_type}.{field} is not a connection form field"
            assert widget["hook_class_name"] == connection["hook-class-name"]
            password = definition["schema"].get("format") == "password"
            assert widget["is_sensitive"] is password, f"{conn_type}.{field}: sensitive should be {password}"
    # Password inputs; the key fields are multi-line text areas instead, hidden by the API for their
    # names (airflow_provider.SECRET_FIELDS; tests/system/test_connection_redaction.py).
    sensitive = sorted(name for name, w in widgets.items() if w["is_sensitive"])
    assert sensitive == ["extra__mlflow__token", "extra__training_mpi__passphrase", "extra__training_slurm__passphrase",
                         "extra__training_ssh__passphrase"]


def test_providers_manager_sees_the_field_behaviours(airflow_views: dict[str, Any]) -> None:
    behaviours = airflow_views["manager"]["behaviours"]
    assert set(behaviours) == set(CONNECTION_TYPES)
    assert behaviours["mlflow"]["relabeling"] == {"host": "Tracking URI"}
    assert behaviours["mlflow"]["placeholders"] == {"host": "http://mlflow.example.com:5000"}
    assert set(behaviours["training_local"]["hidden_fields"]) == {
        "host", "schema", "login", "password", "port", "extra"}
    assert behaviours["training_docker"]["relabeling"]["host"] == "Daemon URL"
