"""A run's command-line arguments as MLflow params, so runs compare in MLflow's table and charts
(``--lr 0.01`` becomes the param ``lr`` = ``0.01``; the whole command stays the tag
``training.command``).

The rules, applied to the arguments in order:

- ``--name value``, ``--name=value`` and ``-n value`` give the param ``name`` (``n``): leading
  dashes are stripped as a sweep's search-space names are (:func:`parameter_name`), so a trial's
  hyperparameter ``--lr`` and the argument ``--lr`` are the same param. With ``=`` the value is
  everything after the first ``=`` (``--a=b=c`` gives ``a`` = ``b=c``).
- An option followed by another option, by ``--`` or by nothing is a flag: its value is ``True``,
  what ``str(True)`` gives for argparse's ``store_true``, so a script logging ``vars(args)`` logs
  the same text.
- A negative number (``-1``, ``-0.5``, ``-1e-3``) is never an option: after an option it is its value,
  elsewhere a positional argument.
- ``-`` alone (standard input, by convention) is a value too, never an option.
- Positional arguments (those that are no option's value) are ``arg_0``, ``arg_1``, ... in order.
  ``--`` ends the options: every argument after it is positional.
- An option given more than once has its values joined by one space, in order (``--layer 64
  --layer 32`` gives ``layer`` = ``64 32``).
- A name MLflow refuses as a param key (:func:`~airflow_provider.runtime.events.valid_name`:
  alphanumerics, ``_ - . / :`` and space, at most 250 characters) is skipped, and its value with
  it; a value longer than MLflow's param values is cut where :meth:`Tracker.log_params` cuts it.
- Arguments that are not strings (numbers) are read as ``str(argument)``.

Whether an option takes a value is read from the arguments alone (the script's parser is not
known): ``--verbose data.csv`` gives ``verbose`` = ``data.csv``, and ``-xvalue`` is the flag
``xvalue``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from airflow_provider.core.hyperdrive.sampling import parameter_name
from airflow_provider.core.tracking import _MAX_PARAM_VALUE
from airflow_provider.runtime.events import valid_name

__all__ = ["FLAG_VALUE", "POSITIONAL_PREFIX", "argument_params"]

FLAG_VALUE = str(True)
"""The value of an option given without one (argparse's ``store_true`` as ``vars(args)`` shows it)."""
POSITIONAL_PREFIX = "arg_"
"""Positional arguments are ``arg_0``, ``arg_1``, ..."""
_END_OF_OPTIONS = "--"
_NEGATIVE_NUMBER = re.compile(r"-(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?\Z")


def argument_params(arguments: Sequence[object]) -> dict[str, str]:
    """The MLflow params a run's command-line arguments stand for (the rules are in the module's
    docstring), in the order their names first appear.

    :param arguments: the arguments after the script, as the run was given them (strings, or
        numbers, read as ``str(argument)``).
    :return: param name -> value, every name one MLflow accepts, every value within its length limit.
    """
    tokens = [str(argument) for argument in arguments]
    values: dict[str, list[str]] = {}
    positional = 0
    index = 0
    options_ended = False
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not options_ended and token == _END_OF_OPTIONS:
            options_ended = True
            continue
        if options_ended or not _is_option(token):
            values.setdefault(f"{POSITIONAL_PREFIX}{positional}", []).append(token)
            positional += 1
            continue
        name, equals, value = token.partition("=")
        if not equals:
            if index < len(tokens) and not _is_option(tokens[index]) and tokens[index] != _END_OF_OPTIONS:
                value = tokens[index]
                index += 1
            else:
                value = FLAG_VALUE
        values.setdefault(parameter_name(name), []).append(value)
    return {name: " ".join(given)[:_MAX_PARAM_VALUE] for name, given in values.items() if _valid_key(name)}


def _is_option(token: str) -> bool:
    """True for ``-x``, ``--name``, ``--name=value``; False for ``-``, ``--`` (the end of options),
    negative numbers and everything not starting with a dash.

    :param token: one argument.
    """
    return token.startswith("-") and token not in ("-", _END_OF_OPTIONS) and not _NEGATIVE_NUMBER.match(token)


def _valid_key(name: str) -> bool:
    """True when MLflow accepts ``name`` as a param key (it also refuses ``.``, which
    :func:`valid_name` lets through as it normalises to itself).

    :param name: the param's name.
    """
    return valid_name(name) and name != "."
