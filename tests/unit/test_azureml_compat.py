"""Azure ML v1 compatibility: the new events, argument expansion, the hint, the flags, and the
script-side layer run offline in real interpreters (no submitted run needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider.compat.azureml import shim_path
from airflow_provider.core import ConfigurationError, Environment, ScriptRunConfig
from airflow_provider.core.azureml_compat import HINT, azureml_module_hint, expand_arguments
from airflow_provider.runtime.events import (
    ChildRunEvent,
    EndRunEvent,
    FileEvent,
    MetricEvent,
    ModelEvent,
    RowEvent,
    TableEvent,
    TagEvent,
    decode_event,
    decode_events,
    encode_event,
)

CHILD_EVENTS = [
    ChildRunEvent("abc_0", "fold 0"),
    ChildRunEvent("abc_0_1", "nested", parent="abc_0"),
    EndRunEvent("Completed", child="abc_0"),
    EndRunEvent("Failed", "diverged (error code 7)"),
    ModelEvent("ridge", "outputs/model.pkl", {"alpha": "0.5"}, "a ridge model"),
    MetricEvent("loss", 0.5, 2, 1_700_000_000_000, child="abc_0"),
    TagEvent("kind", "ridge", child="abc_0"),
    FileEvent("images/x.png", "uploads/000001_x.png", child="abc_0"),
    RowEvent("folds", {"fold": 1}, child="abc_0"),
    TableEvent("t", {"a": [1]}, child="abc_0"),
]


@pytest.mark.parametrize("event", CHILD_EVENTS, ids=lambda e: f"{type(e).__name__}-{e.child}")
def test_compat_events_round_trip(event: object) -> None:
    line = encode_event(event)  # type: ignore[arg-type]
    assert decode_event(line) == event
    assert decode_events([line.rstrip(b"\n")]) == [event]


def test_events_of_the_run_itself_keep_their_wire_format() -> None:
    assert b'"ch"' not in encode_event(MetricEvent("loss", 1.0, 0, 1))
    assert decode_event(b'{"e":"tag","k":"a","v":"b"}') == TagEvent("a", "b")


@pytest.mark.parametrize(("argument", "expected"), [
    ("$AZUREML_RUN_ID", "r1"),
    ("${AZUREML_RUN_ID}", "r1"),
    ("--data=${DATA}/train.csv", "--data=/mnt/my data/train.csv"),  # one argument, no word splitting
    ("$DATA_DIR", "$DATA_DIR"),  # undefined: stays as written
    ("${UNSET}", "${UNSET}"),
    ("cost $5", "cost $5"),
    ("$", "$"),
    ("$RUN$RUN", "xx"),
])
def test_arguments_expand_defined_variables_only(argument: str, expected: str) -> None:
    variables = {"AZUREML_RUN_ID": "r1", "DATA": "/mnt/my data", "RUN": "x"}
    assert expand_arguments([argument], variables) == [expected]


def test_missing_azureml_gets_a_hint_naming_the_flag() -> None:
    tail = "Traceback ...\nModuleNotFoundError: No module named 'azureml'\n"
    error = azureml_module_hint("the command exited with code 1", tail)
    assert error.startswith("the command exited with code 1; ")
    assert "azureml_compat=True" in error and "ScriptRunConfig" in error and "SubmitTrainingRunOperator" in error
    assert azureml_module_hint(error, tail) == error  # never twice
    assert azureml_module_hint("x", "ModuleNotFoundError: No module named 'azureml.core'") == f"x; {HINT}"
    assert azureml_module_hint("x", "No module named 'azureml_helpers'") == "x"
    assert azureml_module_hint("x", "ModuleNotFoundError: No module named 'sklearn'") == "x"


def test_environment_flag_round_trips_and_registers(isolated_state: Path) -> None:
    env = Environment("v1-env")
    plain_hash = env.definition_hash()
    env.azureml_compat = True
    assert env.definition_hash() != plain_hash
    again = Environment.from_dict(json.loads(json.dumps(env.to_dict())))
    assert again.azureml_compat is True and again == env
    assert env.register().version == "1"
    assert Environment.get("v1-env").azureml_compat is True
    off = Environment("v1-env")
    assert off.register().version == "2", "turning the flag off is a new definition"
    assert Environment.from_dict({"name": "old"}).azureml_compat is False  # registered before the flag


def test_the_flag_on_the_environment_turns_it_on_for_the_run(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("")
    env = Environment("v1-env")
    env.azureml_compat = True
    assert ScriptRunConfig(tmp_path, "train.py", environment=env).validate().azureml_compat is True
    assert ScriptRunConfig(tmp_path, "train.py").validate().azureml_compat is False
    assert ScriptRunConfig(tmp_path, "train.py", azureml_compat=True).validate().azureml_compat is True


def test_a_flag_that_is_not_a_bool_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("")
    with pytest.raises(ConfigurationError, match=r"ScriptRunConfig.azureml_compat: must be True or False"):
        ScriptRunConfig(tmp_path, "train.py", azureml_compat="yes").validate()  # type: ignore[arg-type]
    env = Environment("v1-env")
    env.azureml_compat = 1  # type: ignore[assignment]
    with pytest.raises(ConfigurationError, match=r"environment.azureml_compat: must be True or False"):
        ScriptRunConfig(tmp_path, "train.py", environment=env).validate()


# ---------------------------------------------------------------------- the script side, offline
def run_offline(folder: Path, body: str, extra_path: str = "") -> subprocess.CompletedProcess[str]:
    (folder / "train.py").write_text(textwrap.dedent(body))
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINING_RUN_", "MLFLOW_", "AZUREML_"))}
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, shim_path()) if p)
    return subprocess.run([sys.executable, "train.py"], cwd=folder, capture_output=True, text=True, timeout=120,
                          env=environment)


def test_offline_run_prints_what_it_logs(tmp_path: Path) -> None:
    result = run_offline(tmp_path, """
        from azureml.core import Run
        run = Run.get_context()
        print("id", run.id, "parent", run.parent, "experiment", run.experiment.name)
        run.log("alpha", 0.5)
        run.log("kernel", "linear")
        run.log_list("mse", [1, 2])
        run.log_row("folds", fold=1)
        child = run.child_run()
        child.log("loss", 1)
        child.complete()
        run.complete()
    """)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "id OfflineRun_" in out and "parent None" in out
    assert "Attempted to log scalar metric alpha:\n0.5" in out
    assert "Attempted to log string metric kernel: linear" in out
    assert "Attempted to log list metric mse:\n[1.0, 2.0]" in out
    assert "Attempted to create child run OfflineRun_" in out


def test_calls_outside_the_surface_say_what_to_use_instead(tmp_path: Path) -> None:
    result = run_offline(tmp_path, """
        import json
        from azureml.core import Run
        run = Run.get_context()
        errors = {}
        for name, call in [
            ("workspace", lambda: run.experiment.workspace),
            ("get_metrics", lambda: run.get_metrics()),
            ("log_confusion_matrix", lambda: run.log_confusion_matrix("cm", {})),
            ("Dataset", lambda: exec("from azureml.core import Dataset")),
            ("Workspace", lambda: exec("from azureml.core import Workspace")),
            ("upload_file", lambda: run.upload_file("a", "b", datastore_name="store")),
        ]:
            try:
                call()
                errors[name] = None
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
        errors["private"] = str(type(getattr(__import__("azureml.core").core, "_private", None)))
        errors["hasattr"] = [hasattr(run, "get_metrics"), hasattr(run, "log"), hasattr(run.experiment, "workspace")]
        print(json.dumps(errors))
    """)
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout.splitlines()[-1])
    assert errors["workspace"].startswith("UnsupportedV1API: azureml.core.Experiment.workspace (Azure ML v1)")
    assert "ScriptRun.get_metrics()" in errors["get_metrics"]
    assert "run.log_table" in errors["log_confusion_matrix"]
    assert errors["Dataset"].startswith("NotImplementedError: azureml.core.Dataset") and "argument" in errors["Dataset"]
    assert errors["Workspace"].startswith("NotImplementedError: azureml.core.Workspace")
    assert errors["upload_file"].startswith("NotImplementedError: Run.upload_file(datastore_name=...)")
    assert errors["private"] == "<class 'NoneType'>"  # private names are plain AttributeErrors
    assert errors["hasattr"] == [False, True, False]  # code that probes for v1 features sees them missing


def test_bad_inputs_to_the_v1_run_raise_clear_errors(tmp_path: Path) -> None:
    result = run_offline(tmp_path, """
        import json
        from azureml.core import Run
        run = Run.get_context()
        errors = {}
        for name, call in [
            ("register_missing", lambda: run.register_model("m", "outputs/none.pkl")),
            ("register_bad_name", lambda: run.register_model("bad name!", "x")),
            ("register_outside", lambda: run.register_model("m", "../x")),
            ("children", lambda: run.create_children(tag_values=["a"])),
            ("children_count", lambda: run.create_children("3")),
            ("child_id", lambda: run.child_run(run_id="a b")),
            ("secret", lambda: run.get_secret("db-password")),
            ("log", lambda: run.log("x", [1, 2])),
        ]:
            try:
                call()
                errors[name] = None
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(errors))
    """)
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout.splitlines()[-1])
    assert errors["register_missing"].startswith("ValueError") and "run.upload_file" in errors["register_missing"]
    assert errors["register_bad_name"].startswith("ValueError: run.register_model('bad name!')")
    assert errors["register_outside"].startswith("ValueError")
    assert "tag_key" in errors["children"]
    assert "count=" in errors["children_count"]
    assert errors["child_id"].startswith("ValueError")
    assert errors["secret"].startswith("LookupError") and "DB_PASSWORD" in errors["secret"]
    assert "secret_environment_variables" in errors["secret"]
    assert errors["log"].startswith("TypeError")


def test_a_real_azureml_later_on_the_path_wins(tmp_path: Path) -> None:
    real = tmp_path / "site" / "azureml" / "core"
    real.mkdir(parents=True)
    (real.parent / "__init__.py").write_text("")
    (real / "__init__.py").write_text("class Run:\n    REAL = True\n")
    result = run_offline(tmp_path, """
        import azureml
        from azureml.core import Run
        print(getattr(Run, "REAL", False), azureml.COMPATIBILITY_LAYER)
    """, extra_path="")
    assert result.stdout.split() == ["False", "True"], result.stderr
    # the real package after ours on sys.path, as site-packages is after PYTHONPATH
    (tmp_path / "sitecustomize.py").write_text(f"import sys; sys.path.append({str(tmp_path / 'site')!r})\n")
    result = run_offline(tmp_path, """
        from azureml.core import Run
        print(getattr(Run, "REAL", False))
    """, extra_path=str(tmp_path))
    assert result.stdout.split() == ["True"], result.stderr


def test_unsupported_v1_api_is_a_not_implemented_error_and_an_attribute_error() -> None:
    from airflow_provider.compat.azureml.run import UnsupportedV1API, unsupported_name

    assert issubclass(UnsupportedV1API, NotImplementedError) and issubclass(UnsupportedV1API, AttributeError)
    assert type(unsupported_name("azureml.core", "Workspace")) is NotImplementedError  # module names: plain
    assert type(unsupported_name("azureml.core.Run", "cancel", attribute=True)) is UnsupportedV1API
