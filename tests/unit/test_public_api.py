"""Guards the public API: exported names, Azure-compatible signatures, and what importing costs.

A change that renames, reorders or drops a public name breaks user code and DAGs; these tests make
such a change a deliberate one (update the expected sets here together with the README).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

import airflow_provider
import airflow_provider.core as core

CORE_API = {
    "ScriptRunConfig",
    "Environment",
    "CondaDependencies",
    "Experiment",
    "Run",
    "ScriptRun",
    "MpiConfiguration",
    "PyTorchConfiguration",
    "TensorflowConfiguration",
    "Resources",
    "Input",
    "Output",
    "RunState",
    "ConfigurationError",
    "EnvironmentBuildError",
    "RunCanceledError",
    "RunFailedError",
    "TargetError",
    "TrackingError",
    "TrainingRunError",
}
HOOKS_API = {
    "ComputeHook",
    "DockerComputeHook",
    "LocalComputeHook",
    "MLflowTrackingHook",
    "MPIComputeHook",
    "SSHComputeHook",
    "SlurmComputeHook",
    "compute_hook_for",
}
SCRIPT_RUN_CONFIG_ORDER = [
    "source_directory",
    "script",
    "command",
    "arguments",
    "compute_target",
    "environment",
    "distributed_job_config",
    "max_run_duration_seconds",
    "environment_variables",
]
OPERATOR_PARAMETERS = {
    # name: documented default (inspect.Parameter.empty: required)
    "source_directory": inspect.Parameter.empty,
    "script": None,
    "command": None,
    "arguments": None,
    "compute_target": "local",
    "environment": None,
    "distributed_job_config": None,
    "max_run_duration_seconds": None,
    "environment_variables": None,
    "secret_environment_variables": None,
    "experiment_name": None,
    "tracking_conn_id": None,
    "tags": None,
    "deferrable": False,
    "defer_after_seconds": 5.0,
    "poll_interval": 5.0,
    "reattach_on_retry": True,
    "sweep_trial": None,
    "azureml_compat": False,
    "compute_resources": None,
    "inputs": None,
    "outputs": None,
    "system_metrics_interval_seconds": None,
}
TEMPLATED = {"source_directory", "script", "command", "arguments", "environment_variables",
             "secret_environment_variables", "experiment_name", "tags", "compute_resources", "inputs", "outputs"}


# ---------------------------------------------------------------------- airflow_provider.core
def test_core_all_is_the_documented_set() -> None:
    assert len(core.__all__) == len(set(core.__all__)), "duplicate names in airflow_provider.core.__all__"
    assert set(core.__all__) == CORE_API


@pytest.mark.parametrize("name", sorted(CORE_API))
def test_core_name_resolves_to_its_object(name: str) -> None:
    value = getattr(core, name)
    assert value.__name__ == name
    assert value.__module__.startswith("airflow_provider.core."), value.__module__
    # the lazy import caches the value and "from ... import" sees the same object
    namespace: dict[str, object] = {}
    exec(f"from airflow_provider.core import {name}", namespace)
    assert namespace[name] is value is getattr(core, name)


def test_core_error_classes_share_one_base() -> None:
    for name in ("ConfigurationError", "EnvironmentBuildError", "RunFailedError", "TargetError", "TrackingError"):
        assert issubclass(getattr(core, name), core.TrainingRunError), name


def test_a_cancel_is_told_from_a_crash() -> None:
    assert issubclass(core.RunCanceledError, core.RunFailedError)


EXPERIMENT_METHODS = {
    # Azure ML v1's names and parameters, in order
    "list": ["experiment_name", "view_type", "tags"],
    "archive": [],
    "reactivate": ["new_name"],
    "get_runs": ["type", "tags", "properties", "include_children"],
}


@pytest.mark.parametrize("method", sorted(EXPERIMENT_METHODS))
def test_experiment_keeps_azure_ml_v1_run_history_methods(method: str) -> None:
    parameters = [name for name in inspect.signature(getattr(core.Experiment, method)).parameters
                  if name not in ("self", "cls")]
    assert parameters[:len(EXPERIMENT_METHODS[method])] == EXPERIMENT_METHODS[method]


def test_run_list_and_run_of_experiment_and_id_keep_azure_ml_v1_names() -> None:
    assert list(inspect.signature(core.Run.list).parameters)[:6] == [
        "experiment", "type", "tags", "properties", "status", "include_children"]
    assert callable(core.Experiment.get_run)


def test_core_dir_lists_the_public_names() -> None:
    assert dir(core) == sorted(CORE_API)


def test_core_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = core.NoSuchThing  # type: ignore[attr-defined]
    assert not hasattr(core, "Workspace")
    with pytest.raises(ImportError):
        exec("from airflow_provider.core import Workspace", {})


def test_script_run_config_keeps_azure_parameter_names_in_order() -> None:
    parameters = inspect.signature(core.ScriptRunConfig).parameters
    names = list(parameters)
    assert names[: len(SCRIPT_RUN_CONFIG_ORDER)] == SCRIPT_RUN_CONFIG_ORDER
    assert parameters["source_directory"].default is inspect.Parameter.empty
    for name in SCRIPT_RUN_CONFIG_ORDER:
        assert parameters[name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, name
    assert parameters["compute_target"].default == "local"
    for name in SCRIPT_RUN_CONFIG_ORDER[1:]:
        if name != "compute_target":
            assert parameters[name].default is None, name


def test_input_and_output_fields_and_modes() -> None:
    """The data API's names are fixed: Input(uri, mode, connection, ...), Output(uri, mode, connection, ...)."""
    from airflow_provider.core.data.bindings import INPUT_MODES, OUTPUT_MODES

    assert list(inspect.signature(core.Input).parameters)[:3] == ["uri", "mode", "connection"]
    assert list(inspect.signature(core.Output).parameters)[:3] == ["uri", "mode", "connection"]
    assert core.Input("x").mode == "download" and core.Output("x").mode == "upload"
    assert INPUT_MODES == ("download", "direct", "mount") and OUTPUT_MODES == ("upload", "direct")
    parameters = inspect.signature(core.ScriptRunConfig).parameters
    assert parameters["inputs"].default is None and parameters["outputs"].default is None


def test_resources_and_system_metrics_fields() -> None:
    """Resources(gpus, cpus, memory_gb, shm_size_gb, gpu_type) and the sampling interval keep their names."""
    assert {"gpus", "cpus", "memory_gb", "shm_size_gb", "gpu_type"} <= set(inspect.signature(core.Resources).parameters)
    parameters = inspect.signature(core.ScriptRunConfig).parameters
    assert parameters["system_metrics_interval_seconds"].default is None


# ---------------------------------------------------------------------- airflow_provider (package)
def test_package_exposes_provider_info_and_version() -> None:
    from importlib import metadata

    assert airflow_provider.__version__ == metadata.version("airflow-provider-training-runs")
    assert airflow_provider.get_provider_info()["package-name"] == "airflow-provider-training-runs"


def _imported_after(code: str) -> dict[str, list[str]]:
    """Top-level packages of interest present in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = (
        f"{code}\n"
        "import json, sys\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = ('airflow', 'mlflow', 'docker', 'paramiko', 'sqlalchemy')\n"
        "print(json.dumps(sorted(r for r in roots if r in heavy)))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_package_and_core_import_neither_airflow_nor_mlflow() -> None:
    code = (
        "import airflow_provider\n"
        "airflow_provider.get_provider_info()\n"
        "import airflow_provider.core\n"
        "from airflow_provider.core import Run\n"
        "Run.get_context\n"
    )
    assert _imported_after(code) == []


def test_every_core_name_imports_without_airflow() -> None:
    code = (
        "import airflow_provider.core as core\n"
        "for name in core.__all__:\n"
        "    getattr(core, name)\n"
    )
    assert "airflow" not in _imported_after(code)


# ---------------------------------------------------------------------- operators and hooks
def test_operators_all() -> None:
    import airflow_provider.operators as operators

    assert operators.__all__ == ["HyperparameterSweepOperator", "PlanHyperparameterSweepOperator",
                                 "SelectBestTrialOperator", "SubmitTrainingRunOperator"]
    from airflow_provider.operators.hyperparameter_sweep import HyperparameterSweepOperator
    from airflow_provider.operators.submit_training_run import SubmitTrainingRunOperator

    assert operators.SubmitTrainingRunOperator is SubmitTrainingRunOperator
    assert operators.HyperparameterSweepOperator is HyperparameterSweepOperator
    assert issubclass(HyperparameterSweepOperator, SubmitTrainingRunOperator)


def test_hooks_all() -> None:
    import airflow_provider.hooks as hooks

    assert set(hooks.__all__) == HOOKS_API
    for name in HOOKS_API:
        assert getattr(hooks, name).__module__.startswith("airflow_provider.hooks."), name


def test_operator_has_the_documented_keyword_parameters() -> None:
    from airflow_provider.operators import SubmitTrainingRunOperator

    parameters = inspect.signature(SubmitTrainingRunOperator.__init__).parameters
    own = {name: p for name, p in parameters.items() if name not in ("self", "kwargs")}
    assert set(own) == set(OPERATOR_PARAMETERS)
    for name, default in OPERATOR_PARAMETERS.items():
        assert own[name].kind is inspect.Parameter.KEYWORD_ONLY, f"{name} should be keyword-only"
        assert own[name].default == default or own[name].default is default, name
    assert parameters["kwargs"].kind is inspect.Parameter.VAR_KEYWORD, "BaseOperator arguments pass through"
    # the azure-compatible parameters come first, in the same order as ScriptRunConfig
    assert [n for n in own if n in SCRIPT_RUN_CONFIG_ORDER] == SCRIPT_RUN_CONFIG_ORDER
    docstring = inspect.getdoc(SubmitTrainingRunOperator) or ""
    undocumented = [name for name in OPERATOR_PARAMETERS if f":param {name}:" not in docstring]
    assert not undocumented, f"parameters missing from the docstring: {undocumented}"


def test_a_dag_with_every_operator_serializes_as_the_scheduler_needs() -> None:
    """The scheduler stores DAGs serialized: a template field BaseOperator owns (``resources``) fails it."""
    from datetime import datetime

    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from airflow_provider.operators import (
        HyperparameterSweepOperator,
        PlanHyperparameterSweepOperator,
        SubmitTrainingRunOperator,
    )

    with DAG("serialized", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        SubmitTrainingRunOperator(task_id="train", source_directory="/tmp", script="train.py",
                                  compute_resources={"gpus": "{{ params.gpus }}"})
    for operator in (HyperparameterSweepOperator, PlanHyperparameterSweepOperator):
        assert "resources" not in operator.template_fields
    DagSerialization.from_dict(DagSerialization.to_dict(dag))


def test_operator_templated_fields_are_the_documented_ones() -> None:
    from airflow_provider.operators import SubmitTrainingRunOperator

    assert set(SubmitTrainingRunOperator.template_fields) == TEMPLATED
    assert len(SubmitTrainingRunOperator.template_fields) == len(TEMPLATED)
    docstring = inspect.getdoc(SubmitTrainingRunOperator) or ""
    for name in TEMPLATED:
        line = next(line for line in docstring.splitlines() if line.startswith(f":param {name}:"))
        block = docstring[docstring.index(line):].split(":param ")[1]
        assert "(templated)" in block, f"{name} is templated but its docstring does not say so"


# ---------------------------------------------------------------------- airflow_provider.core.hyperdrive
HYPERDRIVE_API = {
    "BanditPolicy", "BayesianParameterSampling", "EarlyTerminationPolicy", "GridParameterSampling",
    "HyperDriveConfig", "HyperDriveRun", "MedianStoppingPolicy", "NoTerminationPolicy", "ParameterSampling",
    "PrimaryMetricGoal", "RandomParameterSampling", "Sweep", "SweepSettings", "TrialPlan", "TrialResult",
    "TruncationSelectionPolicy", "choice", "finish_sweep", "lognormal", "loguniform", "normal", "plan_sweep",
    "qlognormal", "qloguniform", "qnormal", "quniform", "randint", "trial_arguments", "uniform",
}


def test_hyperdrive_all_is_the_documented_set() -> None:
    import airflow_provider.core.hyperdrive as hyperdrive

    assert set(hyperdrive.__all__) == HYPERDRIVE_API and len(hyperdrive.__all__) == len(HYPERDRIVE_API)
    for name in HYPERDRIVE_API:
        assert getattr(hyperdrive, name).__module__.startswith("airflow_provider.core.hyperdrive."), name


def test_hyperdrive_keeps_azure_parameter_names_in_order() -> None:
    from airflow_provider.core.hyperdrive import (
        BanditPolicy,
        HyperDriveConfig,
        HyperDriveRun,
        MedianStoppingPolicy,
        TruncationSelectionPolicy,
    )

    def names(callable_: object) -> list[str]:
        return [n for n in inspect.signature(callable_).parameters if n != "self"]  # type: ignore[arg-type]

    assert names(HyperDriveConfig) == ["run_config", "hyperparameter_sampling", "primary_metric_name",
                                       "primary_metric_goal", "max_total_runs", "max_concurrent_runs",
                                       "max_duration_minutes", "policy"]
    assert names(BanditPolicy) == ["evaluation_interval", "slack_factor", "slack_amount", "delay_evaluation"]
    assert names(MedianStoppingPolicy) == ["evaluation_interval", "delay_evaluation"]
    assert names(TruncationSelectionPolicy) == ["truncation_percentage", "evaluation_interval", "delay_evaluation"]
    assert names(HyperDriveRun.get_children_sorted_by_primary_metric) == ["top", "reverse", "discard_no_metric"]
    assert names(HyperDriveRun.get_best_run_by_primary_metric) == ["include_failed", "include_canceled"]


def test_hyperdrive_imports_neither_airflow_nor_optuna_until_bayesian_sampling_runs() -> None:
    code = (
        "from airflow_provider.core.hyperdrive import HyperDriveConfig, RandomParameterSampling, uniform\n"
        "RandomParameterSampling({'lr': uniform(0, 1)}, seed=1)\n"
        "import sys\n"
        "assert 'optuna' not in sys.modules\n"
    )
    assert "airflow" not in _imported_after(code)


# ---------------------------------------------------------------------- Azure ML v1 compatibility
COMPAT_RUN_API = {"Experiment", "Model", "Run", "UnsupportedV1API", "unsupported_name"}
# Azure ML v1 ``Run`` methods as real training scripts call them: parameter names, in order.
V1_RUN_SIGNATURES = {
    "get_context": ["allow_offline", "used_for_context_manager", "kwargs"],
    "log": ["name", "value", "description", "step"],
    "log_list": ["name", "value", "description"],
    "log_row": ["name", "description", "kwargs"],
    "log_table": ["name", "value", "description"],
    "log_image": ["name", "path", "plot", "description"],
    "tag": ["key", "value"],
    "set_tags": ["tags"],
    "add_properties": ["properties"],
    "upload_file": ["name", "path_or_stream", "datastore_name"],
    "upload_folder": ["name", "path", "datastore_name"],
    "complete": ["_set_status"],
    "fail": ["error_details", "error_code", "_set_status"],
    "child_run": ["name", "run_id", "outputs"],
    "create_children": ["count", "tag_key", "tag_values"],
    "get_secret": ["name"],
    "get_secrets": ["secrets"],
    "register_model": ["model_name", "model_path", "tags", "properties", "model_framework",
                       "model_framework_version", "description", "datasets", "sample_input_dataset",
                       "sample_output_dataset", "resource_configuration", "kwargs"],
}


def test_compat_run_module_all() -> None:
    import airflow_provider.compat.azureml.run as compat_run

    assert set(compat_run.__all__) == COMPAT_RUN_API


@pytest.mark.parametrize("method", sorted(V1_RUN_SIGNATURES))
def test_compat_run_keeps_the_v1_signatures(method: str) -> None:
    from airflow_provider.compat.azureml.run import Run

    parameters = [p for p in inspect.signature(getattr(Run, method)).parameters if p not in ("self", "cls")]
    assert parameters == V1_RUN_SIGNATURES[method]


def test_resources_fields_and_the_targets_that_honour_them() -> None:
    from dataclasses import fields

    from airflow_provider.core.targets.base import ComputeTarget

    assert [f.name for f in fields(core.Resources)] == ["gpus", "gpu_type", "cpus", "memory_gb", "shm_size_gb",
                                                        "nodes", "tasks_per_node", "partition"]
    assert inspect.signature(core.ScriptRunConfig).parameters["resources"].default is None
    assert ComputeTarget.supported_resources == frozenset()


def test_azureml_compat_flags_default_off() -> None:
    parameters = inspect.signature(core.ScriptRunConfig).parameters
    assert parameters["azureml_compat"].default is False
    assert core.Environment("e").azureml_compat is False


def test_compat_layer_imports_only_the_standard_library() -> None:
    import os

    from airflow_provider.compat.azureml import shim_path

    probe = (
        "from azureml.core import Run\n"
        "run = Run.get_context()\n"
        "run.log('alpha', 0.5)\n"
        "import json, sys\n"
        "roots = {m.split('.')[0] for m in sys.modules}\n"
        "print(json.dumps(sorted(r for r in roots if r in ('airflow', 'mlflow', 'numpy', 'matplotlib'))))\n"
    )
    environment = {**os.environ, "PYTHONPATH": shim_path()}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_celery_config_is_airflows_default_plus_the_preloaded_modules() -> None:
    """``[celery] celery_config_options = airflow_provider.celery_config.CELERY_CONFIG`` (README,
    "Running at scale"): Airflow's own settings unchanged, and each module a worker preloads imports."""
    import importlib

    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    from airflow_provider.celery_config import CELERY_CONFIG, PRELOADED_MODULES

    assert {k: v for k, v in CELERY_CONFIG.items() if k != "imports"} == {
        k: v for k, v in DEFAULT_CELERY_CONFIG.items() if k != "imports"}
    assert set(PRELOADED_MODULES) <= set(CELERY_CONFIG["imports"])
    for name in PRELOADED_MODULES:
        importlib.import_module(name)


ENVIRONMENT_CONSTRUCTORS = {
    # Azure ML v1's Environment constructors, with its parameter names
    "from_pip_requirements": ["name", "file_path"],
    "from_conda_specification": ["name", "file_path"],
    "from_existing_conda_environment": ["name", "conda_environment_name"],
    "from_docker_image": ["name", "image", "conda_specification", "pip_requirements"],
    "from_dockerfile": ["name", "dockerfile", "conda_specification", "pip_requirements"],
    "load_from_directory": ["path"],
}


@pytest.mark.parametrize(("method", "parameters"), sorted(ENVIRONMENT_CONSTRUCTORS.items()))
def test_environment_constructors_keep_azure_ml_names(method: str, parameters: list[str]) -> None:
    assert list(inspect.signature(getattr(core.Environment, method)).parameters) == parameters


def test_environment_and_conda_dependencies_methods_exist() -> None:
    for name in ("save_to_directory", "register", "get", "list", "refresh_lock", "add_pip_package"):
        assert callable(getattr(core.Environment, name)), name
    for name in ("create", "add_conda_package", "add_pip_package", "add_channel", "serialize_to_string",
                 "save_to_file", "get_python_version", "set_python_version"):
        assert callable(getattr(core.CondaDependencies, name)), name
    assert list(inspect.signature(core.CondaDependencies.create).parameters) == [
        "pip_packages", "conda_packages", "python_version", "pin_sdk_version", "pip_indexurl", "channels"]


# ---------------------------------------------------------------------- job files and the command line
def test_job_files_load_with_the_documented_signature() -> None:
    from airflow_provider.core.job_spec import load_job

    parameters = inspect.signature(load_job).parameters
    assert list(parameters) == ["path", "overrides", "entry_point"]
    assert parameters["overrides"].kind is inspect.Parameter.KEYWORD_ONLY


def test_operator_from_yaml_keeps_its_signature() -> None:
    from airflow_provider.operators import SubmitTrainingRunOperator

    parameters = inspect.signature(SubmitTrainingRunOperator.from_yaml).parameters
    assert list(parameters)[:4] == ["task_id", "path", "overrides", "entry_point"]


def test_the_command_line_has_the_documented_commands() -> None:
    from airflow_provider.cli.main import parser

    commands = next(action for action in parser()._actions if action.dest == "command")
    assert set(commands.choices) == {"submit", "list", "show", "logs", "cancel", "download", "experiments",
                                     "archive", "environments", "tensorboard"}
    environments = commands.choices["environments"]
    actions = next(action for action in environments._actions if action.dest == "action")
    assert set(actions.choices) == {"list", "show", "build"}
