""":func:`load_job`: read a job file (Azure ML v2 command or sweep job YAML, or an MLflow MLproject),
check all of it, and return a :class:`~airflow_provider.core.job_spec.spec.JobSpec`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.job_spec.command_job import (
    COMMAND_KEYS,
    NO_EQUIVALENT,
    RUN_KEYS,
    Anchors,
    read_header,
    read_run,
)
from airflow_provider.core.job_spec.data import Bindings, read_inputs, read_outputs
from airflow_provider.core.job_spec.mlproject import is_mlproject, read_mlproject
from airflow_provider.core.job_spec.nodes import Node, apply_overrides, read_yaml_file
from airflow_provider.core.job_spec.problems import Checker, JobFileError
from airflow_provider.core.job_spec.spec import JobSpec
from airflow_provider.core.job_spec.sweep_job import SWEEP_KEYS, read_sweep

__all__ = ["load_job"]

ENTRY_POINT_TAG = "mlflow.project.entryPoint"
"""The tag ``mlflow run`` gives a project's run: the entry point's name."""
_SWEEP_ONLY = {key: "belongs to a sweep (write type: sweep)"
               for key in ("trial", "search_space", "sampling_algorithm", "objective", "early_termination")}
_TRIAL_ONLY = {key: "belongs under trial: in a sweep" for key in RUN_KEYS}


def load_job(path: str | os.PathLike[str], *, overrides: Mapping[str, object] | None = None,
             entry_point: str | None = None) -> JobSpec:
    """Read and check a job file; every problem of the file is reported at once.

    A file named ``MLproject`` (or a folder holding one, or a YAML file with ``entry_points`` and no
    ``command``) is an MLflow project; any other file is an Azure ML v2 job YAML (``type: command``,
    the default, or ``type: sweep``). See ``docs/job-yaml.md`` for every field.

    :param path: the job file, or a folder holding an ``MLproject`` file.
    :param overrides: for a job YAML: fields to set, by dotted path, as ``az ml job create --set``
        does (``{"inputs.learning_rate": 0.1, "compute": "local"}``; None removes a field). For an
        MLproject: parameter values by name, which override the defaults.
    :param entry_point: the MLproject entry point to run (default ``main``).
    :raises JobFileError: (a :class:`ConfigurationError`) listing every problem with its file, line,
        column, field and fix.
    :raises ConfigurationError: ``path`` does not exist, or ``entry_point`` was given for a job YAML.
    """
    given = os.fspath(path)
    file = Path(given)
    if file.is_dir():
        found = sorted(child for child in file.iterdir() if child.name.lower() == "mlproject" and child.is_file())
        if not found:
            raise ConfigurationError("job.path", f"{given!r} is a folder without an MLproject file.",
                                     "pass a job YAML file, or a folder holding an MLproject file.")
        file, given = found[0], os.path.join(given, found[0].name)
    if not file.is_file():
        raise ConfigurationError("job.path", f"{given!r} does not exist." if not file.exists()
                                 else f"{given!r} is not a file.", "pass the path of a job YAML file or an MLproject.")
    file = file.resolve()
    check = Checker()
    root, problems = read_yaml_file(file, given)
    check.add_parsed(problems)
    if root is None:
        raise JobFileError(given, check.problems)
    anchors: Anchors = {}
    if is_mlproject(file, root):
        spec = _mlproject(check, root, file, entry_point, overrides or {})
    else:
        if entry_point is not None:
            raise ConfigurationError("load_job.entry_point", f"{given!r} is a job YAML, which has no entry points.",
                                     "leave entry_point out (it selects an MLproject's entry point).")
        spec = _job(check, root, file, given, overrides or {}, anchors)
    if not check.problems and spec is not None:
        check.call(root, "", lambda: spec.script_run_config().validate(), anchors)
    if check.problems or spec is None:
        raise JobFileError(given, check.problems or [])
    return spec


def _mlproject(check: Checker, root: Node, file: Path, entry_point: str | None,
               values: Mapping[str, object]) -> JobSpec | None:
    project = read_mlproject(check, root, file, entry_point, values)
    if project is None:
        return None
    return JobSpec(kind="command", source_path=file, experiment_name=project.name or file.parent.name,
                   run=project.run, tags={ENTRY_POINT_TAG: project.entry_point}, entry_point=project.entry_point,
                   parameters=project.parameters)


def _job(check: Checker, root: Node, file: Path, given: str, overrides: Mapping[str, object],
         anchors: Anchors) -> JobSpec | None:
    if not root.is_mapping:
        check.add(root, "", f"the file must be a mapping of fields, got {root.type_name()}",
                  "write command:, code:, environment: ... at the top level")
        return None
    check.add_parsed(apply_overrides(root, overrides, given))
    keys: dict[str, Node] = root.value
    header = read_header(check, keys)
    sweep = header.kind == "sweep"
    check.mapping(root, "", SWEEP_KEYS if sweep else COMMAND_KEYS,
                  elsewhere={**NO_EQUIVALENT, **(_TRIAL_ONLY if sweep else _SWEEP_ONLY)})
    bindings = Bindings()
    if "inputs" in keys:
        read_inputs(check, keys["inputs"], "inputs", file.parent, bindings)
    if "outputs" in keys:
        read_outputs(check, keys["outputs"], "outputs", file.parent, bindings, per_trial=sweep)

    def load_trial(node: Node, field: str) -> tuple[Node, Path] | None:
        trial = (file.parent / str(node.value)).resolve()
        if not trial.is_file():
            check.add(node, field, f"{str(trial)!r} does not exist",
                      "write the command job file's path, relative to this file, or the trial's fields")
            return None
        if trial == file:
            check.add(node, field, "names this file itself", "name a command job file")
            return None
        trial_root, problems = read_yaml_file(trial, os.path.normpath(os.path.join(os.path.dirname(given),
                                                                                   str(node.value))))
        check.add_parsed(problems)
        return None if trial_root is None else (trial_root, trial)

    if sweep:
        result = read_sweep(check, keys, root, file, bindings, anchors, load_trial)
        for name, binding in bindings.nodes.items():
            kind, _, binding_name = name.partition(".")
            anchors[f"{kind}[{binding_name!r}]"] = (binding, name)
        if result is None:
            return None
        trial = result.trial_header
        return JobSpec(kind="sweep", source_path=file,
                       experiment_name=header.experiment_name or (trial and trial.experiment_name)
                       or file.parent.name,
                       run=result.run, run_name=header.run_name,
                       description=header.description or (trial.description if trial else None),
                       tags={**(trial.tags if trial else {}), **header.tags},
                       compute=header.compute or (trial.compute if trial else None), sweep=result.sweep)
    run, _ = read_run(check, keys, root, "", file, bindings, anchors)
    for name, binding in bindings.nodes.items():
        kind, _, binding_name = name.partition(".")
        anchors[f"{kind}[{binding_name!r}]"] = (binding, name)
    if run is None:
        return None
    return JobSpec(kind="command", source_path=file, experiment_name=header.experiment_name or file.parent.name,
                   run=run, run_name=header.run_name, description=header.description, tags=header.tags,
                   compute=header.compute)
