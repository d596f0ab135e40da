"""Environment variables for a run's process, checked before any compute is used.

One set of rules for every place variables come from (``Environment.environment_variables``,
``ScriptRunConfig.environment_variables``, ``Experiment.submit(secret_variables=...)``, the
operator's ``secret_environment_variables``): a name is ``[A-Za-z_][A-Za-z0-9_]*``, a value a
string without a NUL character (no process environment can hold one). Messages about secret
variables never show the value.
"""

from __future__ import annotations

import re

from airflow_provider.core.errors import ConfigurationError

__all__ = ["ENV_VAR_NAME", "validate_variables"]

ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A valid variable name (use with ``fullmatch``)."""


def validate_variables(variables: object, field: str, secret: bool = False) -> dict[str, str]:
    """Check a mapping of variable names to values; return it as a plain dict.

    :param variables: the mapping as given (``None`` is an empty one).
    :param field: how the caller names it in messages, e.g. ``"ScriptRunConfig.environment_variables"``.
    :param secret: the values are secrets: never put them in a message.
    :raises ConfigurationError: naming the first bad entry and how to fix it.
    """
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise ConfigurationError(field, f"must be a dict, got {type(variables).__name__}.",
                                 'pass {"NAME": "value"}.')
    for name, value in variables.items():
        _check_name(field, name)
        _check_value(f"{field}[{name!r}]", value, secret)
    return dict(variables)


def _check_name(field: str, name: object) -> None:
    if not isinstance(name, str) or not ENV_VAR_NAME.fullmatch(name):
        raise ConfigurationError(field, f"{name!r} is not a valid variable name.",
                                 "use letters, digits and '_', not starting with a digit.")


def _check_value(field: str, value: object, secret: bool) -> None:
    if not isinstance(value, str):
        shown = "a string" if secret else f"str({value!r})"
        raise ConfigurationError(field, f"must be a string, got {type(value).__name__}.", f"pass {shown}.")
    if "\0" in value:
        raise ConfigurationError(field, "contains a NUL character, which no environment variable can hold.",
                                 "remove the NUL character.")
