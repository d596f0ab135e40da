"""New SQLite MLflow stores start as a copy of an empty schema MLflow made once per MLflow version.

MLflow makes a new store's schema by running every one of its migrations (~70) in turn: seconds.
The first time, this module has MLflow do exactly that (``mlflow db upgrade`` on an empty database:
the schema, no experiment) in the cache folder (:func:`~airflow_provider.core.paths.cache_dir`),
and keeps the result, named after what made it: the versions of MLflow, alembic, SQLAlchemy and
SQLite and the list of MLflow's migrations. Every later new store is a copy of it, made with
SQLite's backup API and linked into place only where no file exists: an existing store is never
replaced. MLflow then opens the copy as it opens any store: it checks the schema's revision, and
creates the default experiment with this store's own artifact location.

Callers hold the store's schema lock (:func:`airflow_provider.core.tracking._schema_lock`); the
cached schema is made under a lock of its own, so concurrent first uses make it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import sqlite3
import uuid
from pathlib import Path

from airflow_provider.core.paths import cache_dir

__all__ = ["create_from_cached_schema", "forget_cached_schema"]

log = logging.getLogger(__name__)

_FOLDER = "mlflow-schemas"
_PACKAGES = ("mlflow", "alembic", "sqlalchemy")


def create_from_cached_schema(database: Path) -> bool:
    """Create the SQLite store ``database`` as a copy of the cached empty schema (made first when missing).

    :param database: the store's file; its folder exists.
    :return: True when this call created ``database``; False when it exists already, or the cache
        cannot be used (no cache folder, MLflow failed to make the schema): MLflow then makes the
        schema in the store itself, as without a cache.
    """
    if database.exists():
        return False
    try:
        template = _cached_schema()
        return _copy_into_place(template, database)
    except Exception as exc:  # any failure: MLflow makes the schema in the store itself, the slow way
        log.warning("Could not use a cached MLflow schema for %s (%s); MLflow creates it", database, exc)
        return False


def forget_cached_schema() -> None:
    """Remove the cached schema of this MLflow version (when MLflow refused a store copied from it)."""
    with contextlib.suppress(OSError):
        _schema_path().unlink()


def _schema_path() -> Path:
    versions = [f"{name}={importlib.metadata.version(name)}" for name in _PACKAGES]
    versions.append(f"sqlite={sqlite3.sqlite_version}")
    import mlflow

    migrations = Path(mlflow.__file__).parent / "store" / "db_migrations" / "versions"
    versions += sorted(path.name for path in migrations.glob("*.py"))
    key = hashlib.sha256("\n".join(versions).encode()).hexdigest()[:16]
    return cache_dir() / _FOLDER / f"mlflow-{importlib.metadata.version('mlflow')}-{key}.db"


def _cached_schema() -> Path:
    """The cached empty schema of this MLflow version; made (by MLflow) when missing."""
    template = _schema_path()
    if template.is_file():
        return template
    from filelock import FileLock

    template.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with FileLock(str(template.with_name(template.name + ".lock"))):
        if not template.is_file():
            tmp = template.with_name(f".{template.name}.{uuid.uuid4().hex}.tmp")
            try:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                _let_mlflow_make_the_schema(tmp)
                _check_schema(tmp)
                os.replace(tmp, template)
            finally:
                tmp.unlink(missing_ok=True)
    return template


def _let_mlflow_make_the_schema(database: Path) -> None:
    """``mlflow db upgrade sqlite:///<database>`` in this process: on an empty database, MLflow's
    command creates its initial tables and runs every migration (and creates no experiment)."""
    from mlflow.db import upgrade

    assert upgrade.callback is not None
    upgrade.callback(f"sqlite:///{database}")


def _check_schema(database: Path) -> None:
    """Refuse a file that is not a migrated MLflow schema holding no data."""
    with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as connection:
        revisions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = connection.execute("SELECT COUNT(*) FROM experiments").fetchone()
    if len(revisions) != 1 or experiments != (0,):
        raise RuntimeError(f"{database} is not an empty MLflow schema (revisions {revisions}, experiments "
                           f"{experiments})")


def _copy_into_place(template: Path, database: Path) -> bool:
    """Copy ``template`` to ``database`` (owner-only), unless ``database`` appears meanwhile."""
    tmp = database.with_name(f".{database.name}.{uuid.uuid4().hex}.tmp")
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        with contextlib.closing(sqlite3.connect(f"{template.as_uri()}?mode=ro", uri=True)) as source, \
                contextlib.closing(sqlite3.connect(tmp)) as target:
            source.backup(target)
        try:
            os.link(tmp, database)  # never replaces a file: a store made meanwhile is left as it is
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)
