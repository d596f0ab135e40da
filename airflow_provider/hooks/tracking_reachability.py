"""Reach an MLflow tracking store as a run would, for the tracking connection's Test button.

A tracking server is asked for its version and for one experiment, with the connection's own
credentials sent in the request (this process's environment is left alone: the Test button runs
in Airflow's API server). A database store is connected to and its MLflow tables counted; a store on
this machine's disk (SQLite, a folder) is opened read-only. Credentials in a URI are never shown.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from airflow_provider.core.environments.locking import redact
from airflow_provider.core.errors import ConfigurationError, TargetError
from airflow_provider.core.tracking import tracking_uri_scheme

__all__ = ["tracking_reachability"]

_TIMEOUT_SECONDS = 15.0


def tracking_reachability(uri: str, credentials: Mapping[str, str]) -> str:
    """Reach the store at ``uri`` and say what answered.

    :param uri: the tracking URI.
    :param credentials: MLflow's credential variables (``MLFLOW_TRACKING_USERNAME`` and
        ``MLFLOW_TRACKING_PASSWORD``, or ``MLFLOW_TRACKING_TOKEN``).
    :raises TargetError: the server cannot be reached now (a retry may help).
    :raises ConfigurationError: the server refuses the credentials, or is not an MLflow server.
    """
    scheme = tracking_uri_scheme(uri)
    if scheme in ("http", "https"):
        return _server(uri.rstrip("/"), credentials)
    if scheme in ("postgresql", "mysql", "mssql"):
        return _database(uri)
    if scheme == "sqlite":
        return _sqlite(uri)
    if scheme in ("file", ""):
        path = Path(unquote(urlsplit(uri).path) if scheme == "file" else uri)
        if not path.is_dir():
            return f"MLflow folder store {path} does not exist yet: the first run makes it."
        return f"MLflow folder store {path}: {sum(1 for p in path.iterdir() if p.name.isdigit())} experiments."
    return (f"Tracking URI {redact(uri)} ({scheme}): not tested by this button; MLflow's client reaches it with its "
            "own configuration.")


def _server(url: str, credentials: Mapping[str, str]) -> str:
    import httpx

    base = redact(url)  # what messages show
    auth: httpx.Auth | None = None
    headers = {}
    if credentials.get("MLFLOW_TRACKING_USERNAME"):
        auth = httpx.BasicAuth(credentials["MLFLOW_TRACKING_USERNAME"], credentials.get("MLFLOW_TRACKING_PASSWORD", ""))
    elif credentials.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {credentials['MLFLOW_TRACKING_TOKEN']}"
    try:
        with httpx.Client(auth=auth, headers=headers, timeout=_TIMEOUT_SECONDS, follow_redirects=True) as client:
            version = client.get(f"{url}/version")
            search = client.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 1})
    except httpx.HTTPError as exc:
        raise TargetError(f"the MLflow tracking server at {base} cannot be reached ({redact(str(exc))}).") from None
    if search.status_code in (401, 403):
        raise ConfigurationError("login/password (or token)",
                                 f"the tracking server at {base} refused them (HTTP {search.status_code}).",
                                 "set the credentials of a user of that server.")
    if search.status_code >= 500:
        raise TargetError(f"the MLflow tracking server at {base} answered HTTP {search.status_code}.")
    if search.status_code != 200 or "experiments" not in search.text:
        raise ConfigurationError("host", f"{base} does not answer as an MLflow tracking server "
                                 f"(HTTP {search.status_code} to an experiment search).",
                                 "write the server's URL, e.g. http://mlflow.example.com:5000.")
    shown = version.text.strip() if version.status_code == 200 and len(version.text) < 40 else "version unknown"
    user = credentials.get("MLFLOW_TRACKING_USERNAME")
    who = f" as {user}" if user else (" with the token" if credentials.get("MLFLOW_TRACKING_TOKEN") else "")
    return f"MLflow tracking server at {base} (MLflow {shown}) answered an experiment search{who}."


def _database(uri: str) -> str:
    import sqlalchemy

    shown = redact(uri)
    arguments = {"connect_timeout": int(_TIMEOUT_SECONDS)} if uri.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=arguments, poolclass=sqlalchemy.pool.NullPool)
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:
        raise ConfigurationError("host", f"{shown} needs a database driver this machine lacks ({exc}).",
                                 "install it where Airflow and the workers run, or name an installed driver in the "
                                 "URI (e.g. postgresql+psycopg2://).") from None
    try:
        with engine.connect() as connection:
            if not sqlalchemy.inspect(connection).has_table("experiments"):
                return f"Database {shown} answered; it has no MLflow tables yet (the first run makes them)."
            count = connection.execute(sqlalchemy.text("SELECT count(*) FROM experiments")).scalar()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc  # the driver's own message, without SQLAlchemy's footer
        first_line = (redact(str(cause)).splitlines() or [""])[0]
        raise TargetError(f"the MLflow database {shown} cannot be reached ({first_line}).") from None
    finally:
        engine.dispose()
    return f"MLflow database store {shown}: {count} experiments."


def _sqlite(uri: str) -> str:
    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    if not path or path == ":memory:":
        return f"MLflow SQLite store {uri}: in memory."
    file = Path(path.split("?", 1)[0])  # sqlite:////abs.db -> /abs.db; sqlite:///rel.db -> rel.db
    if not file.exists():
        return f"MLflow SQLite store {file} does not exist yet: the first run makes it."
    try:
        with sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=_TIMEOUT_SECONDS) as database:
            (count,) = database.execute("SELECT count(*) FROM experiments").fetchone()
    except sqlite3.Error as exc:
        raise ConfigurationError("host", f"{file} is not a readable MLflow SQLite store ({exc}).",
                                 "point the URI at an MLflow database, or at a new file.") from None
    return f"MLflow SQLite store {file}: {count} experiments."
