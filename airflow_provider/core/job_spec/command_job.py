"""A command job (Azure ML v2's ``type: command``), and the fields every job shares.

:func:`read_header` reads what any job file has (type, names, tags, compute);
:func:`read_run` reads what one run needs (code, command, environment, variables, distribution,
resources, limits) into a :class:`~airflow_provider.core.job_spec.spec.CommandSpec`. A sweep's
trial is read by :func:`read_run` too.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from airflow_provider.core.distributed import (
    DistributedConfig,
    MpiConfiguration,
    PyTorchConfiguration,
    TensorflowConfiguration,
)
from airflow_provider.core.job_spec.commands import CommandNames, PreparedCommand, prepare_command
from airflow_provider.core.job_spec.data import Bindings
from airflow_provider.core.job_spec.environments import environment_name, read_environment
from airflow_provider.core.job_spec.nodes import Node
from airflow_provider.core.job_spec.problems import Checker, join
from airflow_provider.core.job_spec.spec import CommandSpec, JobKind
from airflow_provider.core.resources import Resources
from airflow_provider.core.variables import ENV_VAR_NAME

__all__ = ["COMMAND_KEYS", "HEADER_KEYS", "NO_EQUIVALENT", "RUN_KEYS", "Anchors", "Header", "read_header", "read_run"]

HEADER_KEYS = ("$schema", "type", "name", "display_name", "experiment_name", "description", "tags", "compute")
RUN_KEYS = ("code", "command", "environment", "environment_variables", "distribution", "resources")
COMMAND_KEYS = (*HEADER_KEYS, *RUN_KEYS, "inputs", "outputs", "limits")
NO_EQUIVALENT = {
    "services": "has no equivalent here: jobs expose no interactive services",
    "identity": "has no equivalent here: credentials come from Airflow connections (connection: on inputs/outputs)",
    "queue_settings": "has no equivalent here: Airflow pools and priorities queue the task",
    "properties": "has no equivalent here: use tags",
    "component": "has no equivalent here: write the command in the job",
    "parent_job_name": "has no equivalent here",
    "is_deterministic": "has no equivalent here",
    "jobs": "belongs to pipeline jobs, which have no equivalent here (an Airflow DAG is the pipeline)",
}
_KINDS = ("command", "sweep")
_KINDS_ELSEWHERE = {
    "pipeline": "has no equivalent here: an Airflow DAG is the pipeline",
    "spark": "has no equivalent here",
    "automl": "has no equivalent here",
    "parallel": "has no equivalent here: map an Airflow task over the items",
    "import": "has no equivalent here",
}
_SCHEMA = re.compile(r"/(\w+?)Job\.schema\.json\Z", re.IGNORECASE)
_RESOURCE_KEYS = ("instance_count", "shm_size", "gpus", "gpu_type", "cpus", "memory_gb", "shm_size_gb", "nodes",
                  "tasks_per_node", "partition")
_RESOURCES_ELSEWHERE = {
    "instance_type": "has no equivalent here: ask for what the run needs (gpus, cpus, memory_gb) instead",
    "properties": "has no equivalent here",
    "locations": "has no equivalent here",
    "docker_args": "has no equivalent here: the Docker target's connection sets the container's options",
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?", re.IGNORECASE)
_UNITS = {"": 1 / 1024**3, "b": 1 / 1024**3, "k": 1 / 1024**2, "m": 1 / 1024, "g": 1.0, "t": 1024.0}

Anchors = dict[str, tuple[Node, str]]
"""The core's field names (``resources``, ``inputs['data']``) -> the node and path they came from."""


@dataclass
class Header:
    """The fields every job file has.

    :param kind: ``command`` or ``sweep``.
    :param run_name: ``display_name`` or ``name``.
    :param experiment_name: ``experiment_name``.
    :param description: ``description``.
    :param tags: ``tags``.
    :param compute: ``compute`` without ``azureml:``.
    """

    kind: JobKind = "command"
    run_name: str | None = None
    experiment_name: str | None = None
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    compute: str | None = None


def read_header(check: Checker, keys: dict[str, Node], prefix: str = "") -> Header:
    """Read the fields every job file has.

    :param check: collects problems.
    :param keys: the file's top-level mapping.
    :param prefix: the dotted path of that mapping ("" for the file itself).
    """
    header = Header()
    schema_kind = None
    if "$schema" in keys:
        schema_kind = _schema_kind(check, keys["$schema"], join(prefix, "$schema"))
    if "type" in keys:
        kind = check.choice(keys["type"], join(prefix, "type"), _KINDS, _KINDS_ELSEWHERE)
        if kind == "sweep":
            header.kind = "sweep"
        if kind is not None and schema_kind is not None and kind != schema_kind:
            check.add(keys["type"], join(prefix, "type"), f"is {kind} but $schema is the {schema_kind} job schema",
                      "make them agree")
    elif schema_kind == "sweep":
        header.kind = "sweep"
    names = {}
    for key in ("name", "display_name", "experiment_name", "description"):
        if key in keys:
            names[key] = check.string(keys[key], join(prefix, key))
    header.run_name = names.get("display_name") or names.get("name")
    header.experiment_name = names.get("experiment_name")
    header.description = names.get("description")
    if "tags" in keys:
        header.tags = check.string_map(keys["tags"], join(prefix, "tags")) or {}
    if "compute" in keys:
        compute = check.string(keys["compute"], join(prefix, "compute"), "write a target name, e.g. local")
        if compute is not None:
            compute = compute.strip()
            if compute.startswith("azureml://"):
                check.add(keys["compute"], join(prefix, "compute"), "is an Azure ML resource id",
                          "write the target's name (a registered target or an Airflow connection id)")
            else:
                header.compute = compute.removeprefix("azureml:") or None
    return header


def _schema_kind(check: Checker, node: Node, path: str) -> str | None:
    text = check.string(node, path)
    if text is None:
        return None
    if "azureml" not in text.lower():
        check.add(node, path, f"{text!r} is not an Azure ML job schema", "remove $schema, or use Azure ML's URL")
        return None
    match = _SCHEMA.search(text)
    if match is None:
        return None
    kind = match.group(1).lower()
    if kind not in _KINDS:
        check.add(node, path, f"is the {match.group(1)} job schema, which has no equivalent here",
                  "write a command or sweep job")
        return None
    return kind


def read_run(check: Checker, keys: dict[str, Node], node: Node, prefix: str, job_file: Path, bindings: Bindings,
             anchors: Anchors, search_space: Collection[str] | None = None
             ) -> tuple[CommandSpec | None, PreparedCommand | None]:
    """Read one run (a command job, or a sweep's trial).

    :param check: collects problems.
    :param keys: the mapping that holds ``command``.
    :param node: that mapping.
    :param prefix: its dotted path ("" or ``trial``).
    :param job_file: the file it was read from (relative paths start at its folder).
    :param bindings: the job's inputs and outputs.
    :param anchors: filled with where the core's fields came from.
    :param search_space: a sweep's search-space names (None: not a sweep).
    :return: the run and its command, or (None, None) when it cannot be built.
    """
    base_dir = job_file.parent
    code = _code(check, keys.get("code"), join(prefix, "code"), base_dir)
    if "code" in keys:
        anchors["source_directory"] = (keys["code"], join(prefix, "code"))
    prepared = None
    if "command" not in keys:
        check.add(node, join(prefix, "command"), "is required but missing",
                  "add command: with the command line to run, e.g. python train.py")
    else:
        command_node, command_path = keys["command"], join(prefix, "command")
        for name in ("script", "arguments", "command"):
            anchors[name] = (command_node, command_path)
        text = check.string(command_node, command_path, "write the command line, e.g. python train.py --epochs 10")
        if text is not None and code is not None:
            names = CommandNames(bindings.literals, set(bindings.inputs), bindings.absent, set(bindings.outputs),
                                 search_space)
            prepared = prepare_command(text, names, code,
                                       lambda problem, fix: check.add(command_node, command_path, problem, fix))
    environment = None
    if "environment" in keys:
        anchors["environment"] = (keys["environment"], join(prefix, "environment"))
        environment = read_environment(check, keys["environment"], join(prefix, "environment"), base_dir,
                                       environment_name(job_file.stem))
    variables: dict[str, str] = {}
    if "environment_variables" in keys:
        anchors["environment_variables"] = (keys["environment_variables"], join(prefix, "environment_variables"))
        variables = check.string_map(
            keys["environment_variables"], join(prefix, "environment_variables"),
            lambda name: None if ENV_VAR_NAME.fullmatch(name) else "is not a valid variable name") or {}
    resources, nodes = None, 1
    if "resources" in keys:
        anchors["resources"] = (keys["resources"], join(prefix, "resources"))
        resources, nodes = _resources(check, keys["resources"], join(prefix, "resources"), "distribution" in keys)
    distribution = None
    if "distribution" in keys:
        anchors["distributed_job_config"] = (keys["distribution"], join(prefix, "distribution"))
        distribution = _distribution(check, keys["distribution"], join(prefix, "distribution"), nodes)
    timeout = None
    if "limits" in keys:
        timeout = read_timeout(check, keys["limits"], join(prefix, "limits"), anchors)
    if code is None or prepared is None:
        return None, None
    spec = CommandSpec(source_directory=code, script=prepared.script, command=prepared.command,
                       arguments=prepared.arguments, environment=environment, environment_variables=variables,
                       distribution=distribution, resources=resources, timeout_seconds=timeout,
                       inputs=dict(bindings.inputs), outputs=dict(bindings.outputs))
    return spec, prepared


def read_timeout(check: Checker, node: Node, path: str, anchors: Anchors) -> float | None:
    """A command job's ``limits`` (``timeout``, in seconds).

    :param check: collects problems.
    :param node: the ``limits`` mapping.
    :param path: its dotted path.
    :param anchors: filled with where ``max_run_duration_seconds`` came from.
    """
    keys = check.mapping(node, path, ("timeout",), elsewhere={
        "max_total_trials": "belongs to a sweep", "max_concurrent_trials": "belongs to a sweep",
        "trial_timeout": "belongs to a sweep"})
    if not keys or "timeout" not in keys:
        return None
    anchors["max_run_duration_seconds"] = (keys["timeout"], join(path, "timeout"))
    value = check.number(keys["timeout"], join(path, "timeout"), positive=True)
    return None if value is None else float(value)


def _code(check: Checker, node: Node | None, path: str, base_dir: Path) -> Path | None:
    if node is None:
        return base_dir.resolve()
    text = check.string(node, path, "write the folder with the code, relative to the job file")
    if text is None:
        return None
    if text.startswith("azureml:") or re.match(r"[a-z+]+://", text) or text.startswith("git+"):
        check.add(node, path, f"{text!r} is a registered or remote code asset, which has no equivalent here",
                  "give a local folder, relative to the job file's folder")
        return None
    folder = (base_dir / Path(text).expanduser()).resolve()
    if not folder.exists():
        check.add(node, path, f"{str(folder)!r} does not exist",
                  "write the folder with the code, relative to the job file's folder")
        return None
    if not folder.is_dir():
        check.add(node, path, f"{str(folder)!r} is a file, not a folder",
                  "write the folder that holds it (the command runs the file)")
        return None
    return folder


def _resources(check: Checker, node: Node, path: str, distributed: bool) -> tuple[Resources | None, int]:
    keys = check.mapping(node, path, _RESOURCE_KEYS, elsewhere=_RESOURCES_ELSEWHERE)
    if keys is None:
        return None, 1
    values: dict[str, object] = {}
    nodes = 1
    if "instance_count" in keys:
        nodes = check.integer(keys["instance_count"], join(path, "instance_count"), minimum=1) or 1
        if "nodes" in keys:
            check.add(keys["nodes"], join(path, "nodes"), "is given together with instance_count",
                      "give instance_count (Azure ML's name) or nodes, not both")
        elif nodes > 1 and not distributed:
            values["nodes"] = nodes  # a cluster allocation (Slurm); the distribution's node_count otherwise
    for key in ("gpus", "nodes", "tasks_per_node"):
        if key in keys:
            values[key] = check.integer(keys[key], join(path, key), minimum=0 if key == "gpus" else 1)
    for key in ("cpus", "memory_gb", "shm_size_gb"):
        if key in keys:
            values[key] = check.number(keys[key], join(path, key), positive=True)
    for key in ("gpu_type", "partition"):
        if key in keys:
            values[key] = check.string(keys[key], join(path, key))
    if "shm_size" in keys:
        if "shm_size_gb" in keys:
            check.add(keys["shm_size"], join(path, "shm_size"), "is given together with shm_size_gb", "give one")
        else:
            values["shm_size_gb"] = _size_gb(check, keys["shm_size"], join(path, "shm_size"))
    if any(value is None for value in values.values()):
        return None, nodes
    if not values:
        return None, nodes
    children = {key: (child, join(path, key)) for key, child in keys.items()}
    resources = check.call(node, path, lambda: Resources(**values).validate("resources"),  # type: ignore[arg-type]
                           children)
    return resources, nodes


def _size_gb(check: Checker, node: Node, path: str) -> float | None:
    match = _SIZE.fullmatch(str(node.value).strip()) if isinstance(node.value, (str, int)) else None
    if match is None or float(match.group(1)) <= 0:
        check.add(node, path, f"must be a size such as 8g or 512m, got {node.type_name()}", "write e.g. 8g")
        return None
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def _distribution(check: Checker, node: Node, path: str, nodes: int) -> DistributedConfig | None:
    if not node.is_mapping or "type" not in node.value:
        check.mapping(node, path, ("type",), required=("type",), what="a mapping with type: mpi, pytorch or tensorflow")
        return None
    kind = check.choice(node.value["type"], join(path, "type"), ("mpi", "pytorch", "tensorflow"),
                        {"ray": "has no equivalent here"})
    if kind is None:
        return None
    known = {"mpi": ("type", "process_count_per_instance"),
             "pytorch": ("type", "process_count_per_instance", "communication_backend"),
             "tensorflow": ("type", "worker_count", "parameter_server_count")}[kind]
    keys = check.mapping(node, path, known)
    if keys is None:
        return None

    def count(key: str, default: int, minimum: int = 1) -> int | None:
        return default if key not in keys else check.integer(keys[key], join(path, key), minimum=minimum)

    children = {"process_count_per_node": (keys.get("process_count_per_instance", node),
                                           join(path, "process_count_per_instance")),
                "process_count": (keys.get("process_count_per_instance", node),
                                  join(path, "process_count_per_instance")),
                "node_count": (node, path)}
    for key, child in keys.items():
        children.setdefault(key, (child, join(path, key)))
    per_node = count("process_count_per_instance", 1)
    if kind == "mpi":
        if per_node is None:
            return None
        ranks: int = per_node
        return check.call(node, path, lambda: MpiConfiguration(ranks, nodes), children)
    if kind == "pytorch":
        backend: Literal["gloo", "nccl"] = "gloo"
        if "communication_backend" in keys:
            chosen = check.choice(keys["communication_backend"], join(path, "communication_backend"), ("gloo", "nccl"))
            if chosen is None:
                return None
            backend = "nccl" if chosen == "nccl" else "gloo"
        if per_node is None:
            return None
        processes: int = per_node * nodes
        return check.call(node, path, lambda: PyTorchConfiguration(backend, processes, nodes), children)
    workers = count("worker_count", 1)
    servers = count("parameter_server_count", 0, minimum=0)
    if nodes > 1:
        check.add(node, path, f"TensorFlow runs on one node here; resources.instance_count is {nodes}",
                  "set resources.instance_count: 1 and worker_count to the processes you need")
        return None
    if workers is None or servers is None:
        return None
    worker_count, server_count = workers, servers
    return check.call(node, path, lambda: TensorflowConfiguration(worker_count, server_count), children)
