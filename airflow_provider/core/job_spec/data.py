"""A job's ``inputs`` and ``outputs``: literal values, data inputs and outputs with the core's modes.

Azure ML's modes and ours:

===============================  ==============================================================
Azure ML mode                    here
===============================  ==============================================================
input ``download``               ``download`` (also the default: copied to the target, cached)
input ``ro_mount``               ``mount`` for a local path the target already sees; a remote URI
                                 cannot be mounted here (use ``download`` or ``direct``)
input ``direct``                 ``direct`` (the script gets the URI)
input ``eval_mount`` /           no equivalent (they evaluate an MLTable); use ``download``
``eval_download``
output ``upload`` / ``rw_mount``  ``upload`` (also the default): the script writes a local folder,
                                 copied to ``path`` when the run ends, on failure and cancel too
output ``direct``                ``direct`` (the URI is passed through)
===============================  ==============================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from airflow_provider.core.data.bindings import is_binding_name
from airflow_provider.core.job_spec.nodes import Node
from airflow_provider.core.job_spec.problems import Checker, join
from airflow_provider.core.job_spec.spec import DataInput, DataOutput

__all__ = ["DATA_TYPES", "Bindings", "read_inputs", "read_outputs", "resolve_location"]

DATA_TYPES = ("uri_folder", "uri_file", "mlflow_model", "custom_model", "mltable", "triton_model")
_LITERAL_TYPES = ("string", "integer", "number", "boolean")
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/")
_INPUT_KEYS = ("type", "path", "mode", "description", "optional", "connection", "max_size_mb")
_OUTPUT_KEYS = ("type", "path", "mode", "description", "connection", "overwrite")
_NO_EQUIVALENT_KEYS = {
    "path_on_compute": "has no equivalent here: the core chooses where the data is on the target",
    "datastore": "has no equivalent here: there are no Azure ML datastores",
    "name": "has no equivalent here: outputs are not registered as Azure ML data assets",
    "version": "has no equivalent here: outputs are not registered as Azure ML data assets",
}
_INPUT_MODES = ("download", "ro_mount", "direct", "mount")
_OUTPUT_MODES = ("upload", "rw_mount", "direct")


@dataclass
class Bindings:
    """A job's inputs and outputs, as read.

    :param literals: literal inputs -> value as text (filled into the command).
    :param inputs: data inputs.
    :param absent: optional inputs given no path.
    :param outputs: outputs.
    :param nodes: ``inputs.<name>`` / ``outputs.<name>`` -> the node (for the core's messages).
    """

    literals: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, DataInput] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)
    outputs: dict[str, DataOutput] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)

    def names(self) -> set[str]:
        """Every input and output name."""
        return {*self.literals, *self.inputs, *self.absent, *self.outputs}


def resolve_location(check: Checker, node: Node, field_path: str, base_dir: Path, must_exist: bool) -> str | None:
    """A data location: a URI as written, or a local path made absolute (relative to ``base_dir``).

    :param check: collects problems.
    :param node: the ``path`` value.
    :param field_path: its dotted path.
    :param base_dir: the job file's folder.
    :param must_exist: a local path must exist (inputs).
    """
    text = check.string(node, field_path, 'write a local path or a URI such as "s3://bucket/data/"')
    if text is None:
        return None
    text = text.strip()
    if text.startswith("azureml:"):
        check.add(node, field_path, f"{text!r} is an Azure ML data asset or datastore, which has no equivalent here",
                  "give the data's storage URI (s3://, abfs://, gs://, https://, sftp://) or a local path")
        return None
    if _URI.match(text):
        return text
    path = Path(text).expanduser()
    path = (path if path.is_absolute() else base_dir / path).resolve()
    if must_exist and not path.exists():
        check.add(node, field_path, f"{str(path)!r} does not exist",
                  "correct the path (relative paths start at the job file's folder)")
        return None
    return str(path)


def read_inputs(check: Checker, node: Node, field_path: str, base_dir: Path, bindings: Bindings) -> None:
    """Read ``inputs`` into ``bindings``.

    :param check: collects problems.
    :param node: the ``inputs`` mapping.
    :param field_path: its dotted path.
    :param base_dir: the job file's folder.
    :param bindings: where the inputs go.
    """
    children = check.mapping(node, field_path, known=node.value if node.is_mapping else (),
                             what="a mapping of input names")
    for name, child in (children or {}).items():
        where = join(field_path, name)
        if not _check_name(check, node, name, where, bindings):
            continue
        bindings.nodes[f"inputs.{name}"] = child
        if not child.is_mapping:
            if isinstance(child.value, (str, int, float, bool)):
                value = check.text(child, where)
                if value is not None:
                    bindings.literals[name] = value
            else:
                check.add(child, where, "must be a value or a data mapping (type, path, mode), got "
                          f"{child.type_name()}", "write a value (epochs: 10) or path: under it")
            continue
        keys = check.mapping(child, where, _INPUT_KEYS, elsewhere=_NO_EQUIVALENT_KEYS)
        if keys is None:
            continue
        if not _check_type(check, keys, where):
            continue
        optional = keys.get("optional")
        if optional is not None and check.boolean(optional, join(where, "optional")) is None:
            continue
        if "path" not in keys:
            if optional is not None and optional.value is True:
                bindings.absent.add(name)
            else:
                check.add(child, join(where, "path"), "is required but missing",
                          "add path: (a local path or a URI), or optional: true")
            continue
        mode = _input_mode(check, keys, where)
        uri = resolve_location(check, keys["path"], join(where, "path"), base_dir, must_exist=True)
        if uri is None or mode is None:
            continue
        if mode == "mount" and _URI.match(uri) and not uri.startswith("file:"):
            check.add(keys["mode"], join(where, "mode"),
                      f"{keys['mode'].value!r} of a remote URI has no equivalent here (only a path the target "
                      "already sees can be mounted)",
                      "use mode: download (copied to the target) or mode: direct (the script reads the URI)")
            continue
        connection = _optional_string(check, keys, "connection", where)
        limit = None
        if "max_size_mb" in keys:
            limit = check.number(keys["max_size_mb"], join(where, "max_size_mb"), positive=True)
        bindings.inputs[name] = DataInput(uri, mode, connection, None if limit is None else float(limit))


def read_outputs(check: Checker, node: Node, field_path: str, base_dir: Path, bindings: Bindings,
                 per_trial: bool = False) -> None:
    """Read ``outputs`` into ``bindings``.

    :param check: collects problems.
    :param node: the ``outputs`` mapping.
    :param field_path: its dotted path.
    :param base_dir: the job file's folder.
    :param bindings: where the outputs go.
    :param per_trial: a sweep's outputs: every trial writes them, so an uploaded path needs ``{run_id}``.
    """
    children = check.mapping(node, field_path, known=node.value if node.is_mapping else (),
                             what="a mapping of output names")
    for name, child in (children or {}).items():
        where = join(field_path, name)
        if not _check_name(check, node, name, where, bindings):
            continue
        bindings.nodes[f"outputs.{name}"] = child
        keys = check.mapping(child, where, _OUTPUT_KEYS, elsewhere=_NO_EQUIVALENT_KEYS,
                             what="a mapping with type, path and mode")
        if keys is None or not _check_type(check, keys, where, literal_allowed=False):
            continue
        mode = "upload"
        if "mode" in keys:
            chosen = check.choice(keys["mode"], join(where, "mode"), _OUTPUT_MODES, {
                "ro_mount": "is an input mode", "download": "is an input mode", "mount": "is an input mode",
                "eval_mount": "is an input mode", "eval_download": "is an input mode"})
            if chosen is None:
                continue
            mode = "direct" if chosen == "direct" else "upload"
        uri = None
        if "path" in keys:
            path_node = keys["path"]
            if isinstance(path_node.value, str):
                path_node = Node(path_node.value.replace("${{name}}", "{run_id}").replace("{output_name}", "{name}"),
                                 path_node.position)
            uri = resolve_location(check, path_node, join(where, "path"), base_dir, must_exist=False)
            if uri is None:
                continue
            if "${{" in uri:
                check.add(keys["path"], join(where, "path"), "holds a placeholder other than ${{name}}",
                          "use {run_id} (the run's id) and {name} (the output's name)")
                continue
            if per_trial and mode == "upload" and "{run_id}" not in uri and "{run-id}" not in uri:
                check.add(keys["path"], join(where, "path"), "is written by every trial of the sweep, and a second "
                          "trial may not overwrite the first's output", "put {run_id} in the path, e.g. .../{run_id}/")
                continue
        elif mode == "direct":
            check.add(child, join(where, "path"), "is required for mode: direct", "add path: with the URI")
            continue
        overwrite = False
        if "overwrite" in keys:
            overwrite = bool(check.boolean(keys["overwrite"], join(where, "overwrite")))
        bindings.outputs[name] = DataOutput(uri, mode, _optional_string(check, keys, "connection", where), overwrite)


def _check_name(check: Checker, parent: Node, name: str, where: str, bindings: Bindings) -> bool:
    at = parent.key_positions.get(name, parent.position)
    if not is_binding_name(name):
        check.add(at, where, "is not a valid name (it is used as ${{inputs.<name>}})",
                  "use letters, digits and '_', starting with a letter or '_' (at most 64)")
        return False
    if name in bindings.names():
        check.add(at, where, "is declared twice (inputs and outputs share names)", "give each its own name")
        return False
    return True


def _check_type(check: Checker, keys: dict[str, Node], where: str, literal_allowed: bool = True) -> bool:
    if "type" not in keys:
        return True
    kind = keys["type"]
    if isinstance(kind.value, str) and kind.value in _LITERAL_TYPES:
        fix = "write the value itself, e.g. epochs: 10" if literal_allowed else "use a data type such as uri_folder"
        check.add(kind, join(where, "type"), f"{kind.value!r} declares a literal, which a job gives as its value", fix)
        return False
    return check.choice(kind, join(where, "type"), DATA_TYPES) is not None


def _input_mode(check: Checker, keys: dict[str, Node], where: str) -> str | None:
    if "mode" not in keys:
        return "download"
    chosen = check.choice(keys["mode"], join(where, "mode"), _INPUT_MODES, {
        "eval_mount": "has no equivalent here (it evaluates an MLTable)",
        "eval_download": "has no equivalent here (it evaluates an MLTable)",
        "rw_mount": "is an output mode (inputs are read-only)",
        "upload": "is an output mode (inputs are read-only)"})
    if chosen is None:
        return None
    return {"ro_mount": "mount"}.get(chosen, chosen)


def _optional_string(check: Checker, keys: dict[str, Node], key: str, where: str) -> str | None:
    if key not in keys:
        return None
    return check.string(keys[key], join(where, key), 'write the Airflow connection id, e.g. "my_s3"')
