"""The fields of a ``training_docker`` connection, checked before anything connects.

:func:`docker_target_settings` reads a connection's host, login, password and extra fields and
returns the keyword arguments of :class:`~airflow_provider.core.targets.docker.DockerTarget`. Every
extra field is checked for its name, type and format first: a wrong one raises
:class:`~airflow_provider.core.errors.ConfigurationError` whose field reads
``connection 'my_conn' extra.mem_limit`` and whose fix says what to write. TLS material given as
PEM text (rather than a path) is checked (``cryptography``), its line breaks put back when a one-line
form field removed them, and written once to a 0600 file under the state folder, named by the
SHA-256 of its content, because docker-py reads certificates from files.

The client key's field is ``tls_client_private_key``: Airflow's UI and REST API show it as ``***``
because its name holds ``private_key``. Its first name, ``tls_client_key``, is still read (Airflow
shows that one in clear: a warning says to rename it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.hooks.docker_tls import pem_file, tls_settings

__all__ = ["KNOWN_EXTRA_FIELDS", "docker_target_settings", "pem_file"]

log = logging.getLogger(__name__)
_PREFIX = "extra__training_docker__"  # how Airflow 2 forms stored the fields; still accepted
_ALIASES = {"tls_client_key": "tls_client_private_key"}
"""Former field names, still read: old name -> field."""
_BYTES = re.compile(r"^\d+(\.\d+)?([bkmg]b?)?\Z", re.IGNORECASE)
_MODES = ("ro", "rw")
_RESERVED_LABELS = ("training.run_id", "training.managed")
_JOB_ROOT = "/job"


class _Fields:
    """The connection's fields with the errors of one connection id.

    :param conn_id: the connection id, for error messages.
    :param extra: the connection's extra fields (empty values already dropped, former names renamed).
    :param written: the name each field was written under, when it was a former name.
    """

    def __init__(self, conn_id: str, extra: dict[str, Any], written: dict[str, str] | None = None) -> None:
        self.conn_id = conn_id
        self.extra = extra
        self.written = written or {}

    def name(self, key: str) -> str:
        """How the connection names the field (``extra.tls_client_key`` for the former name)."""
        key = self.written.get(key, key)
        return key if key in ("host", "login", "password") else f"extra.{key}"

    def error(self, key: str, problem: str, fix: str) -> ConfigurationError:
        return ConfigurationError(f"connection {self.conn_id!r} {self.name(key)}", problem, fix)

    def text(self, key: str, fix: str, check: Callable[[str], bool] = lambda value: True) -> str | None:
        value = self.extra.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int) or not check(str(value).strip()):
            raise self.error(key, f"{value!r} is not valid.", fix)
        return str(value).strip()


def docker_target_settings(conn_id: str | None, host: str | None, login: str | None, password: str | None,
                           extra: Mapping[str, Any], port: int | None = None) -> dict[str, Any]:
    """Check a ``training_docker`` connection and return the ``DockerTarget`` keyword arguments.

    :param conn_id: the connection id (for error messages).
    :param host: the daemon URL (``unix://``, ``tcp://``, ``https://``, ``ssh://``; empty: DOCKER_HOST or the
        local socket).
    :param login: the registry user.
    :param password: the registry password.
    :param extra: the connection's extra fields.
    :param port: the connection's port, added to a ``tcp://`` host that names none.
    :raises ConfigurationError: naming the first field at fault.
    """
    fields = _plain_extra(conn_id or "(none)", extra)
    unknown = sorted(set(fields.extra) - KNOWN_EXTRA_FIELDS)
    if unknown:
        raise fields.error(unknown[0], "is not a field of a training_docker connection.",
                           f"remove it; the fields are {', '.join(sorted(KNOWN_EXTRA_FIELDS))}.")
    tls, pem_texts = tls_settings(fields, host)
    settings = {
        "base_url": _base_url(fields, host, tls is not None, port),
        "image": fields.text("image", "write an image reference such as training-runs/python:3.11.",
                             lambda v: bool(v) and not any(c.isspace() for c in v)),
        "python": fields.text("python", "write the interpreter inside the image, e.g. python3 or /usr/bin/python3.",
                              lambda v: bool(v) and not any(c.isspace() for c in v)),
        "run_options": _run_options(fields),
        "tls": tls,
        "registry_auth": _registry_auth(fields, login, password),
        "conda": fields.text("conda", 'write "auto", "rattler" (a real conda environment in the image, installed with '
                             'py-rattler) or "translate" (a virtual environment from PyPI).',
                             lambda v: v in ("auto", "rattler", "translate")) or "auto",
        "input_cache_volume": _input_cache_volume(fields),
    }
    for name, text in pem_texts.items():  # only once every field is known to be right
        assert tls is not None
        tls[name] = pem_file(text)
    return settings


KNOWN_EXTRA_FIELDS = frozenset({
    "tls_ca_cert", "tls_client_cert", "tls_client_private_key", "tls_verify", "tls_skip_verify", "tls_hostname",
    "registry", "image",
    "python", "network", "user", "shm_size", "mem_limit", "cpus", "gpus", "volumes", "labels", "conda",
    "input_cache_volume",
})
"""Every extra field a ``training_docker`` connection may have."""


def _input_cache_volume(fields: _Fields) -> str | None:
    """The volume that keeps downloaded inputs on the daemon's host (default
    ``training-runs-inputs``); None for ``none`` (inputs are sent with every job)."""
    from airflow_provider.core.targets.docker_input_cache import DEFAULT_VOLUME, VOLUME_NAME

    value = fields.text("input_cache_volume", f'write a Docker volume name such as "{DEFAULT_VOLUME}" (letters, '
                        'digits, "_", "." or "-"), or "none" to send inputs with every job.',
                        lambda v: v.lower() == "none" or bool(VOLUME_NAME.match(v)))
    if value is not None and value.lower() == "none":
        return None
    return value or DEFAULT_VOLUME


def _plain_extra(conn_id: str, extra: Mapping[str, Any]) -> _Fields:
    """The extra fields without Airflow's old ``extra__<type>__`` prefix, without empty values and
    with former names (:data:`_ALIASES`) replaced by the fields' names."""
    plain: dict[str, Any] = {}
    for key, value in extra.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        plain[key[len(_PREFIX):] if key.startswith(_PREFIX) else key] = value
    written: dict[str, str] = {}
    for former, name in _ALIASES.items():
        if former not in plain:
            continue
        if name in plain and plain[name] != plain[former]:
            raise ConfigurationError(f"connection {conn_id!r} extra.{former}", f"and {name} are both set.",
                                     f"keep only {name}.")
        log.warning("Connection %r: extra field %s is shown in clear by Airflow's UI and REST API; rename it %s "
                    "(Airflow hides that name).", conn_id, former, name)
        plain[name] = plain.pop(former)
        written[name] = former
    return _Fields(conn_id, plain, written)


def _base_url(fields: _Fields, host: str | None, tls: bool, port: int | None) -> str | None:
    url = (host or "").strip()
    if not url:
        if tls:
            raise fields.error("host", "is empty but TLS fields are set.",
                               "write the daemon URL, e.g. tcp://127.0.0.1:2376.")
        return None
    if "://" not in url:
        url = f"tcp://{url}"
    scheme = url.split("://", 1)[0]
    if scheme not in ("unix", "tcp", "http", "https", "ssh"):
        raise fields.error("host", f"{host!r} is not a Docker daemon URL.",
                           "write unix:///var/run/docker.sock, tcp://HOST:2376 or ssh://USER@HOST.")
    if tls and scheme not in ("tcp", "https"):
        raise fields.error("host", f"{host!r} cannot be reached over TLS.",
                           "write tcp://HOST:2376 (or https://HOST:2376), or remove the tls_* fields.")
    if port and scheme in ("tcp", "http", "https") and not re.search(r":\d+/?\Z", url.split("://", 1)[1]):
        url = f"{url.rstrip('/')}:{port}"
    return url


def _registry_auth(fields: _Fields, login: str | None, password: str | None) -> dict[str, str] | None:
    registry = fields.text("registry", "write the registry's host[:port], e.g. registry.example.com:5000.",
                           lambda v: bool(v) and not any(c.isspace() for c in v))
    if not login and not password:
        return None
    if not login or not password:
        raise fields.error("login" if not login else "password", "is empty while the other registry field is set.",
                           "set both the registry user (login) and password, or neither.")
    auth = {"username": login, "password": password}
    if registry:
        auth["serveraddress"] = registry
    return auth


def _run_options(fields: _Fields) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in ("network", "user"):
        value = fields.text(key, f"write the {key} as text (user: NAME, UID or UID:GID).",
                            lambda v: bool(v) and not any(c.isspace() for c in v))
        if value is not None:
            options[key] = value
    for key in ("shm_size", "mem_limit"):
        value = fields.extra.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not ((isinstance(value, int) and value > 0)
                                           or (isinstance(value, str) and _BYTES.match(value.strip()))):
            raise fields.error(key, f"{value!r} is not a size.",
                               "write a number of bytes or a size with a unit b, k, m or g, e.g. 512m or 2g.")
        options[key] = value.strip() if isinstance(value, str) else value
    cpus = _number(fields, "cpus", "write the number of CPUs, a number above 0 such as 2 or 0.5.")
    if cpus is not None:
        if cpus <= 0:
            raise fields.error("cpus", f"{cpus!r} is not above 0.", "write a number above 0 such as 2 or 0.5.")
        options["nano_cpus"] = int(cpus * 1e9)
    gpus = _gpus(fields)
    if gpus:
        options["device_requests"] = [{"count": gpus, "capabilities": [["gpu"]]}]
    volumes = _volumes(fields)
    if volumes:
        options["volumes"] = volumes
    labels = _labels(fields)
    if labels:
        options["labels"] = labels
    return options


def _number(fields: _Fields, key: str, fix: str) -> float | None:
    value = fields.extra.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise fields.error(key, f"{value!r} is not a number.", fix)


def _gpus(fields: _Fields) -> int:
    value = fields.extra.get("gpus")
    fix = "write a number of GPUs (1, 2, ...), 0 for none, or -1 / \"all\" for every GPU."
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().lower() == "all":
        return -1
    try:
        count = int(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        count = None
    if isinstance(value, bool | float) or count is None or count < -1:
        raise fields.error("gpus", f"{value!r} is not a GPU count.", fix)
    return count


def _volumes(fields: _Fields) -> list[str]:
    value = fields.extra.get("volumes")
    fix = ('write a list of "/host/path:/container/path[:ro|rw]" strings, or {"/host/path": {"bind": '
           '"/container/path", "mode": "ro"}}; both paths absolute, not under /job.')
    if value is None:
        return []
    if isinstance(value, str):
        value = [part for part in re.split(r"[,\n]", value) if part.strip()]
    entries: list[tuple[Any, Any, Any]] = []
    if isinstance(value, Mapping):
        for source, spec in value.items():
            if not isinstance(spec, Mapping) or set(spec) - {"bind", "mode"}:
                raise fields.error("volumes", f"{source!r}: {spec!r} is not {{'bind': ..., 'mode': ...}}.", fix)
            entries.append((source, spec.get("bind"), spec.get("mode", "rw")))
    elif isinstance(value, list):
        for item in value:
            parts = item.strip().split(":") if isinstance(item, str) else []
            if len(parts) not in (2, 3):
                raise fields.error("volumes", f"{item!r} is not host:container[:ro|rw].", fix)
            entries.append((parts[0], parts[1], parts[2] if len(parts) == 3 else "rw"))
    else:
        raise fields.error("volumes", f"expected a list or a mapping, got {type(value).__name__}.", fix)
    volumes = []
    for source, bind, mode in entries:
        for path in (source, bind):
            if not isinstance(path, str) or not PurePosixPath(path).is_absolute():
                raise fields.error("volumes", f"{path!r} is not an absolute path.", fix)
        if PurePosixPath(bind) == PurePosixPath(_JOB_ROOT) or PurePosixPath(_JOB_ROOT) in PurePosixPath(bind).parents:
            raise fields.error("volumes", f"{bind!r} would hide the job folder {_JOB_ROOT}.", fix)
        if mode not in _MODES:
            raise fields.error("volumes", f"mode {mode!r} of {source!r} is neither ro nor rw.", fix)
        volumes.append(f"{source}:{bind}:{mode}")
    return volumes


def _labels(fields: _Fields) -> dict[str, str]:
    value = fields.extra.get("labels")
    fix = 'write a mapping of text to text, e.g. {"team": "vision"}.'
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k and isinstance(v, str)
                                                 for k, v in value.items()):
        raise fields.error("labels", f"{value!r} is not a mapping of text to text.", fix)
    reserved = sorted(set(value) & set(_RESERVED_LABELS))
    if reserved:
        raise fields.error("labels", f"{reserved[0]!r} is set by the provider itself.", "use another label name.")
    return dict(value)
