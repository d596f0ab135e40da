"""Airflow connections as credentials for data inputs and outputs (fsspec storage options).

An ``Input(..., connection="my_s3")`` names a connection; this module turns it into the options of
the URI's filesystem, so credentials live in Airflow's connection store (masked, never in the DAG
file, never in MLflow or a job folder). The fields each scheme reads:

=========  ==================================================================================
scheme     connection fields
=========  ==================================================================================
s3         login = access key id, password = secret key; extra ``endpoint_url`` (or host),
           ``region_name``, ``aws_session_token`` (Airflow's ``aws`` connection names work too)
sftp       login, password, port; extra ``key_file``, ``private_key``, ``passphrase``,
           ``host_key`` (pinned), ``known_hosts``, ``accept_unknown_host_keys``
http(s)    login / password (basic auth); extra ``headers``
gs         extra ``token`` (a key file path or ``"google_default"``), ``project``
abfs       login = account name, password = account key; extra ``sas_token``,
           ``connection_string``, ``tenant_id`` / ``client_id`` / ``client_secret``
any        extra ``storage_options``: passed to fsspec as they are (they win)
=========  ==================================================================================
"""

from __future__ import annotations

from typing import Any

from airflow_provider.core.errors import ConfigurationError

__all__ = ["register_data_connections", "storage_options_for"]

_SSH_EXTRAS = ("key_file", "private_key", "passphrase", "host_key", "known_hosts", "accept_unknown_host_keys")


def storage_options_for(conn_id: str, scheme: str) -> dict[str, Any]:
    """The fsspec options of connection ``conn_id`` for a URI of ``scheme``.

    :param conn_id: the Airflow connection id.
    :param scheme: the URI's scheme (``s3``, ``sftp``, ``http``, ``https``, ``gs``, ``abfs``, ``file``).
    :raises ConfigurationError: the connection does not exist.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from airflow_provider.core.errors import TargetError

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise ConfigurationError("connection", f"Airflow connection {conn_id!r} does not exist ({exc}).",
                                 "create it (Admin > Connections), or fix the id named on the input or "
                                 "output.") from exc
    except Exception as exc:  # Airflow's API server or secrets backend did not answer: a retry may
        raise TargetError(f"Airflow connection {conn_id!r} could not be read now ({type(exc).__name__}: {exc}); "
                          "a retry may help") from exc
    extra = connection.extra_dejson or {}
    options: dict[str, Any] = {}
    if scheme == "s3":
        key = connection.login or extra.get("aws_access_key_id")
        secret = connection.password or extra.get("aws_secret_access_key")
        if key:
            options["key"] = key
        if secret:
            options["secret"] = secret
        if extra.get("aws_session_token"):
            options["token"] = extra["aws_session_token"]
        host = connection.host or ""
        endpoint = extra.get("endpoint_url") or (host if "://" in host else None)
        if endpoint:
            options["endpoint_url"] = endpoint
        if extra.get("region_name"):
            options["client_kwargs"] = {"region_name": extra["region_name"]}
    elif scheme == "sftp":
        if connection.login:
            options["username"] = connection.login
        if connection.password:
            options["password"] = connection.password
        if connection.port:
            options["port"] = int(connection.port)
        options.update({name: extra[name] for name in _SSH_EXTRAS if extra.get(name) not in (None, "")})
        if isinstance(options.get("accept_unknown_host_keys"), str):
            options["accept_unknown_host_keys"] = options["accept_unknown_host_keys"].lower() == "true"
    elif scheme in ("http", "https"):
        if connection.login:
            import aiohttp

            options["client_kwargs"] = {"auth": aiohttp.BasicAuth(connection.login, connection.password or "")}
        if isinstance(extra.get("headers"), dict):
            options["headers"] = dict(extra["headers"])
    elif scheme == "gs":
        options.update({name: extra[name] for name in ("token", "project") if extra.get(name)})
    elif scheme == "abfs":
        if connection.login:
            options["account_name"] = connection.login
        if connection.password:
            options["account_key"] = connection.password
        options.update({name: extra[name] for name in ("sas_token", "connection_string", "tenant_id", "client_id",
                                                       "client_secret") if extra.get(name)})
    if isinstance(extra.get("storage_options"), dict):
        options.update(extra["storage_options"])
    return options


def register_data_connections() -> None:
    """Let the core resolve connection ids named on inputs and outputs, in this process."""
    from airflow_provider.core.data.credentials import register_resolver

    register_resolver(storage_options_for)
