"""Every problem of a job file, collected and raised at once (:class:`JobFileError`).

The readers never stop at the first problem: each check records a :class:`JobProblem` (the
position, the field's dotted path, what is wrong and the fix) in a :class:`Checker` and goes on,
so one message lists everything to correct, one line per problem::

    train.yml:7:3: inputs.data.mode: 'eval_mount' has no equivalent here; use download, direct or ro_mount
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.job_spec.nodes import Node, ParseProblem, Position

__all__ = ["Checker", "JobFileError", "JobProblem", "close_match", "join"]

T = TypeVar("T")
DOCS = "docs/job-yaml.md"


@dataclass(frozen=True)
class JobProblem:
    """One problem of a job file.

    :param position: where it was written.
    :param field: the field's dotted path (``inputs.data.mode``).
    :param problem: what is wrong.
    :param fix: how to fix it.
    """

    position: Position
    field: str
    problem: str
    fix: str

    def __str__(self) -> str:
        text = f"{self.position}: " + (f"{self.field}: " if self.field else "") + self.problem.rstrip(". ")
        return f"{text}; {self.fix.rstrip('. ')}" if self.fix else text


class JobFileError(ConfigurationError):
    """A job file has problems; :attr:`problems` lists every one (the message too, one a line).

    :param source: the file as the caller named it.
    :param problems: what is wrong; listed by file (``source`` first, then others as found), then line and column.
    """

    def __init__(self, source: str, problems: Sequence[JobProblem]) -> None:
        self.source = source
        files = list(dict.fromkeys([source, *(problem.position.file for problem in problems)]))
        self.problems = tuple(sorted(problems, key=lambda problem: (
            files.index(problem.position.file), problem.position.line is None, problem.position.line or 0,
            problem.position.column or 0)))
        count = len(self.problems)
        listing = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__("job", f"{source} has {count} problem{'' if count == 1 else 's'}:\n{listing}\n",
                         f"correct each line above ({DOCS} describes every field).")


def join(prefix: str, key: str | int) -> str:
    """A child's dotted path: ``join("inputs", "data")`` is ``inputs.data``; list items ``limits[0]``.

    :param prefix: the parent's path ("" at the top).
    :param key: the key or list index.
    """
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def close_match(key: str, known: Collection[str]) -> str | None:
    """The name among ``known`` that ``key`` most likely meant (difflib), or None.

    :param key: what was written.
    :param known: the names allowed there.
    """
    lowered = {name.lower(): name for name in known}
    if key.lower() in lowered:
        return lowered[key.lower()]
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


class Checker:
    """Collects problems while the readers check a job file."""

    def __init__(self) -> None:
        self.problems: list[JobProblem] = []

    def add(self, at: Node | Position, field: str, problem: str, fix: str = "") -> None:
        """Record a problem.

        :param at: the node (or position) at fault.
        :param field: its dotted path.
        :param problem: what is wrong.
        :param fix: how to fix it.
        """
        position = at.position if isinstance(at, Node) else at
        self.problems.append(JobProblem(position, field, problem, fix))

    def add_parsed(self, problems: Sequence[ParseProblem], field: str = "") -> None:
        """Record problems of the YAML layer.

        :param problems: found while reading the YAML.
        :param field: the field they belong to ("" for the whole file).
        """
        for found in problems:
            self.add(found.position, field, found.problem, found.fix)

    def add_error(self, at: Node | Position, field: str, error: ConfigurationError) -> None:
        """Record an error raised by the core (its problem and fix, at this node).

        :param at: the node the error is about.
        :param field: its dotted path.
        :param error: what the core raised.
        """
        self.add(at, field, error.problem, error.fix)

    def call(self, at: Node | Position, field: str, build: Callable[[], T],
             children: Mapping[str, tuple[Node, str]] | None = None) -> T | None:
        """Run a core constructor; a :class:`ConfigurationError` it raises becomes a problem.

        :param at: the node the value came from.
        :param field: its dotted path.
        :param build: makes the value.
        :param children: core field names -> (node, dotted path) of the YAML key they came from, so
            an error naming ``MpiConfiguration.process_count_per_node`` points at
            ``distribution.process_count_per_instance``.
        :return: the value, or None when it could not be made.
        """
        try:
            return build()
        except ConfigurationError as exc:
            target, path = at, field
            for name, (node, child_path) in (children or {}).items():
                if re.search(rf"(?:\A|[.\[']){re.escape(name)}(?:\Z|[.\]'])", exc.field):
                    target, path = node, child_path
                    break
            self.add_error(target, path, exc)
            return None

    # ----------------------------------------------------------------- typed readers
    def mapping(self, node: Node, field: str, known: Collection[str], required: Collection[str] = (),
                elsewhere: Mapping[str, str] | None = None, what: str = "") -> dict[str, Node] | None:
        """Check a mapping's keys: unknown keys (with a did-you-mean) and missing required ones.

        :param node: the mapping.
        :param field: its dotted path.
        :param known: the keys allowed.
        :param required: the keys that must be there.
        :param elsewhere: keys with no place here and the reason (Azure ML keys with no equivalent,
            keys that belong elsewhere).
        :param what: the mapping's description for a wrong type ("a distribution mapping").
        :return: the keys and values, or None when the node is not a mapping.
        """
        if not node.is_mapping:
            self.add(node, field, f"must be {what or 'a mapping'}, got {node.type_name()}",
                     f"see {DOCS} for its fields")
            return None
        children: dict[str, Node] = node.value
        for key in children:
            if key in known:
                continue
            at = node.key_positions.get(key, node.position)
            if elsewhere and key in elsewhere:
                self.add(at, join(field, key), elsewhere[key], f"remove {key!r}")
                continue
            meant = close_match(key, known)
            if meant is not None:
                self.add(at, join(field, key), "unknown key", f"did you mean {meant!r}? Rename it")
            else:
                self.add(at, join(field, key), "unknown key",
                         f"remove it; the keys here are {', '.join(sorted(known)) or 'none'}")
        for key in required:
            if key not in children:
                self.add(node, join(field, key), "is required but missing", f"add {key}: to {field or 'the file'}")
        return children

    def string(self, node: Node, field: str, fix: str = "write it as text", allow_empty: bool = False) -> str | None:
        """A string value (a number written where a name belongs is refused: quote it).

        :param node: the value.
        :param field: its dotted path.
        :param fix: the fix when it is not a string.
        :param allow_empty: accept "".
        """
        if not isinstance(node.value, str):
            self.add(node, field, f"must be a string, got {node.type_name()}", fix)
            return None
        if not allow_empty and not node.value.strip():
            self.add(node, field, "is empty", fix)
            return None
        return node.value

    def text(self, node: Node, field: str, fix: str = "write it as text") -> str | None:
        """A scalar written as text: strings as they are, numbers and booleans as YAML wrote them
        (``true``), for values that end up as strings (tags, variables, literal inputs).

        :param node: the value.
        :param field: its dotted path.
        :param fix: the fix when it is a mapping, list or null.
        """
        value = node.value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float, str)):
            return str(value)
        self.add(node, field, f"must be a string or number, got {node.type_name()}", fix)
        return None

    def integer(self, node: Node, field: str, minimum: int | None = None) -> int | None:
        """A whole number, at least ``minimum``.

        :param node: the value.
        :param field: its dotted path.
        :param minimum: the smallest allowed.
        """
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(node, field, f"must be a whole number, got {node.type_name()}",
                     f"write e.g. {max(minimum or 0, 1)}")
            return None
        if minimum is not None and value < minimum:
            self.add(node, field, f"must be at least {minimum}, got {value}", f"write a number >= {minimum}")
            return None
        return value

    def number(self, node: Node, field: str, positive: bool = False, minimum: float | None = None) -> float | None:
        """A finite number (ints stay ints).

        :param node: the value.
        :param field: its dotted path.
        :param positive: must be above 0.
        :param minimum: the smallest allowed.
        """
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.add(node, field, f"must be a number, got {node.type_name()}", "write e.g. 0.5")
            return None
        if positive and value <= 0:
            self.add(node, field, f"must be positive, got {value}", "write a number above 0")
            return None
        if minimum is not None and value < minimum:
            self.add(node, field, f"must be at least {minimum:g}, got {value}", f"write a number >= {minimum:g}")
            return None
        return value

    def boolean(self, node: Node, field: str) -> bool | None:
        """``true`` or ``false``.

        :param node: the value.
        :param field: its dotted path.
        """
        if not isinstance(node.value, bool):
            self.add(node, field, f"must be true or false, got {node.type_name()}", "write true or false")
            return None
        return node.value

    def choice(self, node: Node, field: str, options: Collection[str],
               no_equivalent: Mapping[str, str] | None = None) -> str | None:
        """One of ``options`` (compared without case); the option as listed.

        :param node: the value.
        :param field: its dotted path.
        :param options: the values allowed.
        :param no_equivalent: values Azure ML knows that have no equivalent here, and why.
        """
        if not isinstance(node.value, str):
            self.add(node, field, f"must be one of {', '.join(options)}, got {node.type_name()}",
                     f"write one of {', '.join(options)}")
            return None
        lowered = node.value.strip().lower()
        for option in options:
            if option.lower() == lowered:
                return option
        for name, reason in (no_equivalent or {}).items():
            if name.lower() == lowered:
                self.add(node, field, f"{node.value!r} {reason}", f"use one of {', '.join(options)}")
                return None
        meant = close_match(node.value, options)
        hint = f"; did you mean {meant!r}?" if meant is not None else ""
        self.add(node, field, f"{node.value!r} is not one of {', '.join(options)}{hint}",
                 f"write one of {', '.join(options)}")
        return None

    def string_map(self, node: Node, field: str, check_name: Callable[[str], str | None] | None = None
                   ) -> dict[str, str] | None:
        """A mapping of names to scalar values, the values as text (see :meth:`text`).

        :param node: the mapping.
        :param field: its dotted path.
        :param check_name: returns what is wrong with a name, or None when it is fine.
        """
        if not node.is_mapping:
            self.add(node, field, f"must be a mapping of names to values, got {node.type_name()}",
                     "write one NAME: value a line, indented under it")
            return None
        result = {}
        for key, child in node.value.items():
            wrong = check_name(key) if check_name else None
            if wrong:
                self.add(node.key_positions.get(key, node.position), join(field, key), wrong,
                         "use letters, digits and '_', not starting with a digit")
                continue
            value = self.text(child, join(field, key))
            if value is not None:
                result[key] = value
        return result
