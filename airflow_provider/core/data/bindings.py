"""``Input`` and ``Output``: data bound to a run, described once, valid on every target.

An input names where the data is (a URI read through fsspec, or MLflow's ``runs:/`` and
``models:/``) and how the run gets it:

==========  ============================================================================
mode        what the script sees
==========  ============================================================================
download    a local folder (or file) on the target, copied before the script starts;
            content-addressed and cached, so a second run sends only what changed
direct      the URI itself: the script reads it; a connection's credentials reach it as
            its storage's standard variables (:mod:`.job_credentials`)
mount       a read-only path the target already sees (a Docker daemon host's folder,
            the Slurm cluster's filesystem); refused on a target that cannot mount
==========  ============================================================================

An output is a folder the script writes (``upload``: copied to its URI when the run ends, on
failure and cancel too) or a URI passed through (``direct``). ``{run_id}`` (Azure ML's
``{run-id}``) and ``{name}`` (``{output-name}``) in an output's URI become the run's id and the
output's name.

Credentials never travel in these objects' recorded form: ``connection`` names an Airflow
connection (resolved by the Airflow layer, see :mod:`airflow_provider.core.data.credentials`),
``storage_options`` are fsspec options held in memory only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from airflow_provider.core.errors import ConfigurationError

__all__ = ["INPUT_MODES", "OUTPUT_MODES", "Input", "Output", "is_binding_name", "recordable_uri", "validate_bindings"]

INPUT_MODES = ("download", "direct", "mount")
OUTPUT_MODES = ("upload", "direct")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")  # ${{inputs.<name>}} must also be a Jinja name
_OUTPUT_PLACEHOLDERS = re.compile(r"\{(run_id|run-id|name|output-name)\}")
_SECRET_QUERY_KEY = re.compile(r"(sig|signature|token|key|credential|password|secret|sas)", re.IGNORECASE)


def recordable_uri(uri: str) -> str:
    """``uri`` as it may be recorded (tags, lineage, logs): a password in it and the values of query
    parameters that carry credentials (SAS ``sig``, ``X-Amz-Signature``, tokens) replaced by ``***``.

    :param uri: a data URI.
    """
    from urllib.parse import parse_qsl, urlencode, urlsplit

    split = urlsplit(uri)
    if not split.scheme or split.scheme in ("runs", "models"):
        return uri
    netloc = split.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
    query = split.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_QUERY_KEY.search(k) else v) for k, v in pairs], safe="*")
    return split._replace(netloc=netloc, query=query).geturl()


def _uri_text(field_name: str, uri: object) -> str:
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigurationError(f"{field_name}.uri", f"must be a non-empty string or path, got {uri!r}.",
                                 'pass a URI such as "s3://bucket/prefix/", "sftp://host/data" or a local path.')
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@]*:[^/@]*@", uri.strip()):
        raise ConfigurationError(f"{field_name}.uri", f"{recordable_uri(uri.strip())!r} holds a password; URIs are "
                                 "recorded (tags, lineage, the task's inlets and outlets).",
                                 "name an Airflow connection with the credentials (connection=...), or pass them in "
                                 "storage_options.")
    return uri.strip()


def _check_options(field_name: str, connection: object, storage_options: object) -> None:
    if connection is not None and (not isinstance(connection, str) or not connection.strip()):
        raise ConfigurationError(f"{field_name}.connection", f"must be an Airflow connection id, got {connection!r}.",
                                 'pass connection="my_s3", or leave it None for the default credentials.')
    if storage_options is not None and not isinstance(storage_options, dict):
        raise ConfigurationError(f"{field_name}.storage_options",
                                 f"must be a dict of fsspec options, got {type(storage_options).__name__}.",
                                 'pass {"endpoint_url": "..."} or leave it None.')


@dataclass
class Input:
    """Data a run reads (Azure ML's ``Input`` / v1's ``as_named_input(...).as_download()``).

    :param uri: a local path, ``file://``, ``sftp://``, ``http(s)://``, ``s3://``, ``gs://``,
        ``abfs://`` (their fsspec packages installed), ``runs:/<run id>/<path>`` or
        ``models:/<name>@<alias>`` / ``models:/<name>/<version>``.
    :param mode: ``download`` (default), ``direct`` or ``mount``.
    :param connection: the Airflow connection with the credentials (never written anywhere).
    :param storage_options: fsspec options (credentials, ``endpoint_url``...), held in memory only.
    :param max_size_mb: refuse the input when it is larger (``download`` mode), before it is copied.
    """

    template_fields: ClassVar[tuple[str, ...]] = ("uri", "connection")
    """Rendered by Airflow when the input is given to an operator (``{{ ds }}`` partitions)."""

    uri: str | os.PathLike[str]
    mode: str = "download"
    connection: str | None = None
    storage_options: dict[str, Any] | None = field(default=None, repr=False)
    max_size_mb: float | None = None

    def validate(self, field_name: str) -> None:
        """Check the fields (not the data: that is checked when the run is staged).

        :param field_name: how messages name this input, e.g. ``ScriptRunConfig.inputs['train']``.
        :raises ConfigurationError: naming the bad field and the fix.
        """
        self.uri = _uri_text(field_name, self.uri)
        if self.mode not in INPUT_MODES:
            raise ConfigurationError(f"{field_name}.mode",
                                     f"must be one of {', '.join(INPUT_MODES)}, got {self.mode!r}.",
                                     'use "download" to copy the data to the target before the script starts.')
        _check_options(field_name, self.connection, self.storage_options)
        limit = self.max_size_mb
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0):
            raise ConfigurationError(f"{field_name}.max_size_mb", f"must be a positive number, got {limit!r}.",
                                     "pass a size in megabytes, or None for no limit.")

    def to_record(self) -> dict[str, Any]:
        """What may be recorded (tags, job folder, XCom): never the storage options."""
        return {"uri": recordable_uri(str(self.uri)), "mode": self.mode, "connection": self.connection}


@dataclass
class Output:
    """A folder a run writes and where it goes (Azure ML's ``Output`` / v1's ``OutputFileDatasetConfig``).

    :param uri: where the folder goes: a local path or a URI fsspec writes to (``{run_id}`` and
        ``{name}`` are filled in).
    :param mode: ``upload`` (default: the script writes a local folder, copied to ``uri`` when the
        run ends, whatever its ending) or ``direct`` (the URI is passed through).
    :param connection: the Airflow connection with the credentials.
    :param storage_options: fsspec options, held in memory only.
    :param overwrite: replace what another run wrote at ``uri`` (refused by default).
    """

    template_fields: ClassVar[tuple[str, ...]] = ("uri", "connection")
    """Rendered by Airflow when the output is given to an operator."""

    uri: str | os.PathLike[str]
    mode: str = "upload"
    connection: str | None = None
    storage_options: dict[str, Any] | None = field(default=None, repr=False)
    overwrite: bool = False

    def validate(self, field_name: str) -> None:
        """Check the fields.

        :param field_name: how messages name this output.
        :raises ConfigurationError: naming the bad field and the fix.
        """
        self.uri = _uri_text(field_name, self.uri)
        if self.mode not in OUTPUT_MODES:
            raise ConfigurationError(f"{field_name}.mode",
                                     f"must be one of {', '.join(OUTPUT_MODES)}, got {self.mode!r}.",
                                     'use "upload" to copy what the script writes to the URI when the run ends.')
        _check_options(field_name, self.connection, self.storage_options)
        if not isinstance(self.overwrite, bool):
            raise ConfigurationError(f"{field_name}.overwrite", f"must be True or False, got {self.overwrite!r}.",
                                     "set overwrite=True to replace what another run wrote there.")
        if str(self.uri).startswith(("runs:/", "models:/")):
            raise ConfigurationError(f"{field_name}.uri", f"{self.uri!r} is read-only: MLflow's runs:/ and models:/ "
                                     "name what a run already logged.",
                                     "write models to ./outputs (they become the run's artifacts), or give a storage "
                                     "URI such as s3://bucket/models/{run_id}/.")

    def resolved_uri(self, run_id: str, name: str) -> str:
        """The URI with ``{run_id}`` / ``{run-id}`` and ``{name}`` / ``{output-name}`` filled in.

        :param run_id: the run's id.
        :param name: the output's name.
        """
        values = {"run_id": run_id, "run-id": run_id, "name": name, "output-name": name}
        return _OUTPUT_PLACEHOLDERS.sub(lambda match: values[match.group(1)], str(self.uri))

    def to_record(self) -> dict[str, Any]:
        """What may be recorded: never the storage options."""
        return {"uri": recordable_uri(str(self.uri)), "mode": self.mode, "connection": self.connection,
                "overwrite": self.overwrite}


def is_binding_name(name: str) -> bool:
    """Whether ``name`` is an input's or output's name: a letter or ``_``, then letters, digits or
    ``_``, at most 64 (a Jinja name, and a folder name that cannot leave its parent).

    :param name: the name.
    """
    return _NAME.match(name) is not None


def validate_bindings(owner: str, inputs: object, outputs: object) -> tuple[dict[str, Input], dict[str, Output]]:
    """Check a run's ``inputs`` and ``outputs`` mappings.

    :param owner: how messages name the owner, e.g. ``ScriptRunConfig``.
    :param inputs: ``{name: Input}`` (a plain URI string is taken as a download input).
    :param outputs: ``{name: Output}`` (a plain URI string is taken as an upload output).
    :raises ConfigurationError: naming the bad entry.
    """
    checked_inputs: dict[str, Input] = {}
    checked_outputs: dict[str, Output] = {}
    for kind, given, checked, cls in (("inputs", inputs, checked_inputs, Input),
                                      ("outputs", outputs, checked_outputs, Output)):
        if given is None:
            continue
        if not isinstance(given, dict):
            raise ConfigurationError(f"{owner}.{kind}", f"must be a dict of name -> {cls.__name__}, got "
                                     f"{type(given).__name__}.", f'pass {{"train": {cls.__name__}("s3://bucket/data/")}}.')
        for name, binding in given.items():
            where = f"{owner}.{kind}[{name!r}]"
            if not isinstance(name, str) or not is_binding_name(name):
                raise ConfigurationError(where, "the name must start with a letter or '_' and hold only letters, "
                                         "digits or '_' (at most 64): it is used as ${{inputs.<name>}}.",
                                         'use a name such as "train" or "train_data".')
            if isinstance(binding, (str, os.PathLike)):
                binding = cls(binding)
            if not isinstance(binding, cls):
                raise ConfigurationError(where, f"must be an {cls.__name__}, got {type(binding).__name__}.",
                                         f'pass {cls.__name__}("s3://bucket/data/").')
            binding.validate(where)
            checked[name] = binding  # type: ignore[assignment]
    both = sorted(set(checked_inputs) & set(checked_outputs))
    if both:
        raise ConfigurationError(f"{owner}.outputs[{both[0]!r}]", "an input has the same name.",
                                 "give inputs and outputs different names (input_datasets / output_datasets share "
                                 "the run's variables).")
    return checked_inputs, checked_outputs
