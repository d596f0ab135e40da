"""``ScriptRunConfig``: one description of a training run, valid on every compute target.

Named as in Azure ML v1. :meth:`ScriptRunConfig.validate` checks every field before any compute
is used and raises :class:`ConfigurationError` naming the field and the fix; it returns the
resolved facts the lifecycle needs (absolute source folder, the script's relative path, the
command line, the resolved environment).
"""

from __future__ import annotations

import math
import numbers
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Union

from airflow_provider.core.data.bindings import Input, Output, validate_bindings
from airflow_provider.core.distributed import (
    DistributedConfig,
    MpiConfiguration,
    PyTorchConfiguration,
    TensorflowConfiguration,
    launch_command,
)
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.resources import Resources
from airflow_provider.core.variables import validate_variables

if TYPE_CHECKING:
    from airflow_provider.core.script_run import ScriptRun
    from airflow_provider.core.submit import Experiment
    from airflow_provider.core.targets.base import ComputeTarget

__all__ = ["Argument", "ResolvedRunConfig", "ScriptRunConfig"]

Argument = Union[str, int, float, bool, "os.PathLike[str]"]
DEFAULT_SNAPSHOT_SIZE_LIMIT_MB = 300.0
DEFAULT_SYSTEM_METRICS_INTERVAL_SECONDS = 10.0
"""MLflow's own default sampling interval for system metrics."""


@dataclass
class ScriptRunConfig:
    """What to run, where, and with what (Azure ML v1's ``ScriptRunConfig``).

    :param source_directory: folder snapshotted and used as the script's working folder.
    :param script: Python file to run, relative to ``source_directory``. Excludes ``command``.
    :param command: a command line instead of a script: a list (run as is) or a string (run by
        ``/bin/sh -c``). Excludes ``script``.
    :param arguments: arguments after the script or list command; numbers are rendered as strings.
    :param compute_target: ``"local"``, the name of a registered target, or a ComputeTarget.
    :param environment: an :class:`Environment`, a registered ``"name"`` / ``"name:version"``,
        or None for the current interpreter.
    :param distributed_job_config: an MPI, PyTorch or TensorFlow configuration.
    :param max_run_duration_seconds: stop the run (Failed) after this many seconds.
    :param environment_variables: extra variables for the run's process.
    :param snapshot_size_limit_mb: refuse source folders whose snapshot is larger than this.
    :param azureml_compat: run an unchanged Azure ML v1 script: ``from azureml.core import Run``
        resolves to the provider's compatibility layer (unless the environment has the real
        ``azureml-core``), the ``AZUREML_*`` variables are set, and ``$VAR`` / ``${VAR}`` in
        ``arguments`` expand from the run's variables. Also on when the environment sets it.
    :param resources: what the run asks the target for (GPUs, CPUs, memory, nodes, a partition): a
        :class:`~airflow_provider.core.resources.Resources` or a dict of its fields. A target that
        cannot honour a field refuses the run before any compute is used.
    :param inputs: data the run reads, ``{name: Input(...)}`` (a plain URI is a ``download``
        input); ``${{inputs.<name>}}`` in ``arguments`` or ``command`` becomes its path on the target.
    :param outputs: folders the run writes, ``{name: Output(...)}``; ``${{outputs.<name>}}``
        becomes the folder to write to, copied to the output's URI when the run ends.
    :param system_metrics_interval_seconds: how often CPU, memory, disk, network and GPU use are
        sampled on every node of the run, as MLflow's ``system/...`` metrics; None takes
        ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` when set, else 10 s; 0 records none.
    """

    source_directory: str | os.PathLike[str]
    script: str | os.PathLike[str] | None = None
    command: str | list[Any] | None = None
    arguments: list[Any] | None = None
    compute_target: str | ComputeTarget = "local"
    environment: Environment | str | None = None
    distributed_job_config: DistributedConfig | None = None
    max_run_duration_seconds: float | None = None
    environment_variables: dict[str, str] | None = None
    snapshot_size_limit_mb: float = DEFAULT_SNAPSHOT_SIZE_LIMIT_MB
    azureml_compat: bool = False
    resources: Resources | dict[str, Any] | None = None
    inputs: dict[str, Input | str] | None = None
    outputs: dict[str, Output | str] | None = None
    system_metrics_interval_seconds: float | None = None

    def submit_to(self, experiment: Experiment, tags: dict[str, str] | None = None, *, run_key: str | None = None,
                  reattach: bool = True, run_name: str | None = None,
                  secret_variables: dict[str, str] | None = None,
                  params: dict[str, str] | None = None) -> ScriptRun:
        """Start this run in ``experiment`` (what ``experiment.submit(config)`` calls): see
        :meth:`~airflow_provider.core.submit.Experiment.submit` for the parameters."""
        return experiment.start(self, tags, run_key=run_key, reattach=reattach, run_name=run_name,
                                secret_variables=secret_variables, params=params)

    def validate(self) -> ResolvedRunConfig:
        """Check every field; return the resolved run description.

        :raises ConfigurationError: naming the first bad field and how to fix it.
        """
        source = _validate_source_directory(self.source_directory)
        script = _validate_script(source, self.script, self.command)
        given_arguments, v1_inputs, v1_outputs = _v1_data_arguments(self.arguments)
        arguments = _render_arguments(given_arguments)
        command = _validate_command(self.command, arguments)
        _validate_target(self.compute_target)
        environment = _resolve_environment(self.environment)
        _validate_distribution(self.distributed_job_config)
        limit = _validate_positive("max_run_duration_seconds", self.max_run_duration_seconds, "seconds",
                                   "or None for no limit")
        snapshot_limit = _validate_positive("snapshot_size_limit_mb", self.snapshot_size_limit_mb, "megabytes",
                                            f"(default {DEFAULT_SNAPSHOT_SIZE_LIMIT_MB:g})")
        variables = validate_variables(self.environment_variables, _field("environment_variables"))
        if not isinstance(self.azureml_compat, bool):
            raise ConfigurationError(_field("azureml_compat"), f"must be True or False, got {self.azureml_compat!r}.",
                                     "set azureml_compat=True to run Azure ML v1 scripts unchanged, else leave it "
                                     "False.")
        resources = _validate_resources(self.resources, self.distributed_job_config)
        metrics_interval = _validate_metrics_interval(self.system_metrics_interval_seconds)
        inputs, outputs = validate_bindings("ScriptRunConfig", _merged(self.inputs, v1_inputs, "inputs"),
                                            _merged(self.outputs, v1_outputs, "outputs"))
        _validate_placeholders([*arguments, *(command or [])], inputs, outputs)
        return ResolvedRunConfig(
            source_directory=source,
            script=script,
            command=command,
            arguments=arguments,
            environment=environment,
            distributed_job_config=self.distributed_job_config,
            max_run_duration_seconds=limit,
            environment_variables=variables,
            snapshot_size_limit_bytes=int((snapshot_limit or DEFAULT_SNAPSHOT_SIZE_LIMIT_MB) * 1024 * 1024),
            azureml_compat=self.azureml_compat or bool(environment is not None and environment.azureml_compat),
            resources=resources,
            inputs=inputs,
            outputs=outputs,
            system_metrics_interval_seconds=metrics_interval,
        )


@dataclass(frozen=True)
class ResolvedRunConfig:
    """A validated :class:`ScriptRunConfig`: every path absolute, every argument a string.

    :param script: the script's POSIX path relative to the source folder, or None.
    :param command: the command as an argv list (a string command is ``/bin/sh -c``), or None.
    :param azureml_compat: the Azure ML v1 compatibility layer is on (the config's or the
        environment's flag).
    """

    source_directory: Path
    script: str | None
    command: list[str] | None
    arguments: list[str]
    environment: Environment | None
    distributed_job_config: DistributedConfig | None
    max_run_duration_seconds: float | None
    environment_variables: dict[str, str]
    snapshot_size_limit_bytes: int
    azureml_compat: bool = False
    resources: Resources | None = None
    inputs: dict[str, Input] = field(default_factory=dict)
    outputs: dict[str, Output] = field(default_factory=dict)
    system_metrics_interval_seconds: float | None = DEFAULT_SYSTEM_METRICS_INTERVAL_SECONDS

    def argv(self, python: str) -> list[str]:
        """The command line of the run, for a given interpreter.

        :param python: the interpreter path on the target.
        """
        command = [python, self.script, *self.arguments] if self.script is not None else list(self.command or [])
        if self.distributed_job_config is not None:
            return launch_command(self.distributed_job_config, command, python, self.script is not None)[0]
        return command

    def distribution_variables(self) -> dict[str, str]:
        """Variables the distributed launcher needs (none for a single process)."""
        if self.distributed_job_config is None:
            return {}
        return launch_command(self.distributed_job_config, [], "python")[1]

    def describe_command(self) -> str:
        """The command line as one readable string (for tags and details)."""
        if self.script is not None:
            return shlex.join(["python", self.script, *self.arguments])
        assert self.command is not None
        return shlex.join(self.command)


def _field(name: str) -> str:
    return f"ScriptRunConfig.{name}"


def _validate_placeholders(values: list[str], inputs: dict[str, Input], outputs: dict[str, Output]) -> None:
    """Every ``${{inputs.<name>}}`` / ``${{outputs.<name>}}`` names a declared input or output."""
    from airflow_provider.core.data.run_data import placeholder_names

    for kind, name in placeholder_names(values):
        declared = inputs if kind == "inputs" else outputs
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigurationError(_field("arguments"), f"${{{{{kind}.{name}}}}} names no declared {kind[:-1]} "
                                     f"(declared: {known}).",
                                     f"add {name!r} to ScriptRunConfig.{kind}, or fix the name.")


def _validate_resources(value: object, distribution: DistributedConfig | None) -> Resources | None:
    """The run's resources, checked, and consistent with its distributed configuration."""
    if value is None:
        return None
    if isinstance(value, dict):
        resources = Resources.from_dict(value)
    elif isinstance(value, Resources):
        resources = value
    else:
        raise ConfigurationError(_field("resources"), f"must be a Resources or a dict, got {type(value).__name__}.",
                                 "pass Resources(gpus=1, cpus=4, memory_gb=16) or {\"gpus\": 1, ...}.")
    resources.validate(_field("resources"))
    node_count = getattr(distribution, "node_count", None)
    if resources.nodes is not None and node_count is not None and resources.nodes != node_count:
        raise ConfigurationError(_field("resources.nodes"),
                                 f"is {resources.nodes} but the distributed configuration asks for {node_count} nodes.",
                                 "set one of them, or the same number in both.")
    per_node = getattr(distribution, "process_count_per_node", None) or getattr(distribution, "processes_per_node",
                                                                                None)
    if resources.tasks_per_node is not None and per_node is not None and resources.tasks_per_node != per_node:
        raise ConfigurationError(_field("resources.tasks_per_node"),
                                 f"is {resources.tasks_per_node} but the distributed configuration starts {per_node} "
                                 "processes per node.", "set one of them, or the same number in both.")
    return resources


def _validate_source_directory(value: object) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigurationError(_field("source_directory"), f"must be a folder path, got {value!r}.",
                                 'pass the folder holding your training code, e.g. "./src".')
    path = Path(os.fspath(value)).expanduser().resolve()
    if not path.exists():
        raise ConfigurationError(_field("source_directory"), f"{str(path)!r} does not exist.",
                                 "pass an existing folder (relative paths start at the current folder).")
    if not path.is_dir():
        raise ConfigurationError(_field("source_directory"), f"{str(path)!r} is a file, not a folder.",
                                 "pass the folder that contains it, and the file name as script.")
    return path


def _validate_script(source: Path, script: object, command: object) -> str | None:
    if script is not None and command is not None:
        raise ConfigurationError(_field("script"), "script and command are both set.",
                                 "set script (a Python file) or command (a command line), not both.")
    if script is None:
        if command is None:
            raise ConfigurationError(_field("script"), "neither script nor command is set.",
                                     'set script="train.py" or command=["python", "train.py"].')
        return None
    if not isinstance(script, (str, os.PathLike)) or not os.fspath(script):
        raise ConfigurationError(_field("script"), f"must be a file path, got {script!r}.",
                                 'pass the script relative to source_directory, e.g. "train.py".')
    candidate = Path(os.fspath(script))
    full = (candidate if candidate.is_absolute() else source / candidate).resolve()
    try:
        relative = full.relative_to(source)
    except ValueError:
        raise ConfigurationError(
            _field("script"), f"{os.fspath(script)!r} is outside source_directory {str(source)!r}.",
            "move the script into source_directory (only that folder is sent to the target).",
        ) from None
    _check_script_is_a_file(os.fspath(script), full, source)
    return PurePosixPath(*relative.parts).as_posix()


def _check_script_is_a_file(script: str, full: Path, source: Path) -> None:
    if full.is_dir():
        raise ConfigurationError(
            _field("script"), f"{script!r} is a folder ({str(full)!r}), not a Python file.",
            f"the script must be a file inside source_directory {str(source)!r}, e.g. \"train.py\"; to run "
            "something else, use command instead.")
    if not full.is_file():
        raise ConfigurationError(_field("script"), f"{str(full)!r} does not exist.",
                                 f"pass a file relative to source_directory {str(source)!r}.")


def _v1_data_arguments(arguments: object) -> tuple[object, dict[str, Input], dict[str, Output]]:
    """Azure ML v1 dataset objects in ``arguments`` (``ds.as_named_input("x").as_download()``,
    ``OutputFileDatasetConfig(...)``) become inputs and outputs, and the argument their placeholder."""
    from airflow_provider.core.data.azureml_v1 import binding_of

    if not isinstance(arguments, (list, tuple)):
        return arguments, {}, {}
    rendered: list[object] = []
    found: dict[str, dict[str, Any]] = {"inputs": {}, "outputs": {}}
    for argument in arguments:
        binding = binding_of(argument)
        if binding is None:
            rendered.append(argument)
            continue
        kind, name, value = binding
        if name in found[kind] and str(found[kind][name].uri) != str(value.uri):
            raise ConfigurationError(_field(f"arguments[{kind}][{name!r}]"), "two different datasets in arguments "
                                     "have this name.", "give each as_named_input(...) its own name.")
        found[kind][name] = value
        rendered.append(f"${{{{{kind}.{name}}}}}")
    return rendered, found["inputs"], found["outputs"]


def _merged(given: dict[str, Any] | None, from_arguments: dict[str, Any], kind: str) -> dict[str, Any] | None:
    if not from_arguments:
        return given
    if given is not None and not isinstance(given, dict):
        return given  # validate_bindings names the problem
    clash = sorted(set(given or {}) & set(from_arguments))
    if clash:
        raise ConfigurationError(_field(f"{kind}[{clash[0]!r}]"), "is given both in arguments (an Azure ML v1 dataset) "
                                 f"and in {kind}.", "give it once.")
    return {**(given or {}), **from_arguments}


def _render_arguments(arguments: object) -> list[str]:
    if arguments is None:
        return []
    if not isinstance(arguments, (list, tuple)):
        raise ConfigurationError(_field("arguments"), f"must be a list, got {type(arguments).__name__}.",
                                 'pass a list such as ["--epochs", 10, "--lr", 0.01].')
    return [_render_argument(f"arguments[{i}]", a) for i, a in enumerate(arguments)]


def _render_argument(name: str, value: object) -> str:
    if isinstance(value, str):
        if "\0" in value:
            raise ConfigurationError(_field(name), "contains a NUL character, which no command line can hold.",
                                     "remove the NUL character.")
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    if isinstance(value, numbers.Number) and not isinstance(value, complex):
        return str(value.item() if hasattr(value, "item") else value)
    raise ConfigurationError(
        _field(name), f"{type(value).__name__} {value!r} cannot be a command-line argument.",
        "use strings or numbers; serialise structures yourself, e.g. json.dumps(value).",
    )


def _validate_command(command: object, arguments: list[str]) -> list[str] | None:
    if command is None:
        return None
    if isinstance(command, str):
        if not command.strip():
            raise ConfigurationError(_field("command"), "is an empty string.", "pass the command to run.")
        line = " ".join([command, *map(shlex.quote, arguments)])
        return ["/bin/sh", "-c", line]
    if isinstance(command, (list, tuple)):
        if not command:
            raise ConfigurationError(_field("command"), "is an empty list.",
                                     'pass the program and its arguments, e.g. ["python", "train.py"].')
        return [_render_argument(f"command[{i}]", c) for i, c in enumerate(command)] + arguments
    raise ConfigurationError(_field("command"), f"must be a list or a string, got {type(command).__name__}.",
                             'pass ["python", "train.py", "--epochs", "3"] or "python train.py --epochs 3".')


def _validate_target(target: object) -> None:
    from airflow_provider.core.targets.base import ComputeTarget

    if isinstance(target, ComputeTarget):
        return
    if not isinstance(target, str) or not target:
        raise ConfigurationError(_field("compute_target"), f"must be a target name, got {target!r}.",
                                 'pass "local" or a ComputeTarget object.')


def _resolve_environment(environment: object) -> Environment | None:
    if environment is None:
        return None
    if isinstance(environment, str):
        return Environment.resolve(environment)
    if isinstance(environment, dict):
        environment = Environment.from_dict(environment)
    if not isinstance(environment, Environment):
        raise ConfigurationError(_field("environment"), f"must be an Environment, got {type(environment).__name__}.",
                                 'pass Environment(...), a registered "name[:version]", or None.')
    environment.validate()
    return environment


def _validate_distribution(config: object) -> None:
    if config is None:
        return
    if not isinstance(config, (MpiConfiguration, PyTorchConfiguration, TensorflowConfiguration)):
        raise ConfigurationError(
            _field("distributed_job_config"), f"{type(config).__name__} is not a distributed configuration.",
            "pass MpiConfiguration, PyTorchConfiguration or TensorflowConfiguration.",
        )


def _validate_metrics_interval(value: object) -> float | None:
    """``system_metrics_interval_seconds``: None takes MLflow's ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``
    when set (else 10 s); 0 turns sampling off; at least 1 s otherwise."""
    fix = "pass a number of seconds of at least 1 (default 10), or 0 to record no system metrics."
    field = _field("system_metrics_interval_seconds")
    if value is None:
        configured = os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "").strip()
        if not configured:
            return DEFAULT_SYSTEM_METRICS_INTERVAL_SECONDS
        field = "the environment variable MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
        try:
            value = float(configured)
        except ValueError:
            raise ConfigurationError(field, f"must be a number of seconds, got {configured!r}.", fix) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(field, f"must be a number of seconds, got {value!r}.", fix)
    if value == 0:
        return None
    if value < 0:
        raise ConfigurationError(field, f"is {value:g}: an interval cannot be negative.", fix)
    if value < 1:
        raise ConfigurationError(field, f"is {value:g}: sampling more often than every second costs the run time.",
                                 fix)
    return float(value)


def _validate_positive(name: str, value: object, unit: str, alternative: str) -> float | None:
    if value is None:
        return None
    fix = f"pass a positive, finite number of {unit}, {alternative}."
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(_field(name), f"must be a number of {unit}, got {value!r}.", fix)
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(_field(name), f"must be positive and finite, got {value}.", fix)
    return float(value)
