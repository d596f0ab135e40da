"""A run's data, from configuration to the job: plan, stage, bind into the command, record lineage.

The lifecycle (:mod:`airflow_provider.core.submit`) calls, in order:

1. :func:`plan_run_data` before the run exists: every input parsed, its credentials resolved,
   a ``download`` source listed and sized, a ``mount`` asked of the target; every output parsed.
2. :meth:`RunData.stage` once the run exists: ``download`` inputs copied into the snapshot store
   (manifest entries under ``work/.inputs/``), outputs checked against other runs' data.
3. :meth:`RunData.bind` once the job folder is known: each input's and output's path as the job
   sees it, for ``${{inputs.<name>}}`` / ``${{outputs.<name>}}`` in the command and for
   ``Run.get_context().input_datasets`` / ``output_datasets`` (:data:`DATA_VARIABLE`).
4. :meth:`RunData.record`: ``mlflow.log_inputs`` per input, the outputs declared as a run tag
   (read back by whoever finalizes the run, in any process).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider.core.data.bindings import Input, Output, recordable_uri
from airflow_provider.core.data.credentials import remember_inline, resolve_options
from airflow_provider.core.data.inputs import PlannedInput, StagedInput, plan_inputs, stage_input
from airflow_provider.core.data.job_credentials import DirectBinding, job_variables
from airflow_provider.core.data.locations import parse_location
from airflow_provider.core.data.outputs import OUTPUTS_DIR, OUTPUTS_TAG, DeclaredOutput, check_output
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.runtime.run_context import DATA_VARIABLE, OUTPUT_DIRS_VARIABLE

if TYPE_CHECKING:
    from airflow_provider.core.snapshot import ManifestEntry, SnapshotStore
    from airflow_provider.core.targets.base import ComputeTarget
    from airflow_provider.core.tracking import Tracker

__all__ = [
    "DATA_VARIABLE",
    "INPUTS_TAG",
    "OUTPUTS_TAG",
    "RunData",
    "claim_outputs",
    "declare_outputs",
    "expand_placeholders",
    "placeholder_names",
    "plan_run_data",
]

INPUTS_TAG = "training.data.inputs"
_PLACEHOLDER = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def placeholder_names(values: list[str]) -> list[tuple[str, str]]:
    """The ``(inputs|outputs, name)`` pairs ``${{...}}`` placeholders in ``values`` refer to."""
    return [(match.group(1), match.group(2)) for value in values for match in _PLACEHOLDER.finditer(value)]


def expand_placeholders(values: list[str], paths: dict[str, dict[str, str]]) -> list[str]:
    """``${{inputs.<name>}}`` and ``${{outputs.<name>}}`` replaced by their paths on the target.

    :param values: command-line arguments.
    :param paths: ``{"inputs": {name: path}, "outputs": {name: path}}``.
    """
    return [_PLACEHOLDER.sub(lambda match: paths[match.group(1)][match.group(2)], value) for value in values]


@dataclass
class RunData:
    """A run's inputs and outputs through the lifecycle (see the module docstring).

    :param inputs: the planned inputs.
    :param outputs: the outputs as configured.
    :param mounts: ``{input name: path in the job}`` of ``mount`` inputs.
    :param binds: ``{path on the target's host: path in the job}`` a container target binds read-only.
    """

    inputs: list[PlannedInput] = field(default_factory=list)
    outputs: dict[str, Output] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)
    binds: dict[str, str] = field(default_factory=dict)
    staged: dict[str, StagedInput] = field(default_factory=dict)
    declared: dict[str, DeclaredOutput] = field(default_factory=dict)
    paths: dict[str, dict[str, str]] = field(default_factory=lambda: {"inputs": {}, "outputs": {}})

    @property
    def empty(self) -> bool:
        """No input and no output."""
        return not self.inputs and not self.outputs

    def stage(self, run_id: str, store: SnapshotStore, tracking_uri: str,
              run_is_active: Callable[[str], bool] = lambda _: True) -> list[ManifestEntry]:
        """Copy the ``download`` inputs into ``store``; check and claim the outputs' URIs. Return the
        manifest entries that travel with the snapshot.

        :param run_id: the run (fills ``{run_id}`` in output URIs).
        :param store: the snapshot store.
        :param tracking_uri: MLflow, for ``runs:/`` and ``models:/`` inputs.
        :param run_is_active: whether another run (an output's claim) has not ended.
        """
        self.declared.update(claim_outputs(self.outputs, run_id, run_is_active))
        entries: list[ManifestEntry] = []
        for plan in self.inputs:
            if plan.binding.mode == "download":
                staged = stage_input(plan, store, tracking_uri)
                self.staged[plan.name] = staged
                entries.extend(staged.entries)
        return entries

    def direct_variables(self) -> dict[str, str]:
        """The environment variables that give the script the credentials of its ``direct`` inputs
        and outputs (see :mod:`~airflow_provider.core.data.job_credentials`): secret variables.

        :raises ConfigurationError: naming a binding whose credentials cannot reach the script.
        """
        bindings = [DirectBinding(f"ScriptRunConfig.inputs[{plan.name!r}]", plan.location.scheme, plan.options)
                    for plan in self.inputs if plan.binding.mode == "direct"]
        for name, output in self.outputs.items():
            if output.mode == "direct":
                where = f"ScriptRunConfig.outputs[{name!r}]"
                scheme = parse_location(output.resolved_uri("run", name), where).scheme
                bindings.append(DirectBinding(where, scheme, resolve_options(where, scheme, output.connection,
                                                                             output.storage_options)))
        return job_variables(bindings)

    def bind(self, job_dir: str) -> dict[str, str]:
        """Each input's and output's path as the job sees it; the variables the job needs.

        :param job_dir: the job folder as the job sees it.
        """
        work = f"{job_dir}/work"
        for plan in self.inputs:
            if plan.binding.mode == "download":
                self.paths["inputs"][plan.name] = f"{work}/{self.staged[plan.name].relative_path}"
            elif plan.binding.mode == "mount":
                self.paths["inputs"][plan.name] = self.mounts[plan.name]
            else:
                self.paths["inputs"][plan.name] = plan.location.uri
        output_dirs = []
        for name, declared in self.declared.items():
            if declared.mode == "upload":
                path = f"{work}/{OUTPUTS_DIR}/{name}"
                output_dirs.append(path)
                self.paths["outputs"][name] = path
            else:
                self.paths["outputs"][name] = declared.uri
        if self.empty:
            return {}
        variables = {DATA_VARIABLE: json.dumps(self.paths, sort_keys=True)}
        if output_dirs:
            variables[OUTPUT_DIRS_VARIABLE] = json.dumps(output_dirs)
        return variables

    def tags(self) -> dict[str, str]:
        """The run's tags: the inputs as configured and the outputs as they will be written."""
        tags = {}
        if self.inputs:
            tags[INPUTS_TAG] = json.dumps({plan.name: plan.binding.to_record() for plan in self.inputs}, sort_keys=True)
        for name, staged in self.staged.items():
            tags[f"training.data.input.{name}.digest"] = staged.digest
            tags[f"training.data.input.{name}.bytes_read"] = str(staged.bytes_read)
        if self.declared:
            tags[OUTPUTS_TAG] = json.dumps({name: item.to_dict() for name, item in self.declared.items()},
                                           sort_keys=True)
        return tags

    def record(self, tracker: Tracker, run_id: str) -> None:
        """Record each input as an MLflow dataset input of the run (name, source, digest, size, files).

        :param tracker: the run's tracker.
        :param run_id: the run.
        """
        if not self.inputs:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag

        datasets = []
        for plan in self.inputs:
            staged = self.staged.get(plan.name)
            profile: dict[str, Any] = {"mode": plan.binding.mode}
            # direct and mount inputs are read by the script itself: named by their URI, not their content
            digest = "uri-" + hashlib.sha256(plan.location.uri.encode()).hexdigest()[:32]
            source = recordable_uri(plan.location.uri)
            # per run (MLflow shares one dataset entity per name and digest in an experiment)
            tags = [InputTag("mlflow.data.context", "training"), InputTag("mode", plan.binding.mode),
                    InputTag("source", source[:500])]
            if staged is not None:
                profile.update(num_files=staged.file_count, total_bytes=staged.size)
                digest = staged.digest
                if staged.source != plan.location.uri:
                    tags.append(InputTag("resolved_source", recordable_uri(staged.source)[:500]))
            dataset = Dataset(name=plan.name, digest=digest, source_type=plan.location.scheme[:36],
                              source=json.dumps({"uri": source}), profile=json.dumps(profile, sort_keys=True))
            datasets.append(DatasetInput(dataset, tags=tags))
        tracker.log_inputs(run_id, datasets)


def declare_outputs(outputs: dict[str, Output], run_id: str) -> dict[str, DeclaredOutput]:
    """Each output of ``run_id`` as it is written: placeholders filled in, a local path absolute
    (whoever copies it, wherever). Checks nothing beyond the URI's form: :meth:`RunData.stage` does.

    :param outputs: validated outputs by name.
    :param run_id: the run.
    """
    declared = {}
    for name, output in outputs.items():
        location = parse_location(output.resolved_uri(run_id, name), f"ScriptRunConfig.outputs[{name!r}]")
        uri = location.path if location.is_local else location.uri
        declared[name] = DeclaredOutput(name, uri, output.mode, output.connection, output.overwrite)
    return declared


def claim_outputs(outputs: dict[str, Output], run_id: str,
                  run_is_active: Callable[[str], bool] = lambda _: True) -> dict[str, DeclaredOutput]:
    """Declare ``run_id``'s outputs (:func:`declare_outputs`), check that each URI holds no other
    run's data and claim it for this run (a claim it holds already is kept), and remember their
    inline storage options for whoever copies them in this process.

    :param outputs: validated outputs by name.
    :param run_id: the run.
    :param run_is_active: whether another run (an output's claim) has not ended.
    :raises ConfigurationError: naming the output whose URI holds another run's data.
    :raises DataTransferError: its storage could not be reached (a retry may help).
    """
    declared = declare_outputs(outputs, run_id)
    for name, output in declared.items():
        where = f"ScriptRunConfig.outputs[{name!r}]"
        given = outputs[name]
        options = resolve_options(where, parse_location(output.uri, where).scheme, given.connection,
                                  given.storage_options)
        check_output(output, run_id, options, where, run_is_active)
        remember_inline(run_id, name, given.storage_options)
    return declared


def plan_run_data(inputs: dict[str, Input], outputs: dict[str, Output], target: ComputeTarget) -> RunData:
    """Check a run's inputs and outputs before any compute is used (see the module docstring).

    :param inputs: validated inputs by name.
    :param outputs: validated outputs by name.
    :param target: where the run goes (asked for ``mount`` inputs).
    :raises ConfigurationError: naming the input or output at fault.
    """
    data = RunData(plan_inputs(inputs), dict(outputs))
    for plan in data.inputs:
        if plan.binding.mode == "mount":
            if not plan.location.is_local:
                raise ConfigurationError(f"ScriptRunConfig.inputs[{plan.name!r}].mode",
                                         f"mount needs a path the target already sees, not {plan.location.uri!r}.",
                                         "use mode='download' (copied to the target) or 'direct' (read by the script).")
            inside = target.mount_input(plan.name, plan.location.path, f"ScriptRunConfig.inputs[{plan.name!r}]")
            data.mounts[plan.name] = inside
            if target.binds_mounts:
                data.binds[plan.location.path] = inside
    for name, output in outputs.items():
        where = f"ScriptRunConfig.outputs[{name!r}]"
        parse_location(output.resolved_uri("run", name), where)
    return data
