"""A job file read into *located* values: every value knows the file, line and column it came from.

PyYAML's :func:`yaml.compose` keeps each node's position (``start_mark``); this module turns that
node tree into :class:`Node` objects holding plain Python values (``dict``, ``list``, ``str``,
``int``, ``float``, ``bool``, ``None``), so the readers can check types and name the line of every
problem. Duplicate keys, unknown tags and recursive aliases are reported here; a syntax error stops
reading (nothing after it can be trusted) and is reported with its line and column.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Node", "ParseProblem", "Position", "apply_overrides", "node_from_value", "parse_yaml", "read_yaml_file"]

_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Position:
    """Where a value was written.

    :param file: the file as the caller named it.
    :param line: 1-based line, None when unknown.
    :param column: 1-based column, None when unknown.
    :param note: where a value came from when not from the file (``overrides['inputs.lr']``).
    """

    file: str
    line: int | None = None
    column: int | None = None
    note: str | None = None

    def __str__(self) -> str:
        if self.note is not None:
            return f"{self.file}: {self.note}"
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}" + ("" if self.column is None else f":{self.column}")


@dataclass(eq=False)
class Node:
    """One value of the file and its position.

    :param value: ``dict[str, Node]`` for a mapping, ``list[Node]`` for a sequence, else the scalar.
    :param position: where the value starts.
    :param key_positions: for a mapping: where each key is written.
    """

    value: Any
    position: Position
    key_positions: dict[str, Position] = field(default_factory=dict)

    @property
    def is_mapping(self) -> bool:
        """Whether the value is a mapping."""
        return isinstance(self.value, dict)

    @property
    def is_sequence(self) -> bool:
        """Whether the value is a sequence."""
        return isinstance(self.value, list)

    def type_name(self) -> str:
        """The value's kind as a YAML user calls it (``mapping``, ``list``, ``string``, ...)."""
        return describe_type(self.value)

    def plain(self) -> Any:
        """The value as plain Python data (nested nodes unwrapped)."""
        if isinstance(self.value, dict):
            return {key: child.plain() for key, child in self.value.items()}
        if isinstance(self.value, list):
            return [child.plain() for child in self.value]
        return self.value


def describe_type(value: object) -> str:
    """The kind of a plain value as a YAML user calls it.

    :param value: the value.
    """
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null (no value)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    return f"a string ({value!r})"


@dataclass(frozen=True)
class ParseProblem:
    """Something wrong found while reading the YAML itself.

    :param position: where.
    :param problem: what is wrong.
    :param fix: what to do.
    """

    position: Position
    problem: str
    fix: str


def read_yaml_file(path: Path, file: str) -> tuple[Node | None, list[ParseProblem]]:
    """Read a YAML file into located values (see :func:`parse_yaml`).

    :param path: the file.
    :param file: how messages name it.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [ParseProblem(Position(file), f"cannot be read: {exc.strerror or exc}",
                                   "give the path of an existing, readable file")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, [ParseProblem(Position(file, line), f"is not UTF-8 text (byte {data[exc.start]:#04x})",
                                   "save the file as UTF-8")]
    return parse_yaml(text, file)


def parse_yaml(text: str, file: str) -> tuple[Node | None, list[ParseProblem]]:
    """Read one YAML document into located values.

    :param text: the document.
    :param file: how messages name the file.
    :return: the root node (None when the file cannot be read as YAML at all) and the problems found.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.context}, {exc.problem}"
        position = Position(file, mark.line + 1, mark.column + 1) if mark is not None else Position(file)
        return None, [ParseProblem(position, f"YAML syntax error: {problem}",
                                   "correct the YAML there (indent with spaces, quote values holding ': ' or '#')")]
    except yaml.YAMLError as exc:
        return None, [ParseProblem(Position(file), f"YAML syntax error: {exc}", "correct the YAML")]
    if root is None:
        return None, [ParseProblem(Position(file, 1, 1), "the file is empty", "write the job's fields in it")]
    reader = _Reader(file)
    return reader.convert(root), reader.problems


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[ParseProblem] = []
        self.constructor = yaml.constructor.SafeConstructor()
        self.active: set[int] = set()

    def position(self, node: yaml.Node) -> Position:
        return Position(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def convert(self, node: yaml.Node) -> Node:
        if id(node) in self.active:
            self.problems.append(ParseProblem(self.position(node), "an alias refers to a value that contains it",
                                              "remove the recursive alias"))
            return Node(None, self.position(node))
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node)
            if isinstance(node, yaml.SequenceNode):
                return Node([self.convert(item) for item in node.value], self.position(node))
            return Node(self.scalar(node), self.position(node))
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.Node) -> Any:
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            problem = exc.problem or "cannot be read"
            self.problems.append(ParseProblem(self.position(node), problem,
                                              "remove the tag, or quote the value to make it a string"))
            return node.value
        # timestamps, binary and the like: the text as written (a tag like 2024-01-01 stays a string)
        return value if isinstance(value, _SCALARS) else str(node.value)

    def mapping(self, node: yaml.MappingNode) -> Node:
        try:
            self.constructor.flatten_mapping(node)  # YAML merge keys (<<: *defaults)
        except yaml.constructor.ConstructorError as exc:
            self.problems.append(ParseProblem(self.position(node), exc.problem or "a merge key cannot be read",
                                              "merge only mappings (<<: *anchor)"))
        result = Node({}, self.position(node))
        for key_node, value_node in node.value:
            position = self.position(key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(ParseProblem(position, "a key must be a plain name, not a list or mapping",
                                                  "write the key as text"))
                continue
            key = str(key_node.value)
            if key in result.value:
                first = result.key_positions[key]
                self.problems.append(ParseProblem(position, f"the key {key!r} is given twice (also on line "
                                                  f"{first.line})", "keep one of them"))
            result.value[key] = self.convert(value_node)
            result.key_positions[key] = position
        return result


def node_from_value(value: object, position: Position) -> Node:
    """A located value made from plain Python data (the caller's overrides).

    :param value: the value; paths become strings.
    :param position: where it came from.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, Mapping):
        node = Node({}, position)
        for key, child in value.items():
            node.value[str(key)] = node_from_value(child, position)
            node.key_positions[str(key)] = position
        return node
    if isinstance(value, (list, tuple)):
        return Node([node_from_value(child, position) for child in value], position)
    return Node(value, position)


def apply_overrides(root: Node, overrides: Mapping[str, object], file: str) -> list[ParseProblem]:
    """Set fields of the file from the caller (``az ml job create --set``): ``{"inputs.lr": 0.1,
    "compute": "local"}``. A None value removes the field.

    :param root: the file's root mapping (changed in place).
    :param overrides: dotted field path -> value.
    :param file: how messages name the file.
    :return: overrides that could not be applied.
    """
    problems = []
    for key, value in overrides.items():
        position = Position(file, note=f"overrides[{key!r}]")
        parts = str(key).split(".")
        if not all(parts):
            problems.append(ParseProblem(position, "is not a dotted field path", 'write e.g. "inputs.learning_rate"'))
            continue
        node = root
        for depth, part in enumerate(parts[:-1]):
            child = node.value.get(part)
            if child is None:
                child = Node({}, position)
                node.value[part] = child
                node.key_positions[part] = position
            if not child.is_mapping:
                problems.append(ParseProblem(position, f"{'.'.join(parts[:depth + 1])} is not a mapping, so it has "
                                             f"no field {parts[depth + 1]!r}", "override the whole field instead"))
                break
            node = child
        else:
            if value is None:
                node.value.pop(parts[-1], None)
                node.key_positions.pop(parts[-1], None)
            else:
                node.value[parts[-1]] = node_from_value(value, position)
                node.key_positions[parts[-1]] = position
    return problems
