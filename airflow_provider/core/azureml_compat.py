"""Azure ML v1 compatibility, submitting side: what a run with ``azureml_compat=True`` gets.

With the flag on (``ScriptRunConfig.azureml_compat``, ``Environment.azureml_compat`` or
``SubmitTrainingRunOperator(azureml_compat=True)``), the job's ``runtime/`` folder also holds
(:func:`airflow_provider.runtime.job_files`)

* ``runtime/airflow_provider/compat/azureml/``: the v1 ``Run`` mapped onto our run context
  (standard library only, like the run context);
* ``runtime/azureml_compat/azureml/``: the ``azureml`` package a v1 script imports, on the job's
  ``PYTHONPATH``. Its ``__init__`` puts every real ``azureml`` folder found on ``sys.path`` *before*
  its own in the package's ``__path__``, so a real ``azureml-core`` in the environment wins and our
  ``azureml.core`` is only found when there is none.

The run also gets the variables v1 scripts read (:func:`azureml_variables`), and ``$VAR`` /
``${VAR}`` in its arguments expand from the run's variables (:func:`expand_arguments`).
Without the flag, a run that fails with ``No module named 'azureml'`` gets a hint naming the flag
(:func:`azureml_module_hint`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "azureml_module_hint",
    "azureml_variables",
    "expand_arguments",
]


SECRET_NAMES_VARIABLE = "TRAINING_RUN_SECRET_NAMES"
"""Comma-separated names of the run's secret variables, which ``run.get_secret(name)`` serves."""

_MISSING_AZUREML = re.compile(r"No module named '?azureml(\.core)?'?(\s|\Z)")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

HINT = (
    "the script imports azureml (Azure ML v1 SDK), which its environment does not have: set "
    "azureml_compat=True on the ScriptRunConfig, the Environment or the SubmitTrainingRunOperator to run "
    "it unchanged with the provider's compatibility layer (docs/migrating-from-azureml-v1.md)"
)


def azureml_module_hint(error: str, log_tail: str) -> str:
    """Add the compatibility hint to a failed run's error when its log shows a missing ``azureml``.

    :param error: the run's error message.
    :param log_tail: the last lines of its driver log.
    :return: the error, with the hint appended when it applies.
    """
    if HINT in error or not _MISSING_AZUREML.search(log_tail):
        return error
    return f"{error}; {HINT}" if error else HINT


def azureml_variables(run_id: str, experiment_name: str, experiment_id: str,
                      secret_names: list[str]) -> dict[str, str]:
    """The variables Azure ML v1 set in a run that v1 scripts read (their meaning, here).

    :param run_id: the MLflow run id (``AZUREML_RUN_ID``).
    :param experiment_name: the experiment's name (``AZUREML_ARM_PROJECT_NAME``, v1's name for it).
    :param experiment_id: the MLflow experiment id.
    :param secret_names: names of the run's secret variables (never their values).
    """
    return {
        "AZUREML_RUN_ID": run_id,
        "AZUREML_ROOT_RUN_ID": run_id,
        "AZUREML_ARM_PROJECT_NAME": experiment_name,
        "AZUREML_EXPERIMENT_NAME": experiment_name,
        "AZUREML_EXPERIMENT_ID": experiment_id,
        SECRET_NAMES_VARIABLE: ",".join(sorted(secret_names)),
    }


def expand_arguments(arguments: list[str], variables: Mapping[str, str]) -> list[str]:
    """Expand ``$NAME`` and ``${NAME}`` in each argument from ``variables``.

    v1 ran the command line through a shell. Here each argument stays one argument (no word
    splitting, no globbing), and a variable that is not defined stays as written (``$UNSET``), so a
    typo shows in the script's arguments instead of silently becoming an empty string.

    :param arguments: the rendered arguments.
    :param variables: the run's variables (secrets excluded by the caller).
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return [_VARIABLE.sub(replace, argument) if "$" in argument else argument for argument in arguments]
