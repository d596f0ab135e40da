"""Credentials of ``direct`` inputs and outputs, for the script that opens their URIs itself.

A ``direct`` binding passes its URI through: the script reads or writes it with its storage's own
library (s3fs, boto3, pandas; adlfs, azure-storage), and those read their credentials from standard
environment variables. A ``direct`` binding that names a connection (or has storage options)
therefore gives the job those variables, as secret variables: in its process environment only,
masked in the task's and the triggerer's logs, never in MLflow, a tag or XCom (a target that writes
secret variables down keeps them as it keeps the others: see its documentation).

======  =====================================================================================
s3      ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
        ``AWS_ENDPOINT_URL`` (an S3-compatible server), ``AWS_DEFAULT_REGION``
abfs    ``AZURE_STORAGE_ACCOUNT_NAME``, ``AZURE_STORAGE_ACCOUNT_KEY``, ``AZURE_STORAGE_SAS_TOKEN``,
        ``AZURE_STORAGE_CONNECTION_STRING``, ``AZURE_STORAGE_TENANT_ID``, ``AZURE_STORAGE_CLIENT_ID``,
        ``AZURE_STORAGE_CLIENT_SECRET`` (adlfs's names), and ``AZURE_STORAGE_ANON=false``
======  =====================================================================================

``AWS_ENDPOINT_URL`` applies to every S3 client the script makes (an MLflow artifact store on S3
included). Other schemes have no such variables (an SFTP key, a Google key file on this machine):
their credentials, and options no variable carries, do not reach the script (logged). Two bindings
that need different values of one variable, or a binding's variables where the caller sets the same
storage's own, are refused before the run is created.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider.core.errors import ConfigurationError

log = logging.getLogger(__name__)

__all__ = ["DirectBinding", "check_not_set_by_caller", "job_variables"]

_VARIABLES: dict[str, dict[str, str]] = {
    "s3": {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY", "token": "AWS_SESSION_TOKEN",
           "endpoint_url": "AWS_ENDPOINT_URL", "client_kwargs.endpoint_url": "AWS_ENDPOINT_URL",
           "client_kwargs.region_name": "AWS_DEFAULT_REGION"},
    "abfs": {"account_name": "AZURE_STORAGE_ACCOUNT_NAME", "account_key": "AZURE_STORAGE_ACCOUNT_KEY",
             "sas_token": "AZURE_STORAGE_SAS_TOKEN", "connection_string": "AZURE_STORAGE_CONNECTION_STRING",
             "tenant_id": "AZURE_STORAGE_TENANT_ID", "client_id": "AZURE_STORAGE_CLIENT_ID",
             "client_secret": "AZURE_STORAGE_CLIENT_SECRET"},
}
_GROUPS = [set(names.values()) for names in _VARIABLES.values()]
"""A storage's credential variables belong together: keys from one place with an endpoint from
another would send the keys where they do not belong."""
_AZURE_CREDENTIALS = ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
                      "AZURE_STORAGE_CLIENT_SECRET")
_FIX = ("use mode='download' (or 'upload' for an output), or give the script its own credentials "
        "(secret_environment_variables).")


@dataclass(frozen=True)
class DirectBinding:
    """A ``direct`` input or output and its resolved storage options.

    :param field: how messages name it, e.g. ``ScriptRunConfig.inputs['train']``.
    :param scheme: its URI's scheme.
    :param options: its fsspec options (from its connection and ``storage_options``).
    """

    field: str
    scheme: str
    options: Mapping[str, Any]


def job_variables(bindings: Iterable[DirectBinding]) -> dict[str, str]:
    """The environment variables that give a job the credentials of its ``direct`` bindings.

    :param bindings: the run's direct inputs and outputs.
    :raises ConfigurationError: naming the binding whose credentials cannot reach the script, or
        the two bindings that need different values of one variable.
    """
    variables: dict[str, str] = {}
    set_by: dict[str, str] = {}
    for binding in bindings:
        if not binding.options:
            continue
        names = _VARIABLES.get("abfs" if binding.scheme in ("abfs", "az") else binding.scheme)
        if names is None:
            log.warning("%s: a direct %s:// binding's credentials have no standard environment variables: they do "
                        "not reach the script (%s)", binding.field, binding.scheme, _FIX)
            continue
        for option, value in _flattened(binding.options):
            variable = names.get(option)
            if variable is None:
                log.warning("%s: the storage option %r of a direct binding does not reach the script (no environment "
                            "variable carries it; these do: %s)", binding.field, option, ", ".join(sorted(names)))
                continue
            text = str(value)
            if variables.get(variable, text) != text:
                raise ConfigurationError(f"{binding.field}.connection",
                                         f"needs {variable} to differ from what {set_by[variable]} needs: one job "
                                         "has one value of each variable.",
                                         "use one connection for both, or mode='download' for one of them.")
            variables[variable], set_by[variable] = text, binding.field
    if any(name in variables for name in _AZURE_CREDENTIALS):
        variables["AZURE_STORAGE_ANON"] = "false"  # adlfs is anonymous unless told otherwise
    return variables


def check_not_set_by_caller(variables: Mapping[str, str], given: Mapping[str, Mapping[str, str]]) -> None:
    """Refuse direct bindings' variables where the caller sets variables of the same storage.

    :param variables: what :func:`job_variables` returned.
    :param given: the caller's variables by the field that sets them (``secret_environment_variables``...).
    :raises ConfigurationError: naming the field and the variable.
    """
    for group in _GROUPS:
        if not group & set(variables):
            continue
        for field, values in given.items():
            clash = sorted(group & set(values))
            if clash:
                raise ConfigurationError(field, f"sets {clash[0]} while a direct input or output's connection gives "
                                         f"the script {', '.join(sorted(group & set(variables)))}: keys from one "
                                         "place and an endpoint or keys from another would be sent together.",
                                         f"remove {', '.join(clash)}, or the direct binding's connection.")


def _flattened(options: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``client_kwargs={"region_name": ...}`` as ``client_kwargs.region_name``; empty values left out."""
    flat: list[tuple[str, Any]] = []
    for name, value in options.items():
        if isinstance(value, Mapping):
            flat.extend((f"{name}.{inner}", item) for inner, item in value.items() if item not in (None, ""))
        elif value not in (None, ""):
            flat.append((name, value))
    return flat
