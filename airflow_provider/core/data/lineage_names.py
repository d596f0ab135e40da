"""Names of data for lineage systems, computed from the URI alone (no network call).

OpenLineage's naming rules (spec ``Naming.md``): namespace ``scheme://authority``, name the path.
S3 ``s3://{bucket}`` + key; GCS ``gs://{bucket}`` + key; Azure ``abfss://{container}@{account}.dfs.core.windows.net``
+ path (``abfs://{container}`` when the account is not in the URI); a local file ``file`` + path;
SFTP ``file://{host}:{port}`` + path (what Airflow's SFTP operator emits); HTTP ``{scheme}://{host}[:port]``
+ path; MLflow URIs ``mlflow`` + ``runs:/...`` / ``models:/...`` (not in the spec).

Airflow assets take URIs: a local path becomes ``file://{path}``.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

__all__ = ["asset_uri", "openlineage_name"]


def openlineage_name(uri: str) -> tuple[str, str]:
    """``(namespace, name)`` of ``uri`` under OpenLineage's naming rules.

    :param uri: a local path or a data URI.
    """
    if uri.startswith(("runs:/", "models:/")):
        return "mlflow", uri
    split = urlsplit(uri)
    scheme = split.scheme.lower()
    if scheme in ("", "file"):
        path = split.path if scheme else os.path.abspath(uri)
        return "file", path.rstrip("/") or "/"
    path = split.path.lstrip("/").rstrip("/")
    if scheme in ("s3", "s3a", "gs", "gcs"):
        return f"{'gs' if scheme in ('gs', 'gcs') else 's3'}://{split.netloc}", path
    if scheme in ("abfs", "abfss", "az"):
        if "@" in split.netloc:
            return f"abfss://{split.netloc}", path
        return f"abfs://{split.netloc}", path
    if scheme in ("sftp", "ssh"):
        return f"file://{split.hostname}:{split.port or 22}", "/" + path
    if scheme in ("http", "https"):
        return f"{scheme}://{split.netloc.rsplit('@', 1)[-1]}", "/" + path
    return f"{scheme}://{split.netloc}", path


def asset_uri(uri: str) -> str:
    """The Airflow asset URI of ``uri``: a local path as ``file://``, user info and query dropped.

    :param uri: a local path or a data URI.
    """
    if uri.startswith(("runs:/", "models:/")):
        return uri
    split = urlsplit(uri)
    if not split.scheme:
        return f"file://{os.path.abspath(uri)}"
    split = split._replace(query="", fragment="")  # a signed URL's signature is no part of the data's name
    if "@" in split.netloc and split.scheme.lower() not in ("abfs", "abfss", "az"):
        split = split._replace(netloc=split.netloc.rsplit("@", 1)[-1])
    return split.geturl()
