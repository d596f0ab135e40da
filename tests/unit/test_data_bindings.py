"""Data inputs and outputs bound to runs: bindings, locations, credentials, lineage names, the run's
data plan, and what Airflow sees (placeholders, assets, connections).

Everything runs for real: local folders under tmp_path, LocalTarget, Jinja, Airflow's DAG and
Asset classes, and Airflow connections given as ``AIRFLOW_CONN_<ID>`` JSON environment variables.
Nothing connects anywhere (the SSH target is built but never connected).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest

from airflow_provider.core.config import ScriptRunConfig
from airflow_provider.core.data.bindings import Input, Output, validate_bindings
from airflow_provider.core.data.credentials import (
    CREDENTIALS_VARIABLE,
    register_resolver,
    resolve_options,
    resolved_for_environment,
)
from airflow_provider.core.data.lineage_names import asset_uri, openlineage_name
from airflow_provider.core.data.locations import open_filesystem, parse_location
from airflow_provider.core.data.run_data import expand_placeholders, placeholder_names, plan_run_data
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.targets.base import ComputeTarget
from airflow_provider.core.targets.local import LocalTarget
from tests.helpers import write_script

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A source folder holding train.py."""
    folder = tmp_path / "src"
    write_script(folder, "print('ok')\n")
    return folder


@pytest.fixture
def data_folder(tmp_path: Path) -> Path:
    """A local data folder of three files, 10 + 20 + 30 bytes, one in a subfolder."""
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.csv").write_bytes(b"x" * 10)
    (folder / "b.csv").write_bytes(b"y" * 20)
    (folder / "sub" / "c.csv").write_bytes(b"z" * 30)
    return folder


@pytest.fixture
def clean_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No resolver registered and no credentials variable, before and after the test."""
    monkeypatch.delenv(CREDENTIALS_VARIABLE, raising=False)
    register_resolver(None)
    try:
        yield
    finally:
        register_resolver(None)


@pytest.fixture
def no_input_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """No machine-wide input size limit from the environment."""
    monkeypatch.delenv("TRAINING_RUNS_MAX_INPUT_MB", raising=False)


def _config(source: Path, **fields: object) -> ScriptRunConfig:
    return ScriptRunConfig(source_directory=str(source), script="train.py", **fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- 1. validation of bindings
def test_valid_inputs_and_outputs_reach_the_resolved_config(source: Path) -> None:
    """A correct configuration validates and its resolved form carries the checked bindings."""
    resolved = _config(source, arguments=["--data", "${{inputs.train}}", "--out", "${{outputs.model}}"],
                       inputs={"train": Input("s3://bucket/train/", mode="direct")},
                       outputs={"model": Output("/tmp/models/{run_id}/")}).validate()
    assert resolved.inputs["train"].uri == "s3://bucket/train/"
    assert resolved.inputs["train"].mode == "direct"
    assert resolved.outputs["model"].mode == "upload"
    assert resolved.arguments == ["--data", "${{inputs.train}}", "--out", "${{outputs.model}}"]


def test_a_bad_input_mode_names_the_field_and_the_modes(source: Path) -> None:
    """An unknown Input mode is refused, naming inputs[...].mode, the valid modes and a fix."""
    with pytest.raises(ConfigurationError) as raised:
        _config(source, inputs={"train": Input("/data", mode="copy")}).validate()
    assert raised.value.field == "ScriptRunConfig.inputs['train'].mode"
    assert "'copy'" in raised.value.problem
    assert "download, direct, mount" in raised.value.problem
    assert "download" in raised.value.fix


def test_a_bad_output_mode_names_the_field_and_the_modes(source: Path) -> None:
    """An unknown Output mode is refused, naming outputs[...].mode and the valid modes."""
    with pytest.raises(ConfigurationError) as raised:
        _config(source, outputs={"model": Output("/out", mode="download")}).validate()
    assert raised.value.field == "ScriptRunConfig.outputs['model'].mode"
    assert "upload, direct" in raised.value.problem
    assert "upload" in raised.value.fix


@pytest.mark.parametrize("kind", ["inputs", "outputs"])
def test_inputs_or_outputs_that_are_not_a_dict_are_refused(source: Path, kind: str) -> None:
    """A list instead of a dict is refused, naming the field and showing the dict form."""
    with pytest.raises(ConfigurationError) as raised:
        _config(source, **{kind: ["s3://bucket/data/"]}).validate()
    assert raised.value.field == f"ScriptRunConfig.{kind}"
    assert "must be a dict" in raised.value.problem
    assert "got list" in raised.value.problem
    assert '{"train":' in raised.value.fix


@pytest.mark.parametrize("name", ["1x", "a b", "", "x" * 65, "a/b"])
def test_a_bad_binding_name_is_refused(source: Path, name: str) -> None:
    """Names must start with a letter or '_' and hold only letters, digits, '_', '.', '-' (64 at most)."""
    with pytest.raises(ConfigurationError) as raised:
        _config(source, inputs={name: Input("/data")}).validate()
    assert raised.value.field == f"ScriptRunConfig.inputs[{name!r}]"
    assert "must start with a letter" in raised.value.problem
    assert "train" in raised.value.fix


def test_good_binding_names_are_accepted(source: Path) -> None:
    """Names with '_' and digits after the first character, 64 characters long, are accepted."""
    names = ["_x", "train_2", "Train_Data", "x" * 64]
    resolved = _config(source, inputs={name: Input("/data") for name in names}).validate()
    assert sorted(resolved.inputs) == sorted(names)


def test_the_same_name_in_inputs_and_outputs_is_refused(source: Path) -> None:
    """An input and an output may not share a name (they share the run's variables)."""
    with pytest.raises(ConfigurationError) as raised:
        _config(source, inputs={"data": Input("/in")}, outputs={"data": Output("/out")}).validate()
    assert raised.value.field == "ScriptRunConfig.outputs['data']"
    assert "same name" in raised.value.problem
    assert "different names" in raised.value.fix


@pytest.mark.parametrize("uri", ["runs:/abc123/model", "models:/classifier@champion"])
def test_an_output_to_mlflow_uris_is_refused(source: Path, uri: str) -> None:
    """runs:/ and models:/ are read-only: an Output there is refused with a storage URI as the fix."""
    with pytest.raises(ConfigurationError) as raised:
        _config(source, outputs={"model": Output(uri)}).validate()
    assert raised.value.field == "ScriptRunConfig.outputs['model'].uri"
    assert "read-only" in raised.value.problem
    assert "./outputs" in raised.value.fix


def test_a_placeholder_naming_an_undeclared_input_lists_the_declared_ones(source: Path) -> None:
    """${{inputs.nope}} in arguments is refused, naming the placeholder and the declared inputs."""
    with pytest.raises(ConfigurationError) as raised:
        _config(source, arguments=["--data", "${{inputs.nope}}"],
                inputs={"train": Input("/t"), "valid": Input("/v")}).validate()
    assert raised.value.field == "ScriptRunConfig.arguments"
    assert "${{inputs.nope}}" in raised.value.problem
    assert "declared: train, valid" in raised.value.problem
    assert "'nope'" in raised.value.fix


def test_a_placeholder_with_no_outputs_declared_says_none(source: Path) -> None:
    """${{outputs.model}} with no outputs at all says that none is declared."""
    with pytest.raises(ConfigurationError) as raised:
        _config(source, arguments=["${{ outputs.model }}"]).validate()
    assert "${{outputs.model}}" in raised.value.problem
    assert "declared: none" in raised.value.problem


def test_a_placeholder_in_a_command_is_checked_too(tmp_path: Path) -> None:
    """Placeholders in a command (not only in arguments) must name declared inputs."""
    tmp_path.joinpath("src").mkdir()
    config = ScriptRunConfig(source_directory=str(tmp_path / "src"), command="python x.py ${{inputs.missing}}",
                             inputs={"train": Input("/t")})
    with pytest.raises(ConfigurationError, match=r"inputs\.missing"):
        config.validate()


def test_plain_strings_become_download_inputs_and_upload_outputs(source: Path, tmp_path: Path) -> None:
    """A plain URI (or path object) in inputs/outputs is taken as a download Input / upload Output."""
    resolved = _config(source, inputs={"train": " s3://bucket/train/ ", "local": tmp_path},
                       outputs={"model": "s3://bucket/out/"}).validate()
    train = resolved.inputs["train"]
    assert isinstance(train, Input)
    assert (train.uri, train.mode, train.connection, train.max_size_mb) == ("s3://bucket/train/", "download", None,
                                                                           None)
    assert resolved.inputs["local"].uri == str(tmp_path)
    assert isinstance(resolved.outputs["model"], Output)
    assert resolved.outputs["model"].mode == "upload"


@pytest.mark.parametrize("limit", [0, -1, 0.0, True, "10"])
def test_a_max_size_that_is_not_positive_is_refused(source: Path, limit: object) -> None:
    """max_size_mb must be a positive number (0, negatives, booleans and strings are refused)."""
    with pytest.raises(ConfigurationError) as raised:
        _config(source, inputs={"train": Input("/data", max_size_mb=limit)}).validate()  # type: ignore[arg-type]
    assert raised.value.field == "ScriptRunConfig.inputs['train'].max_size_mb"
    assert "positive number" in raised.value.problem
    assert "megabytes" in raised.value.fix


@pytest.mark.parametrize(("binding", "field"), [
    (Input(""), "uri"), (Input("   "), "uri"), (Input(42), "uri"),  # type: ignore[arg-type]
    (Input("/d", connection=""), "connection"), (Input("/d", storage_options=["k"]), "storage_options"),  # type: ignore[arg-type]
])
def test_bad_uri_connection_or_storage_options_are_refused(binding: Input, field: str) -> None:
    """An empty or non-string URI, an empty connection id and non-dict storage options name their field."""
    with pytest.raises(ConfigurationError) as raised:
        validate_bindings("Owner", {"x": binding}, None)
    assert raised.value.field == f"Owner.inputs['x'].{field}"


def test_a_non_boolean_overwrite_and_a_wrong_binding_type_are_refused() -> None:
    """Output.overwrite must be a bool; an Output given as an input is refused by type."""
    with pytest.raises(ConfigurationError, match=r"overwrite"):
        validate_bindings("Owner", None, {"m": Output("/o", overwrite="yes")})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as raised:
        validate_bindings("Owner", {"m": Output("/o")}, None)
    assert raised.value.field == "Owner.inputs['m']"
    assert "must be an Input, got Output" in raised.value.problem


def test_records_never_hold_storage_options() -> None:
    """to_record() and repr() of a binding never show its storage options (credentials)."""
    given = Input("s3://b/x/", connection="c", storage_options={"secret": "hunter22"})
    taken = Output("s3://b/y/", storage_options={"secret": "hunter22"})
    assert given.to_record() == {"uri": "s3://b/x/", "mode": "download", "connection": "c"}
    assert taken.to_record() == {"uri": "s3://b/y/", "mode": "upload", "connection": None, "overwrite": False}
    assert "hunter22" not in repr(given) + repr(taken) + json.dumps([given.to_record(), taken.to_record()])


# ----------------------------------------------------------------------------------------- 2. locations
def test_a_relative_local_path_becomes_an_absolute_file_location(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative path is a file location made absolute against the current folder."""
    monkeypatch.chdir(tmp_path)
    location = parse_location("data/train", "f")
    assert location.scheme == "file"
    assert location.is_local and not location.is_mlflow
    assert location.path == str(tmp_path / "data" / "train")
    assert os.path.isabs(location.path)


def test_file_uris_of_this_machine_are_local() -> None:
    """file:///p and file://localhost/p are local paths, percent-escapes decoded."""
    assert parse_location("file:///tmp/a%20b", "f").path == "/tmp/a b"
    location = parse_location("file://localhost/tmp/x", "f")
    assert (location.scheme, location.path) == ("file", "/tmp/x")


def test_a_file_uri_with_a_remote_host_is_refused() -> None:
    """file://otherhost/p is refused, suggesting sftp://otherhost/p."""
    with pytest.raises(ConfigurationError) as raised:
        parse_location("file://otherhost/data", "ScriptRunConfig.inputs['x']")
    assert raised.value.field == "ScriptRunConfig.inputs['x'].uri"
    assert "'otherhost'" in raised.value.problem
    assert "sftp://otherhost/data" in raised.value.fix


def test_an_sftp_uri_is_parsed() -> None:
    """sftp://user@host:2200/p gives host, port, user and path; the port defaults to 22."""
    location = parse_location("sftp://alice@data.example:2200/srv/data/", "f")
    assert (location.scheme, location.host, location.port, location.username, location.path) == (
        "sftp", "data.example", 2200, "alice", "/srv/data/")
    assert location.basename == ""
    plain = parse_location("ssh://box/file.csv", "f")
    assert (plain.scheme, plain.host, plain.port, plain.username, plain.path) == ("sftp", "box", 22, None,
                                                                                  "/file.csv")
    assert plain.basename == "file.csv"


def test_an_sftp_uri_without_a_host_is_refused() -> None:
    """sftp:///p names no host: refused with the URI's form as the fix."""
    with pytest.raises(ConfigurationError, match="names no host"):
        parse_location("sftp:///data", "f")


def test_an_unknown_scheme_lists_the_supported_ones() -> None:
    """foo://x is refused, naming the scheme and listing what is supported."""
    with pytest.raises(ConfigurationError) as raised:
        parse_location("foo://x", "ScriptRunConfig.inputs['x']")
    assert raised.value.field == "ScriptRunConfig.inputs['x'].uri"
    assert "'foo'" in raised.value.problem
    for supported in ("a local path", "sftp://", "s3://", "gs://", "abfs://", "runs:/", "models:/"):
        assert supported in raised.value.fix


@pytest.mark.parametrize(("uri", "package", "extra"), [("s3://bucket/key", "s3fs", "[s3]"),
                                                       ("gs://bucket/key", "gcsfs", "[gcs]"),
                                                       ("abfs://container/key", "adlfs", "[azure]")])
def test_an_object_store_without_its_package_names_the_package_to_install(
        uri: str, package: str, extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """s3://, gs:// and abfs:// with their fsspec package missing are a ConfigurationError saying what to
    pip install (and the extra); the package is hidden from the import system for the test."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == package else real_find_spec(name, *args))
    with pytest.raises(ConfigurationError) as raised:
        parse_location(uri, "ScriptRunConfig.inputs['x']")
    assert raised.value.field == "ScriptRunConfig.inputs['x'].uri"
    assert package in raised.value.problem
    assert f"pip install {package}" in str(raised.value)
    assert extra in raised.value.fix


@pytest.mark.parametrize("uri", ["runs:/", "runs:///", "models:/"])
def test_an_mlflow_uri_naming_nothing_is_refused(uri: str) -> None:
    """runs:/ (or models:/) with nothing after it is refused."""
    with pytest.raises(ConfigurationError) as raised:
        parse_location(uri, "f")
    assert raised.value.field == "f.uri"
    assert "names no run or model" in raised.value.problem


def test_mlflow_uris_are_parsed_without_fsspec() -> None:
    """runs:/<id>/<path> and models:/<name>@<alias> keep their scheme and what follows it."""
    run = parse_location("runs:/abc123/model", "f")
    assert (run.scheme, run.path, run.is_mlflow, run.is_local) == ("runs", "abc123/model", True, False)
    model = parse_location("models:/classifier@champion", "f")
    assert (model.scheme, model.path) == ("models", "classifier@champion")


def test_an_http_uri_keeps_the_url_as_its_path() -> None:
    """http(s):// locations are asked for by their full URL (aiohttp is installed here)."""
    if importlib.util.find_spec("aiohttp") is None:
        pytest.skip("aiohttp is not installed")
    location = parse_location("https://example.org:8443/d/train.csv", "f")
    assert (location.scheme, location.path, location.host, location.port) == (
        "https", "https://example.org:8443/d/train.csv", "example.org", 8443)


def test_a_local_location_opens_a_real_filesystem(data_folder: Path) -> None:
    """open_filesystem on a local location lists the real folder."""
    filesystem, path = open_filesystem(parse_location(str(data_folder), "f"), {})
    assert path == str(data_folder)
    found = sorted(os.path.relpath(name, data_folder) for name in filesystem.find(path))
    assert found == ["a.csv", "b.csv", os.path.join("sub", "c.csv")]


# -------------------------------------------------------------------------------------- 3. placeholders
def test_placeholder_names_finds_inputs_and_outputs_with_or_without_spaces() -> None:
    """Both ${{inputs.x}} and ${{ inputs.x }} are found, in order, several per value."""
    values = ["--data=${{inputs.train}}", "${{ inputs.valid }}:${{outputs.model}}", "{{ ds }}", "${inputs.x}"]
    assert placeholder_names(values) == [("inputs", "train"), ("inputs", "valid"), ("outputs", "model")]


def test_expand_placeholders_replaces_each_with_its_path() -> None:
    """Placeholders become the paths given; everything else is left as it is."""
    paths = {"inputs": {"train": "/job/work/.inputs/train", "a_b": "/x"}, "outputs": {"model": "/job/out/model"}}
    values = ["--data=${{inputs.train}}", "${{ inputs.train }}", "${{  outputs.model\t}}/best", "${{inputs.a_b}}",
              "{{ ds }} $HOME"]
    assert expand_placeholders(values, paths) == ["--data=/job/work/.inputs/train", "/job/work/.inputs/train",
                                                  "/job/out/model/best", "/x", "{{ ds }} $HOME"]


# -------------------------------------------------------------------------------------- 4. lineage names
@pytest.mark.parametrize(("uri", "expected"), [
    ("s3://bucket/a/b/", ("s3://bucket", "a/b")),
    ("s3a://bucket/a/b", ("s3://bucket", "a/b")),
    ("gs://bucket/p/q.csv", ("gs://bucket", "p/q.csv")),
    ("gcs://bucket/p", ("gs://bucket", "p")),
    ("abfss://container@account.dfs.core.windows.net/p/q/", ("abfss://container@account.dfs.core.windows.net",
                                                             "p/q")),
    ("abfs://container/p/q", ("abfs://container", "p/q")),
    ("sftp://h:2222/x", ("file://h:2222", "/x")),
    ("sftp://user@h/x/y/", ("file://h:22", "/x/y")),
    ("https://user:pw@example.org:8443/d/f.csv", ("https://example.org:8443", "/d/f.csv")),
    ("http://example.org/d/", ("http://example.org", "/d")),
    ("file:///srv/data/", ("file", "/srv/data")),
    ("runs:/abc/model", ("mlflow", "runs:/abc/model")),
    ("models:/m@champion", ("mlflow", "models:/m@champion")),
])
def test_openlineage_names_follow_the_naming_rules(uri: str, expected: tuple[str, str]) -> None:
    """Namespace and name per OpenLineage's Naming.md, from the URI alone."""
    assert openlineage_name(uri) == expected


def test_openlineage_name_of_a_local_path_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local path is namespace 'file' and its absolute path (relative ones resolved)."""
    assert openlineage_name(str(tmp_path / "d") + "/") == ("file", str(tmp_path / "d"))
    monkeypatch.chdir(tmp_path)
    assert openlineage_name("rel/x") == ("file", str(tmp_path / "rel" / "x"))


def test_asset_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local path becomes file://<absolute path>; user info is dropped except for Azure containers."""
    assert asset_uri(str(tmp_path / "d")) == f"file://{tmp_path / 'd'}"
    monkeypatch.chdir(tmp_path)
    assert asset_uri("rel") == f"file://{tmp_path / 'rel'}"
    assert asset_uri("sftp://user@h/x") == "sftp://h/x"
    assert asset_uri("sftp://user@h:2222/x") == "sftp://h:2222/x"
    assert asset_uri("https://u:p@example.org/f") == "https://example.org/f"
    assert asset_uri("abfss://c@acct.dfs.core.windows.net/p") == "abfss://c@acct.dfs.core.windows.net/p"
    assert asset_uri("s3://bucket/k") == "s3://bucket/k"
    assert asset_uri("runs:/abc/model") == "runs:/abc/model"


# ---------------------------------------------------------------------------------- 5. output URIs
def test_output_resolved_uri_fills_run_id_and_name() -> None:
    """{run_id}/{run-id} become the run id, {name}/{output-name} the output's name; others stay."""
    output = Output("s3://b/{name}/{run_id}/{output-name}-{run-id}/{other}/")
    assert output.resolved_uri("r1", "model") == "s3://b/model/r1/model-r1/{other}/"
    assert Output("/fixed/path").resolved_uri("r1", "m") == "/fixed/path"


# ---------------------------------------------------------------------------------------- 6. credentials
@pytest.mark.usefixtures("clean_credentials")
def test_a_registered_resolver_gives_the_options_and_given_options_win() -> None:
    """A resolver turns (connection, scheme) into options; storage_options override the same keys."""
    calls: list[tuple[str, str]] = []

    def resolver(connection: str, scheme: str) -> dict[str, object]:
        calls.append((connection, scheme))
        return {"key": f"{connection}-key", "endpoint_url": "http://from-connection"}

    register_resolver(resolver)
    options = resolve_options("f", "s3", "store", {"endpoint_url": "http://given"})
    assert options == {"key": "store-key", "endpoint_url": "http://given"}
    assert calls == [("store", "s3")]
    assert resolve_options("f", "s3", None, {"anon": True}) == {"anon": True}
    assert calls == [("store", "s3")], "no connection named: the resolver is not asked"
    assert resolve_options("f", "s3", None, None) == {}


@pytest.mark.usefixtures("clean_credentials")
def test_a_connection_nothing_can_resolve_is_refused() -> None:
    """A named connection with no resolver and no credentials variable is a ConfigurationError."""
    with pytest.raises(ConfigurationError) as raised:
        resolve_options("ScriptRunConfig.inputs['x']", "s3", "my_s3", None)
    assert raised.value.field == "ScriptRunConfig.inputs['x'].connection"
    assert "'my_s3'" in raised.value.problem
    assert "storage_options" in raised.value.fix


@pytest.mark.usefixtures("clean_credentials")
def test_the_credentials_variable_resolves_without_a_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRAINING_RUNS_DATA_CREDENTIALS (JSON by connection id) resolves connections; given options still win."""
    monkeypatch.setenv(CREDENTIALS_VARIABLE, json.dumps({"my_s3": {"key": "k", "secret": "s"}}))
    assert resolve_options("f", "s3", "my_s3", None) == {"key": "k", "secret": "s"}
    assert resolve_options("f", "s3", "my_s3", {"secret": "t"}) == {"key": "k", "secret": "t"}
    with pytest.raises(ConfigurationError):
        resolve_options("f", "s3", "other", None)
    monkeypatch.setenv(CREDENTIALS_VARIABLE, "not json")
    with pytest.raises(ConfigurationError):
        resolve_options("f", "s3", "my_s3", None)


@pytest.mark.usefixtures("clean_credentials")
def test_the_credentials_variable_is_asked_before_the_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection found in the variable does not reach the resolver; one missing from it does."""
    register_resolver(lambda connection, scheme: {"from": "resolver"})
    monkeypatch.setenv(CREDENTIALS_VARIABLE, json.dumps({"a": {"from": "variable"}}))
    assert resolve_options("f", "s3", "a", None) == {"from": "variable"}
    assert resolve_options("f", "s3", "b", None) == {"from": "resolver"}


@pytest.mark.usefixtures("clean_credentials")
def test_resolved_for_environment_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a resolver gives is passed as the variable, which resolves the same without the resolver."""
    register_resolver(lambda connection, scheme: {"key": f"{connection}/{scheme}", "client_kwargs": {"r": 1}})
    variables = resolved_for_environment({"out_s3": "s3", "out_gs": "gs"})
    assert list(variables) == [CREDENTIALS_VARIABLE]
    assert json.loads(variables[CREDENTIALS_VARIABLE]) == {"out_s3": {"key": "out_s3/s3", "client_kwargs": {"r": 1}},
                                                           "out_gs": {"key": "out_gs/gs", "client_kwargs": {"r": 1}}}
    register_resolver(None)
    monkeypatch.setenv(CREDENTIALS_VARIABLE, variables[CREDENTIALS_VARIABLE])
    assert resolve_options("f", "s3", "out_s3", None) == {"key": "out_s3/s3", "client_kwargs": {"r": 1}}


@pytest.mark.usefixtures("clean_credentials")
def test_resolved_for_environment_leaves_out_what_cannot_be_resolved() -> None:
    """Connections nothing resolves are left out; with none left, no variable at all."""
    assert resolved_for_environment({"a": "s3"}) == {}
    assert resolved_for_environment({}) == {}


# --------------------------------------------------------------------------------------- 7. plan_run_data
@pytest.mark.usefixtures("no_input_limit", "clean_credentials")
def test_a_local_download_input_is_sized(data_folder: Path) -> None:
    """A download input of a local folder is planned with the total size of its files; a file alone too."""
    data = plan_run_data({"train": Input(str(data_folder)), "one": Input(str(data_folder / "b.csv"))}, {},
                         LocalTarget())
    planned = {plan.name: plan for plan in data.inputs}
    assert planned["train"].total_size == 60
    assert planned["train"].single_file is False
    assert planned["train"].location.path == str(data_folder)
    assert planned["one"].total_size == 20
    assert planned["one"].single_file is True
    assert data.mounts == {} and data.binds == {}
    assert not data.empty


@pytest.mark.usefixtures("no_input_limit", "clean_credentials")
def test_a_missing_local_input_names_the_input(tmp_path: Path) -> None:
    """A download input of a path that does not exist is refused, naming inputs['x']."""
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigurationError) as raised:
        plan_run_data({"x": Input(str(missing))}, {}, LocalTarget())
    assert raised.value.field == "ScriptRunConfig.inputs['x'].uri"
    assert str(missing) in raised.value.problem
    assert "does not exist" in raised.value.problem


@pytest.mark.usefixtures("no_input_limit", "clean_credentials")
def test_an_input_over_its_size_limit_is_refused(tmp_path: Path) -> None:
    """An input larger than max_size_mb is refused before it is copied, naming the size and the limit."""
    folder = tmp_path / "big"
    folder.mkdir()
    with open(folder / "blob.bin", "wb") as handle:
        handle.truncate(3 * 2**20)  # 3 MB (sparse)
    with pytest.raises(ConfigurationError) as raised:
        plan_run_data({"x": Input(str(folder), max_size_mb=1)}, {}, LocalTarget())
    assert raised.value.field == "ScriptRunConfig.inputs['x'].max_size_mb"
    assert "3.0 MB" in raised.value.problem
    assert "limit of 1.0 MB" in raised.value.problem
    assert "mode='direct'" in raised.value.fix
    planned = plan_run_data({"x": Input(str(folder), max_size_mb=4)}, {}, LocalTarget())
    assert planned.inputs[0].total_size == 3 * 2**20


@pytest.mark.usefixtures("clean_credentials")
def test_the_machine_wide_size_limit_applies_when_the_input_sets_none(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """TRAINING_RUNS_MAX_INPUT_MB limits inputs without max_size_mb."""
    folder = tmp_path / "big"
    folder.mkdir()
    with open(folder / "blob.bin", "wb") as handle:
        handle.truncate(2 * 2**20)
    monkeypatch.setenv("TRAINING_RUNS_MAX_INPUT_MB", "1")
    with pytest.raises(ConfigurationError, match=r"limit of 1\.0 MB"):
        plan_run_data({"x": Input(str(folder))}, {}, LocalTarget())


@pytest.mark.usefixtures("no_input_limit", "clean_credentials")
def test_a_local_mount_is_the_path_itself(data_folder: Path) -> None:
    """A mount input of an existing local path is that path on the local target (no bind needed)."""
    data = plan_run_data({"m": Input(str(data_folder), mode="mount")}, {}, LocalTarget())
    assert data.mounts == {"m": str(data_folder)}
    assert data.binds == {}
    assert data.inputs[0].total_size is None, "a mount is not listed or copied"


@pytest.mark.usefixtures("no_input_limit", "clean_credentials")
def test_a_local_mount_of_a_missing_path_is_refused(tmp_path: Path) -> None:
    """The local target refuses to mount a path that does not exist."""
    with pytest.raises(ConfigurationError) as raised:
        plan_run_data({"m": Input(str(tmp_path / "nowhere"), mode="mount")}, {}, LocalTarget())
    assert raised.value.field == "ScriptRunConfig.inputs['m'].uri"
    assert "does not exist" in raised.value.problem


@pytest.mark.usefixtures("no_input_limit", "clean_credentials")
def test_a_mount_of_a_remote_uri_is_refused() -> None:
    """mount needs a path the target sees: an http:// URI is refused with download/direct as the fix."""
    if importlib.util.find_spec("aiohttp") is None:
        pytest.skip("aiohttp is not installed")
    with pytest.raises(ConfigurationError) as raised:
        plan_run_data({"web": Input("http://127.0.0.1:9/x", mode="mount")}, {}, LocalTarget())
    assert raised.value.field == "ScriptRunConfig.inputs['web'].mode"
    assert "http://127.0.0.1:9/x" in raised.value.problem
    assert "download" in raised.value.fix and "direct" in raised.value.fix


@pytest.mark.usefixtures("no_input_limit", "clean_credentials")
def test_the_base_target_refuses_to_mount(data_folder: Path) -> None:
    """ComputeTarget.mount_input refuses by default, naming the target kind and pointing to download."""
    with pytest.raises(ConfigurationError) as raised:
        ComputeTarget.mount_input(LocalTarget(), "x", "/p", "f")
    assert raised.value.field == "f.mode"
    assert "the local target cannot mount '/p'" in raised.value.problem
    assert "download" in raised.value.fix


@pytest.mark.usefixtures("no_input_limit", "clean_credentials")
def test_an_ssh_target_refuses_a_mount_input(data_folder: Path) -> None:
    """The SSH target (built, never connected) keeps the default: a mount input is refused at planning."""
    from airflow_provider.core.targets.ssh import SSHTarget
    from airflow_provider.core.targets.ssh_connection import SSHSettings

    target = SSHTarget(SSHSettings(host="192.0.2.1"))  # TEST-NET-1: never contacted
    with pytest.raises(ConfigurationError) as raised:
        plan_run_data({"m": Input(str(data_folder), mode="mount")}, {}, target)
    assert raised.value.field == "ScriptRunConfig.inputs['m'].mode"
    assert "the ssh target cannot mount" in raised.value.problem
    assert "mode='download'" in raised.value.fix
    assert target.connection._client is None, "planning never connected"


@pytest.mark.usefixtures("no_input_limit", "clean_credentials")
def test_direct_inputs_are_not_listed_and_outputs_are_parsed(tmp_path: Path) -> None:
    """A direct input is not read at planning; an output with an unknown scheme is refused by name."""
    data = plan_run_data({"d": Input(str(tmp_path / "not-there-yet"), mode="direct")},
                         {"m": Output(str(tmp_path / "out" / "{run_id}"))}, LocalTarget())
    assert data.inputs[0].total_size is None
    assert data.outputs["m"].uri.endswith("{run_id}")
    with pytest.raises(ConfigurationError) as raised:
        plan_run_data({}, {"m": Output("foo://bucket/{run_id}")}, LocalTarget())
    assert raised.value.field == "ScriptRunConfig.outputs['m'].uri"


@pytest.mark.usefixtures("no_input_limit", "clean_credentials")
def test_an_input_connection_is_resolved_at_planning(data_folder: Path) -> None:
    """An input naming a connection gets the resolver's options; an unresolvable one fails at planning."""
    with pytest.raises(ConfigurationError, match=r"inputs\['x'\]\.connection"):
        plan_run_data({"x": Input(str(data_folder), connection="nowhere")}, {}, LocalTarget())
    register_resolver(lambda connection, scheme: {"auto_mkdir": scheme == "file"})
    data = plan_run_data({"x": Input(str(data_folder), connection="local_conn")}, {}, LocalTarget())
    assert data.inputs[0].options == {"auto_mkdir": True}


# ------------------------------------------------------------------------------------------ 8. Airflow side
def _placeholder_context() -> dict[str, object]:
    from airflow_provider.operators.data_lineage import DataPlaceholders

    return {"inputs": DataPlaceholders("inputs"), "outputs": DataPlaceholders("outputs"), "ds": "2026-01-01"}


def test_data_placeholders_survive_jinja() -> None:
    """${{inputs.x}} / ${{outputs.y}} render back to themselves while {{ ds }} renders, under StrictUndefined."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    template = "${{inputs.train}} --out ${{outputs.model}} {{ ds }}"
    rendered = environment.from_string(template).render(**_placeholder_context())
    assert rendered == "${{inputs.train}} --out ${{outputs.model}} 2026-01-01"
    spaced = environment.from_string("${{ inputs.train }}").render(**_placeholder_context())
    assert placeholder_names([spaced]) == [("inputs", "train")]
    with pytest.raises(jinja2.UndefinedError):
        environment.from_string("{{ not_there }}").render(**_placeholder_context())


def test_data_placeholders_survive_airflows_sandboxed_environment() -> None:
    """The same holds in Airflow's own sandboxed Jinja environment."""
    from airflow.sdk.definitions._internal.templater import SandboxedEnvironment

    environment = SandboxedEnvironment(undefined=jinja2.StrictUndefined)
    rendered = environment.from_string("${{inputs['train']}} ${{outputs.model}}").render(**_placeholder_context())
    assert rendered == "${{inputs.train}} ${{outputs.model}}"


@pytest.mark.parametrize("name", ["my-data", "a.b"])
def test_names_jinja_cannot_render_as_placeholders_are_refused(name: str) -> None:
    """A name with '-' or '.' would not survive Airflow's rendering as ${{inputs.<name>}}: refused, naming why."""
    with pytest.raises(ConfigurationError, match=r"inputs\[.*letters, digits or '_'"):
        validate_bindings("ScriptRunConfig", {name: Input("/d")}, None)


def test_data_assets_of_fixed_uris_are_assets(tmp_path: Path) -> None:
    """Fixed input/output URIs become Asset inlets/outlets; a local path becomes a file:// URI."""
    from airflow.sdk import Asset

    from airflow_provider.operators.data_lineage import data_assets

    inlets, outlets = data_assets({"train": Input(str(tmp_path / "train")), "plain": "gs://bucket/p"},
                                  {"model": Output("sftp://user@host/models/")}, "t")
    assert all(isinstance(item, Asset) for item in [*inlets, *outlets])
    assert [item.uri for item in inlets] == [f"file://{tmp_path / 'train'}", "gs://bucket/p"]
    assert [item.uri for item in outlets] == ["sftp://host/models"]


def test_data_assets_skip_templated_inputs_and_direct_mlflow_ones() -> None:
    """Templated input URIs and direct runs:/ / models:/ inputs are not inlets at parse time."""
    from airflow_provider.operators.data_lineage import data_assets

    inlets, outlets = data_assets({"t": Input("s3://b/{{ ds }}/"), "r": Input("runs:/abc/m", mode="direct"),
                                   "m": Input("models:/m@prod", mode="direct"), "k": Input("runs:/abc/m")}, None, "t")
    assert [item.uri for item in inlets] == ["runs:/abc/m"]
    assert outlets == []


def test_per_run_outputs_are_asset_aliases_without_a_dag() -> None:
    """A {run_id} or templated output URI is an AssetAlias named by output_alias_name('', task, name)."""
    from airflow.sdk import AssetAlias

    from airflow_provider.operators.data_lineage import data_assets, output_alias_name

    _, outlets = data_assets(None, {"model": Output("/tmp/m/{run_id}/"), "report": "s3://b/{{ ds }}/",
                                    "n": Output("s3://b/{output-name}")}, "t")
    assert all(isinstance(item, AssetAlias) for item in outlets)
    assert [item.name for item in outlets] == [output_alias_name("", "t", name) for name in ("model", "report", "n")]
    assert outlets[0].name == "training-output:t.model"


def test_data_assets_use_the_dag_given() -> None:
    """With a DAG passed, the alias name carries its id."""
    from airflow.sdk import DAG

    from airflow_provider.operators.data_lineage import data_assets

    dag = DAG("given", schedule=None, start_date=START)
    _, outlets = data_assets(None, {"model": Output("/tmp/m/{run_id}/")}, "t", dag)
    assert outlets[0].name == "training-output:given.t.model"


def test_the_operator_declares_its_data_as_inlets_and_outlets(tmp_path: Path) -> None:
    """SubmitTrainingRunOperator inside a DAG: the input is an Asset inlet, the per-run output a DAG alias."""
    from airflow.sdk import DAG, Asset, AssetAlias

    from airflow_provider.operators.submit_training_run import SubmitTrainingRunOperator

    with DAG("d", schedule=None, start_date=START):
        operator = SubmitTrainingRunOperator(task_id="t", source_directory=str(tmp_path), script="train.py",
                                             inputs={"train": Input("s3://b/x/")},
                                             outputs={"model": Output("/tmp/m/{run_id}/")},
                                             inlets=[Asset(uri="s3://b/other")])
    assert [item.uri for item in operator.inlets if isinstance(item, Asset)] == ["s3://b/other", "s3://b/x"]
    aliases = [item for item in operator.outlets if isinstance(item, AssetAlias)]
    assert len(aliases) == 1 and len(operator.outlets) == 1
    assert "d.t.model" in aliases[0].name
    assert aliases[0].name == "training-output:d.t.model"


def test_the_output_alias_matches_the_task_id_inside_a_task_group(tmp_path: Path) -> None:
    """Inside a TaskGroup, the alias declared must be the one announce_outputs looks up (by operator.task_id)."""
    from airflow.sdk import DAG, AssetAlias, TaskGroup

    from airflow_provider.operators.data_lineage import output_alias_name
    from airflow_provider.operators.submit_training_run import SubmitTrainingRunOperator

    with DAG("d", schedule=None, start_date=START), TaskGroup("g"):
        operator = SubmitTrainingRunOperator(task_id="t", source_directory=str(tmp_path), script="train.py",
                                             outputs={"model": Output("/tmp/m/{run_id}/")})
    assert operator.task_id == "g.t"
    names = [item.name for item in operator.outlets if isinstance(item, AssetAlias)]
    looked_up = {output_alias_name(operator.dag_id, operator.task_id, "model"),
                 output_alias_name("", operator.task_id, "model")}
    assert set(names) & looked_up, f"declared {names}, announce_outputs looks up {sorted(looked_up)}"


def test_the_operator_renders_templates_and_keeps_placeholders(tmp_path: Path) -> None:
    """Rendering the operator's fields fills {{ ds }} (also in an Input's URI) and keeps ${{...}}."""
    from airflow.sdk import DAG

    from airflow_provider.operators.submit_training_run import SubmitTrainingRunOperator

    with DAG("d", schedule=None, start_date=START):
        operator = SubmitTrainingRunOperator(
            task_id="t", source_directory=str(tmp_path), script="train.py",
            arguments=["--data", "${{inputs.train}}", "--out", "${{ outputs.model }}", "{{ ds }}"],
            inputs={"train": Input("s3://b/{{ ds }}/")}, outputs={"model": Output("/tmp/m/{run_id}/")})
    assert operator.inlets == [], "a templated input is no inlet at parse time"
    operator.render_template_fields({"ds": "2026-01-01"})  # type: ignore[arg-type]
    assert operator.arguments == ["--data", "${{inputs.train}}", "--out", "${{outputs.model}}", "2026-01-01"]
    assert operator.inputs["train"].uri == "s3://b/2026-01-01/"  # type: ignore[index,union-attr]
    assert operator.outputs["model"].uri == "/tmp/m/{run_id}/"  # type: ignore[index,union-attr]


# ------------------------------------------------------------------------------ 9. Airflow connections
def _connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> None:
    """Give Airflow connection ``conn_id`` as an AIRFLOW_CONN_<ID> JSON variable."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_an_aws_connection_gives_s3_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """login/password become key/secret; extra endpoint_url, region_name and session token are mapped."""
    from airflow_provider.hooks.data_connections import storage_options_for

    _connection(monkeypatch, "my_s3", conn_type="aws", login="AKIAEXAMPLE", password="s3cr3t-value",
                extra={"endpoint_url": "http://127.0.0.1:7480"})
    assert storage_options_for("my_s3", "s3") == {"key": "AKIAEXAMPLE", "secret": "s3cr3t-value",
                                                  "endpoint_url": "http://127.0.0.1:7480"}
    _connection(monkeypatch, "my_s3", conn_type="aws", host="https://minio.local:9000",
                extra={"aws_access_key_id": "k2", "aws_secret_access_key": "s2", "aws_session_token": "tok",
                       "region_name": "eu-west-1"})
    assert storage_options_for("my_s3", "s3") == {"key": "k2", "secret": "s2", "token": "tok",
                                                  "endpoint_url": "https://minio.local:9000",
                                                  "client_kwargs": {"region_name": "eu-west-1"}}


def test_an_sftp_connection_gives_ssh_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """login, password, port and the SSH extras (host_key, key_file...) become the sftp options."""
    from airflow_provider.hooks.data_connections import storage_options_for

    _connection(monkeypatch, "box", conn_type="sftp", host="h", login="alice", password="pw-value", port=2200,
                extra={"host_key": "ssh-ed25519 AAAAC3Nza", "key_file": "/keys/id", "accept_unknown_host_keys": "True",
                       "unrelated": "x"})
    assert storage_options_for("box", "sftp") == {"username": "alice", "password": "pw-value", "port": 2200,
                                                  "host_key": "ssh-ed25519 AAAAC3Nza", "key_file": "/keys/id",
                                                  "accept_unknown_host_keys": True}


def test_an_http_connection_gives_basic_auth_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """An http login becomes aiohttp BasicAuth in client_kwargs; extra headers are passed."""
    if importlib.util.find_spec("aiohttp") is None:
        pytest.skip("aiohttp is not installed")
    import aiohttp

    from airflow_provider.hooks.data_connections import storage_options_for

    _connection(monkeypatch, "web", conn_type="http", login="reader", password="pw-value",
                extra={"headers": {"X-Team": "ml"}})
    options = storage_options_for("web", "https")
    assert options["client_kwargs"]["auth"] == aiohttp.BasicAuth("reader", "pw-value")
    assert options["headers"] == {"X-Team": "ml"}


def test_gs_and_abfs_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """gs takes token/project from extra; abfs takes account name/key from login/password."""
    from airflow_provider.hooks.data_connections import storage_options_for

    _connection(monkeypatch, "gcp", conn_type="google_cloud_platform", extra={"token": "google_default",
                                                                               "project": "p1"})
    assert storage_options_for("gcp", "gs") == {"token": "google_default", "project": "p1"}
    _connection(monkeypatch, "az", conn_type="wasb", login="acct", password="a-key-value",
                extra={"sas_token": "sv=1"})
    assert storage_options_for("az", "abfs") == {"account_name": "acct", "account_key": "a-key-value",
                                                 "sas_token": "sv=1"}


def test_extra_storage_options_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """extra.storage_options are passed as they are and override the mapped fields."""
    from airflow_provider.hooks.data_connections import storage_options_for

    _connection(monkeypatch, "my_s3", conn_type="aws", login="k", password="secret-value",
                extra={"endpoint_url": "http://127.0.0.1:7480",
                       "storage_options": {"endpoint_url": "http://127.0.0.1:9000", "anon": False}})
    assert storage_options_for("my_s3", "s3") == {"key": "k", "secret": "secret-value",
                                                  "endpoint_url": "http://127.0.0.1:9000", "anon": False}


def test_a_missing_connection_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection id Airflow does not know is a ConfigurationError naming it."""
    from airflow_provider.hooks.data_connections import storage_options_for

    monkeypatch.delenv("AIRFLOW_CONN_NOT_DEFINED_ANYWHERE", raising=False)
    with pytest.raises(ConfigurationError) as raised:
        storage_options_for("not_defined_anywhere", "s3")
    assert "'not_defined_anywhere'" in raised.value.problem
    assert "Admin > Connections" in raised.value.fix


@pytest.mark.usefixtures("clean_credentials")
def test_registered_connections_resolve_inputs_and_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    """register_data_connections makes resolve_options read Airflow connections; the result survives the
    credentials variable, and options on the binding still win."""
    from airflow_provider.hooks.data_connections import register_data_connections

    _connection(monkeypatch, "my_s3", conn_type="aws", login="k", password="secret-value",
                extra={"endpoint_url": "http://127.0.0.1:7480"})
    register_data_connections()
    assert resolve_options("f", "s3", "my_s3", {"endpoint_url": "http://other"}) == {
        "key": "k", "secret": "secret-value", "endpoint_url": "http://other"}
    variables = resolved_for_environment({"my_s3": "s3", "missing_conn": "s3"})
    register_resolver(None)
    monkeypatch.delenv("AIRFLOW_CONN_MY_S3")
    monkeypatch.setenv(CREDENTIALS_VARIABLE, variables[CREDENTIALS_VARIABLE])
    assert resolve_options("f", "s3", "my_s3", None) == {"key": "k", "secret": "secret-value",
                                                         "endpoint_url": "http://127.0.0.1:7480"}
    assert "missing_conn" not in json.loads(variables[CREDENTIALS_VARIABLE])


def test_a_password_in_a_uri_is_refused_and_signed_urls_are_recorded_masked() -> None:
    """Credentials never ride in a recorded URI: a user:password@ URI is refused, naming the fix; the
    signature of a signed URL is masked in what is recorded; other URIs are recorded as they are."""
    from airflow_provider.core.data.bindings import recordable_uri

    with pytest.raises(ConfigurationError, match=r"inputs\['x'\].uri.*holds a password.*connection"):
        validate_bindings("ScriptRunConfig", {"x": Input("sftp://me:hunter2@host/data")}, None)
    with pytest.raises(ConfigurationError, match=r"outputs\['y'\].uri.*holds a password") as raised:
        validate_bindings("ScriptRunConfig", None, {"y": Output("sftp://me:hunter2@host/out")})
    assert "hunter2" not in str(raised.value)
    signed = "https://acct.blob.core.windows.net/c/x.csv?sv=2024-01-01&sig=SECRET%2Fsig&se=2026"
    assert recordable_uri(signed) == "https://acct.blob.core.windows.net/c/x.csv?sv=2024-01-01&sig=***&se=2026"
    assert Input(signed).to_record()["uri"].count("SECRET") == 0
    assert recordable_uri("s3://bucket/prefix/") == "s3://bucket/prefix/"
    assert recordable_uri("runs:/abc/model") == "runs:/abc/model"


def test_an_output_is_claimed_at_staging_and_an_abandoned_claim_taken_over(tmp_path: Path) -> None:
    """Staging claims a fixed output folder: another run staged while the first still runs is refused;
    once the first has ended without writing (it failed before starting), a new run takes it over."""
    from airflow_provider.core.data.outputs import MARKER, DeclaredOutput, check_output

    folder = tmp_path / "model"
    output = DeclaredOutput("model", str(folder), "upload", None, False)
    check_output(output, "run-a", {}, "outputs['model']", run_is_active=lambda run: True)
    assert json.loads((folder / MARKER).read_text()) == {"run_id": "run-a", "state": "claimed"}
    check_output(output, "run-a", {}, "outputs['model']")  # its own claim: a retried staging
    with pytest.raises(ConfigurationError, match="already holds data written by run run-a"):
        check_output(output, "run-b", {}, "outputs['model']", run_is_active=lambda run: run == "run-a")
    check_output(output, "run-b", {}, "outputs['model']", run_is_active=lambda run: False)
    assert json.loads((folder / MARKER).read_text())["run_id"] == "run-b"
    (folder / "weights.bin").write_bytes(b"w")  # data written: never taken over, even from an ended run
    with pytest.raises(ConfigurationError, match="already holds data written by run run-b"):
        check_output(output, "run-c", {}, "outputs['model']", run_is_active=lambda run: False)


# ------------------------------------------------------ declared outputs travel with the run's description
def test_declared_outputs_round_trip_and_names_that_could_leave_the_outputs_folder_are_dropped() -> None:
    from airflow_provider.core.data.outputs import DeclaredOutput, outputs_from_dict, outputs_to_dict

    model = DeclaredOutput("model", "s3://bucket/models/r1", "upload", "aws_default", False)
    assert outputs_from_dict(outputs_to_dict([model])) == (model,)
    forged = {"../x": model.to_dict(), "a/b": model.to_dict(), "ok": "not a mapping", "model": model.to_dict()}
    assert outputs_from_dict(forged) == (model,)


def test_a_run_reference_and_a_finalizer_description_carry_the_outputs_it_was_submitted_with(
        tmp_path: Path) -> None:
    """What the trigger, ``execute_complete`` and the detached finalizer copy comes from these, not
    from the run's tags; a reference written before they carried outputs rebuilds a run whose
    outputs are unknown (kept in its artifacts), never an empty list (silently not copied)."""
    from airflow_provider.core.data.outputs import DeclaredOutput
    from airflow_provider.core.finalizer import describe, script_run
    from airflow_provider.core.script_run import ScriptRun
    from airflow_provider.core.submit import Experiment
    from airflow_provider.core.targets.base import JobHandle
    from airflow_provider.run_reference import RunReference

    outputs = (DeclaredOutput("model", str(tmp_path / "models"), "upload", None, False),)
    handle = JobHandle("local", "0123456789abcdef0123456789abcdef", str(tmp_path / "job"))
    experiment = Experiment("declared", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = ScriptRun(experiment, handle.job_id, LocalTarget(), handle, outputs=outputs)
    assert script_run(json.loads(json.dumps(describe(run)))).outputs == outputs
    unknown = ScriptRun(experiment, handle.job_id, LocalTarget(), handle)
    assert script_run(json.loads(json.dumps(describe(unknown)))).outputs is None

    reference = RunReference(handle.job_id, "declared", experiment.tracking_uri, None, "local", handle.to_dict(),
                             outputs={"model": outputs[0].to_dict()})
    assert RunReference.from_dict(json.loads(json.dumps(reference.to_dict()))).script_run(False).outputs == outputs
    written_before = {key: value for key, value in reference.to_dict().items() if key != "outputs"}
    assert RunReference.from_dict(written_before).script_run(False).outputs is None


# ------------------------------------------------------------ direct bindings' credentials reach the script
def test_a_direct_bindings_credentials_become_its_storages_standard_variables() -> None:
    from airflow_provider.core.data.job_credentials import DirectBinding, job_variables

    s3 = DirectBinding("ScriptRunConfig.inputs['raw']", "s3", {
        "key": "AKIA", "secret": "s3cr3t", "endpoint_url": "http://127.0.0.1:7480",
        "client_kwargs": {"region_name": "eu-west-1"}})
    azure = DirectBinding("ScriptRunConfig.outputs['scores']", "abfs", {"account_name": "acct", "account_key": "k"})
    assert job_variables([s3, azure, DirectBinding("x", "file", {})]) == {
        "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_ENDPOINT_URL": "http://127.0.0.1:7480",
        "AWS_DEFAULT_REGION": "eu-west-1", "AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": "k",
        "AZURE_STORAGE_ANON": "false"}
    same_keys = DirectBinding("ScriptRunConfig.inputs['more']", "s3", {"key": "AKIA", "secret": "s3cr3t"})
    assert job_variables([s3, same_keys])["AWS_ACCESS_KEY_ID"] == "AKIA"


@pytest.mark.parametrize(("binding", "message"), [
    (("sftp", {"username": "u", "password": "p"}), "no standard environment variables"),
    (("s3", {"key": "AKIA", "anon": False}), "'anon' of a direct binding does not reach the script"),
])
def test_what_no_variable_carries_does_not_reach_the_script_and_the_log_says_so(
        binding: tuple[str, dict[str, object]], message: str, caplog: pytest.LogCaptureFixture) -> None:
    from airflow_provider.core.data.job_credentials import DirectBinding, job_variables

    variables = job_variables([DirectBinding("ScriptRunConfig.inputs['raw']", *binding)])
    assert "anon" not in str(variables) and "p" not in variables.values()
    assert message in caplog.text and "ScriptRunConfig.inputs['raw']" in caplog.text


def test_a_callers_own_variables_of_the_same_storage_are_not_mixed_with_a_connections() -> None:
    from airflow_provider.core.data.job_credentials import check_not_set_by_caller

    direct = {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_ENDPOINT_URL": "http://minio:9000"}
    check_not_set_by_caller(direct, {"secret_environment_variables": {"HF_TOKEN": "x"},
                                     "ScriptRunConfig.environment_variables": {"AWS_CA_BUNDLE": "/etc/ca.pem"}})
    with pytest.raises(ConfigurationError, match="sets AWS_SECRET_ACCESS_KEY") as caught:
        check_not_set_by_caller(direct, {"secret_environment_variables": {"AWS_SECRET_ACCESS_KEY": "mine"}})
    assert caught.value.field == "secret_environment_variables"


def test_two_direct_bindings_needing_different_keys_are_refused_naming_both() -> None:
    from airflow_provider.core.data.job_credentials import DirectBinding, job_variables

    first = DirectBinding("ScriptRunConfig.inputs['a']", "s3", {"key": "ONE"})
    second = DirectBinding("ScriptRunConfig.outputs['b']", "s3", {"key": "TWO"})
    with pytest.raises(ConfigurationError, match=r"AWS_ACCESS_KEY_ID.*inputs\['a'\]") as caught:
        job_variables([first, second])
    assert caught.value.field == "ScriptRunConfig.outputs['b'].connection"
