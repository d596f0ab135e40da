"""An MLflow ``MLproject`` file: one entry point, its parameters checked and filled into its command.

As ``mlflow run`` does: the entry point is chosen by name (default ``main``; a ``.py`` or ``.sh``
file of the project not listed runs as ``python <file>`` / ``bash <file>``); the caller's values
override the parameters' defaults and are type-checked (``float``, ``int``, ``string``, ``path``,
``uri``); a parameter with neither is an error; ``{name}`` in the command becomes the value quoted
with :func:`shlex.quote`; values for parameters the entry point does not declare are appended as
``--name value``.

Where this differs: a ``path`` parameter naming an existing file or folder, or a remote URI, becomes
a ``download`` input (``mlflow run`` downloads remote URIs too), so the data reaches any target; a
relative path starts at the project's folder. Environments: ``conda_env`` is the conda
specification, ``python_env``'s ``dependencies`` are pip requirements (its ``python`` version is
not enforced: the target's interpreter is used), ``docker_env.image`` the Docker target's image.
"""

from __future__ import annotations

import os
import re
import shlex
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from airflow_provider.core.data.bindings import is_binding_name
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.job_spec.commands import CommandNames, prepare_command
from airflow_provider.core.job_spec.data import resolve_location
from airflow_provider.core.job_spec.environments import environment_name
from airflow_provider.core.job_spec.nodes import Node, Position, read_yaml_file
from airflow_provider.core.job_spec.problems import Checker, close_match, join
from airflow_provider.core.job_spec.spec import CommandSpec, DataInput

__all__ = ["MLPROJECT_KEYS", "Project", "is_mlproject", "read_mlproject"]

MLPROJECT_KEYS = ("name", "entry_points", "python_env", "conda_env", "docker_env")
PARAMETER_TYPES = ("string", "float", "int", "path", "uri")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")


@dataclass
class Project:
    """An MLproject entry point, read.

    :param run: the run.
    :param name: the project's ``name``.
    :param entry_point: the entry point's name.
    :param parameters: every parameter's value, as ``mlflow run`` logs them.
    """

    run: CommandSpec
    name: str | None
    entry_point: str
    parameters: dict[str, str] = field(default_factory=dict)


def is_mlproject(path: Path, root: Node | None) -> bool:
    """Whether a file is an MLproject: named so, or a mapping with ``entry_points`` and no ``command``/``type``.

    :param path: the file.
    :param root: its content.
    """
    if path.name.lower() == "mlproject":
        return True
    return root is not None and root.is_mapping and "entry_points" in root.value and not (
        {"command", "type", "trial"} & set(root.value))


def read_mlproject(check: Checker, root: Node, project_file: Path, entry_point: str | None,
                   values: Mapping[str, object]) -> Project | None:
    """Read an MLproject's entry point.

    :param check: collects problems.
    :param root: the file's root node.
    :param project_file: the file.
    :param entry_point: the entry point to run (default ``main``).
    :param values: parameter values that override the defaults.
    """
    keys = check.mapping(root, "", MLPROJECT_KEYS, required=("entry_points",), what="an MLproject mapping")
    if keys is None:
        return None
    folder = project_file.parent.resolve()
    name = check.string(keys["name"], "name") if "name" in keys else None
    before = len(check.problems)
    environment = _environment(check, keys, folder, environment_name(name or folder.name))
    environment_failed = len(check.problems) > before
    chosen = entry_point or "main"
    if "entry_points" not in keys:
        return None
    points = check.mapping(keys["entry_points"], "entry_points", list(keys["entry_points"].value)
                           if keys["entry_points"].is_mapping else (), what="a mapping of entry points")
    if points is None:
        return None
    bindings: dict[str, DataInput] = {}
    parameters: dict[str, str] = {}
    if chosen in points:
        path = join("entry_points", chosen)
        text, command_node = _entry_point(check, points[chosen], path, values, folder, bindings, parameters)
        command_path = join(path, "command")
    elif chosen.endswith((".py", ".sh")) and (folder / chosen).is_file():
        program = "python" if chosen.endswith(".py") else "bash"
        text, command_node, command_path = f"{program} {shlex.quote(chosen)}", keys["entry_points"], "entry_points"
        extra = " ".join(f"--{key} {shlex.quote(str(value))}" for key, value in values.items())
        text = f"{text} {extra}".strip()
        parameters.update({key: str(value) for key, value in values.items()})
    else:
        meant = close_match(chosen, list(points))
        check.add(keys["entry_points"], "entry_points", f"has no entry point {chosen!r}"
                  + (f" (did you mean {meant!r}?)" if meant else ""),
                  f"run one of {', '.join(points) or 'none'}, or a .py / .sh file of the project")
        return None
    if text is None or command_node is None:
        return None
    prepared = prepare_command(text, CommandNames(data_inputs=set(bindings)), folder,
                               lambda problem, fix: check.add(command_node, command_path, problem, fix))
    if prepared is None or environment_failed:
        return None
    run = CommandSpec(source_directory=folder, script=prepared.script, command=prepared.command,
                      arguments=prepared.arguments, environment=environment[0] if environment else None,
                      environment_variables=environment[1] if environment else {},
                      copied_variables=environment[2] if environment else (), inputs=bindings)
    return Project(run, name, chosen, parameters)


def _entry_point(check: Checker, node: Node, path: str, values: Mapping[str, object], folder: Path,
                 bindings: dict[str, DataInput], parameters: dict[str, str]) -> tuple[str | None, Node | None]:
    keys = check.mapping(node, path, ("parameters", "command"), required=("command",),
                         what="a mapping with parameters and command")
    if keys is None or "command" not in keys:
        return None, None
    declared = {}
    if "parameters" in keys:
        declared = check.mapping(keys["parameters"], join(path, "parameters"), list(keys["parameters"].value)
                                 if keys["parameters"].is_mapping else (), what="a mapping of parameters") or {}
    rendered: dict[str, str] = {}
    for name, declaration in declared.items():
        found = _parameter(check, name, declaration, join(join(path, "parameters"), name), values, folder, bindings)
        if found is not None:
            rendered[name], parameters[name] = found
    command = check.string(keys["command"], join(path, "command"), "write the command line")
    if command is None or len(rendered) != len(declared):
        return None, None
    try:
        parts = list(string.Formatter().parse(command))
    except ValueError as exc:
        check.add(keys["command"], join(path, "command"), f"has unbalanced braces: {exc}",
                  "write {name} for a parameter and {{ }} for a literal brace")
        return None, None
    text = ""
    for literal, field_name, _, _ in parts:
        text += literal
        if field_name is None:
            continue
        if field_name not in rendered:
            check.add(keys["command"], join(path, "command"), f"uses {{{field_name}}}, which is not a parameter of "
                      "this entry point", f"declare {field_name} under parameters:, or write {{{{ }}}} for a brace")
            return None, None
        text += rendered[field_name]
    extra = {key: value for key, value in values.items() if key not in declared}
    for key, value in extra.items():  # mlflow run appends undeclared parameters
        text += f" --{key} {shlex.quote(str(value))}"
        parameters[key] = str(value)
    return text, keys["command"]


def _parameter(check: Checker, name: str, node: Node, path: str, values: Mapping[str, object], folder: Path,
               bindings: dict[str, DataInput]) -> tuple[str, str] | None:
    """The parameter's text in the command and its logged value, or None on problems."""
    kind_node, default = node, None
    if node.is_mapping:
        keys = check.mapping(node, path, ("type", "default"))
        if keys is None:
            return None
        kind_node = keys.get("type", Node("string", node.position))
        default = keys.get("default")
    kind = check.choice(kind_node, join(path, "type") if node.is_mapping else path, PARAMETER_TYPES)
    if kind is None:
        return None
    given = name in values
    value: object = values[name] if given else (default.value if default is not None else None)
    if value is None:
        check.add(node, path, "has no default and no value was given",
                  f"pass a value (overrides={{{name!r}: ...}}), or add default: to the parameter")
        return None
    where = f"the value {value!r} given for it" if given else f"its default {value!r}"
    at: Node | Position = node if given or default is None else default
    if isinstance(value, bool) or not isinstance(value, (str, int, float, os.PathLike)):
        check.add(at, path, f"{where} is not a {kind}", f"give a {kind}")
        return None
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if kind == "float" and not _parses(float, text):
        check.add(at, path, f"{where} is not a float", "give a number, e.g. 0.1")
        return None
    if kind == "int" and not _parses(int, text):
        check.add(at, path, f"{where} is not an int", "give a whole number, e.g. 10")
        return None
    if kind == "uri" and not _URI.match(text):
        text = str((folder / Path(text).expanduser()).resolve())
    if kind == "path":
        location = resolve_location(check, Node(text, at.position if isinstance(at, Node) else at), path, folder,
                                    must_exist=False)
        if location is None:
            return None
        if not _URI.match(location) and not Path(location).exists():  # as `mlflow run` refuses it
            check.add(at, path, f"{where} is the path {location!r}, where no file or folder exists",
                      "give an existing file or folder (relative to the MLproject's folder), or a URI")
            return None
        binding = _binding_name(name, bindings)
        bindings[binding] = DataInput(location)
        return f"${{{{inputs.{binding}}}}}", location
    return shlex.quote(text), text


def _parses(kind: type[float] | type[int], text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _binding_name(name: str, taken: Mapping[str, object]) -> str:
    base = re.sub(r"\W", "_", name)[:60] or "path"
    if not is_binding_name(base):
        base = f"_{base}"[:60]
    candidate, number = base, 1
    while candidate in taken:
        number += 1
        candidate = f"{base}_{number}"
    return candidate


def _environment(check: Checker, keys: dict[str, Node], folder: Path, name: str
                 ) -> tuple[Environment, dict[str, str], tuple[str, ...]] | None:
    """The project's environment, its variables, and the names of those copied from the submitting
    process (``docker_env.environment: [NAME]``); None for none or on problems (recorded)."""
    given = [key for key in ("python_env", "conda_env", "docker_env") if key in keys]
    if len(given) > 1:
        check.add(keys[given[1]], given[1], f"is given together with {given[0]}", "give one environment")
        return None
    if not given:
        return None
    node = keys[given[0]]
    if given[0] == "docker_env":
        return _docker(check, node, name)
    text = check.string(node, given[0], "write the path of the environment file, relative to the MLproject")
    if text is None:
        return None
    path = (folder / text).resolve()
    if not path.is_file():
        check.add(node, given[0], f"{str(path)!r} does not exist", "write the path relative to the MLproject's folder")
        return None
    if given[0] == "conda_env":
        environment = check.call(node, given[0], lambda: Environment.from_conda_specification(name, path))
        return None if environment is None else (environment, {}, ())
    return _python_env(check, path, name)


def _python_env(check: Checker, path: Path, name: str
                ) -> tuple[Environment, dict[str, str], tuple[str, ...]] | None:
    root, problems = read_yaml_file(path, str(path))
    check.add_parsed(problems)
    if root is None:
        return None
    keys = check.mapping(root, "", ("python", "build_dependencies", "dependencies"))
    if keys is None:
        return None
    if "python" in keys:
        check.text(keys["python"], "python")
    lines: list[str] = []
    for key in ("build_dependencies", "dependencies"):
        child = keys.get(key)
        if child is None:
            continue
        if not child.is_sequence:
            check.add(child, key, f"must be a list of requirements, got {child.type_name()}", "write - numpy==2.2.6")
            return None
        for index, item in enumerate(child.value):
            line = check.string(item, f"{key}[{index}]", "write a requirement, e.g. numpy==2.2.6")
            if line is None:
                return None
            if key == "build_dependencies":
                continue  # pip, setuptools, wheel: the environment builder brings its own
            option, _, target = line.strip().partition(" ")
            if option in ("-r", "--requirement"):
                included = (path.parent / target.strip()).resolve()
                built = check.call(item, f"{key}[{index}]", _requirements_reader(name, included))
                if built is None:
                    return None
                lines.extend(built.python.pip_packages)
            else:
                lines.append(line.strip())
    environment = Environment(name)
    environment.python.pip_packages = lines
    return environment, {}, ()


def _requirements_reader(name: str, path: Path) -> Callable[[], Environment]:
    return lambda: Environment.from_pip_requirements(name, path)


def _docker(check: Checker, node: Node, name: str) -> tuple[Environment, dict[str, str], tuple[str, ...]] | None:
    keys = check.mapping(node, "docker_env", ("image", "environment"), required=("image",), elsewhere={
        "volumes": "has no equivalent here: bind data as a path parameter (a download input)",
        "run_params": "has no equivalent here: the Docker target's connection sets the container's options"})
    if keys is None or "image" not in keys:
        return None
    image = check.string(keys["image"], "docker_env.image", 'write an image, e.g. "python:3.11-slim"')
    variables: dict[str, str] = {}
    copied: list[str] = []
    child = keys.get("environment")
    if child is not None:
        if not child.is_sequence:
            check.add(child, "docker_env.environment", f"must be a list, got {child.type_name()}",
                      "write - NAME (copied from here) or - [NAME, value]")
            return None
        for index, item in enumerate(child.value):
            where = f"docker_env.environment[{index}]"
            if isinstance(item.value, str):  # copied from the submitting process when the run is submitted
                copied.append(item.value)
            elif item.is_sequence and len(item.value) == 2 and isinstance(item.value[0].value, str):
                value = check.text(item.value[1], where)
                if value is not None:
                    variables[item.value[0].value] = value
            else:
                check.add(item, where, "must be NAME or [NAME, value]", "write - [NAME, value]")
    if image is None:
        return None
    environment = Environment.from_docker_image(name, image)
    return environment, variables, tuple(copied)
