"""A job's ``command``: placeholders checked and filled, and the form the core runs it in.

* ``${{inputs.<name>}}`` of a literal input (``epochs: 10``) is replaced by its value here;
  of a data input it is kept: the core replaces it with the data's path on the target.
  ``${{outputs.<name>}}`` is kept likewise. ``[--flag ${{inputs.x}}]`` (Azure ML's optional part)
  is kept without its brackets when ``x`` is given, and dropped when ``x`` is an optional input
  without a path.
* ``${{search_space.<name>}}`` (a sweep's trial) must be a whole argument after a flag
  (``--lr ${{search_space.lr}}`` or ``--lr=${{search_space.lr}}``): the flag becomes the name of the
  parameter in the core's search space, so each trial's value replaces the placeholder.
* ``python <script>.py <arguments>`` without shell syntax becomes the core's ``script`` and
  ``arguments`` (run with the environment's interpreter, through the distributed launchers' script
  mode, and the only form a sweep can pass sampled values to). Any other command line is passed as
  it is, and the core runs it with ``/bin/sh -c``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PLACEHOLDER", "CommandNames", "PreparedCommand", "prepare_command"]

PLACEHOLDER = re.compile(r"\$\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z0-9_.-]+?)\s*\}\}")
_OPTIONAL = re.compile(r"\$\[\[(.*?)\]\]", re.DOTALL)  # Azure ML's optional part: $[[--x ${{inputs.x}}]]
_PYTHON = re.compile(r"python(?:3(?:\.\d+)?)?")
_SHELL_SYNTAX = re.compile(r"[;&|<>`\$(){}*?~#\\\n]")
_FLAG_EQUALS = re.compile(r"(-[^=\s]+)=(.+)", re.DOTALL)

Report = Callable[[str, str], None]


@dataclass(frozen=True)
class CommandNames:
    """What a command's placeholders may name.

    :param literals: literal inputs -> their value as text.
    :param data_inputs: inputs bound to data (kept for the core).
    :param absent_inputs: optional inputs given no path.
    :param outputs: the outputs.
    :param search_space: a sweep trial's search-space names; None outside a sweep.
    """

    literals: Mapping[str, str] = field(default_factory=dict)
    data_inputs: Collection[str] = ()
    absent_inputs: Collection[str] = ()
    outputs: Collection[str] = ()
    search_space: Collection[str] | None = None


@dataclass(frozen=True)
class PreparedCommand:
    """A command in the core's terms.

    :param script: the Python script (relative to the code folder), or None for a shell command.
    :param arguments: the script's arguments.
    :param command: the shell command line, or None for a script.
    :param flags: search-space name -> the flag whose value it fills (``{"lr": "--learning-rate"}``).
    """

    script: str | None = None
    arguments: tuple[str, ...] = ()
    command: str | None = None
    flags: Mapping[str, str] = field(default_factory=dict)


def prepare_command(text: str, names: CommandNames, code: Path, report: Report) -> PreparedCommand | None:
    """Check ``text``'s placeholders, fill in literal inputs, and choose the script or shell form.

    :param text: the command as written.
    :param names: what its placeholders may name.
    :param code: the code folder (a script must be a file in it).
    :param report: records a problem of the command: ``report(problem, fix)``.
    :return: the command, or None when it has problems (each reported).
    """
    text = _OPTIONAL.sub(lambda match: _optional_part(match.group(1), names), text).strip()
    if not _placeholders_ok(text, names, report):
        return None
    if not text.strip():
        report("is empty once its optional parts are dropped", "write the program to run")
        return None
    stripped = PLACEHOLDER.sub("X", text)
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        report(f"cannot be split into arguments: {exc}", "close the quote")
        return None
    searched = [m for m in PLACEHOLDER.finditer(text) if m.group(1) == "search_space"]
    is_script = (not _SHELL_SYNTAX.search(stripped) and len(tokens) >= 2 and _PYTHON.fullmatch(tokens[0]) is not None
                 and tokens[1].endswith(".py") and not tokens[1].startswith("-") and "${{" not in tokens[1])
    if not is_script:
        if searched:
            report(f"{searched[0].group(0)} is only filled in a command of the form python <script>.py <arguments> "
                   "without shell syntax (sampled values are passed as that script's arguments)",
                   "run the script directly: python train.py --lr ${{search_space.lr}}")
            return None
        return PreparedCommand(command=_fill_literals(text, names.literals).strip())
    script = tokens[1]
    full = (code / script).resolve()
    try:
        full.relative_to(code.resolve())
    except ValueError:
        report(f"runs {script}, which is outside the code folder {str(code)!r} (only that folder is sent)",
               "move the script into the code folder, or set code: to the folder that holds it")
        return None
    if not full.is_file():
        report(f"runs {script}, which is not a file in the code folder {str(code)!r}",
               "correct the script's path (relative to code:), or set code: to the folder that holds it")
        return None
    arguments = [_fill_literals(argument, names.literals) for argument in tokens[2:]]
    flags = _sweep_flags(arguments, report)
    if flags is None:
        return None
    return PreparedCommand(script=script, arguments=tuple(arguments), flags=flags)


def _optional_part(inner: str, names: CommandNames) -> str:
    used = [m.group(2) for m in PLACEHOLDER.finditer(inner) if m.group(1) == "inputs"]
    return "" if any(name in names.absent_inputs for name in used) else inner


def _placeholders_ok(text: str, names: CommandNames, report: Report) -> bool:
    ok = True
    for match in PLACEHOLDER.finditer(text):
        kind, name = match.group(1), match.group(2)
        shown = match.group(0)
        if kind == "inputs":
            declared = [*names.literals, *names.data_inputs, *names.absent_inputs]
            if name in names.absent_inputs:
                report(f"{shown} names an optional input given no path",
                       f"give inputs.{name}.path, or wrap the part that uses it in [ ] so it is dropped")
            elif name not in declared:
                report(f"{shown} names no input (declared: {', '.join(sorted(declared)) or 'none'})",
                       f"add {name} under inputs:, or correct the name")
            else:
                continue
        elif kind == "outputs":
            if name in names.outputs:
                continue
            report(f"{shown} names no output (declared: {', '.join(sorted(names.outputs)) or 'none'})",
                   f"add {name} under outputs:, or correct the name")
        elif kind == "search_space":
            if names.search_space is None:
                report(f"{shown} is only known in a sweep's trial", "use type: sweep, or an input instead")
            elif name in names.search_space:
                continue
            else:
                report(f"{shown} names no search-space parameter (declared: "
                       f"{', '.join(sorted(names.search_space)) or 'none'})",
                       f"add {name} under search_space:, or correct the name")
        else:
            report(f"{shown} is not a placeholder this job knows",
                   "use ${{inputs.<name>}}, ${{outputs.<name>}} or ${{search_space.<name>}}")
        ok = False
    if "${{" in PLACEHOLDER.sub("", text):
        report("holds a malformed placeholder (a '${{' that is not ${{inputs.<name>}}, ${{outputs.<name>}} or "
               "${{search_space.<name>}})", "close it with }} and name an input, output or search-space parameter")
        ok = False
    return ok


def _fill_literals(text: str, literals: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        if match.group(1) == "inputs" and match.group(2) in literals:
            return literals[match.group(2)]
        return match.group(0)

    return PLACEHOLDER.sub(value, text)


def _sweep_flags(arguments: list[str], report: Report) -> dict[str, str] | None:
    flags: dict[str, str] = {}
    ok = True
    for index, argument in enumerate(arguments):
        for match in PLACEHOLDER.finditer(argument):
            if match.group(1) != "search_space":
                continue
            name, shown = match.group(2), match.group(0)
            flag = None
            previous = arguments[index - 1] if index else ""
            if argument == shown and previous.startswith("-") and "${{" not in previous:
                flag = previous
            else:
                equals = _FLAG_EQUALS.fullmatch(argument)
                if equals is not None and equals.group(2) == shown:
                    flag = equals.group(1)
            if flag is None:
                report(f"{shown} must be a whole argument after a flag",
                       f"write --{name} {shown} (or --{name}={shown}); the trial's value replaces it")
                ok = False
            elif name in flags:
                report(f"{shown} is used twice", "pass each search-space parameter once")
                ok = False
            elif flag in flags.values():
                report(f"the flag {flag} takes two search-space parameters", "give each parameter its own flag")
                ok = False
            else:
                flags[name] = flag
    return flags if ok else None
