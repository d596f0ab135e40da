"""The fields of a ``training_ssh`` connection, checked before anything connects.

:func:`ssh_target_arguments` turns a connection's host, port, login, password and extra fields into
the arguments of :class:`~airflow_provider.core.targets.ssh.SSHTarget`; an unknown or malformed
field raises :class:`~airflow_provider.core.errors.ConfigurationError` naming it and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.targets.host_sharing import HostSharing

__all__ = ["KNOWN_EXTRA_FIELDS", "ssh_target_arguments"]

_STRINGS = ("private_key", "key_file", "passphrase", "host_key", "known_hosts", "work_root", "python", "conda")
_BOOLEANS = ("accept_unknown_host_keys", "keep_failed_job_folders")
_NUMBERS = ("connect_timeout", "keepalive", "blob_cache_max_mb", "env_cache_max_count", "env_cache_max_gb",
            "kept_job_max_age_days")
_HOST_SHARING = ("gpus", "reservations_file", "queue_timeout_seconds")  # read by HostSharing.from_extra
KNOWN_EXTRA_FIELDS = frozenset((*_STRINGS, *_BOOLEANS, *_NUMBERS, *_HOST_SHARING))


def ssh_target_arguments(conn_id: str, host: str | None, port: int | None, login: str | None,
                         password: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``SSHTarget`` (``settings`` as a dict of ``SSHSettings`` fields).

    :param conn_id: the connection id, for messages.
    :param host: the connection's host.
    :param port: its port (22 when empty).
    :param login: the remote user.
    :param password: a password (used when no key is given).
    :param extra: the extra fields.
    """
    extra = {k.removeprefix("extra__training_ssh__"): v for k, v in extra.items() if v not in (None, "")}

    def fail(field: str, problem: str, fix: str) -> ConfigurationError:
        return ConfigurationError(f"connection {conn_id!r} {field}", problem, fix)

    if not host:
        raise fail("host", "is empty.", "set the SSH host's name or address.")
    unknown = sorted(set(extra) - KNOWN_EXTRA_FIELDS)
    if unknown:
        raise fail(f"extra.{unknown[0]}", "is not a field of training_ssh connections.",
                   f"remove it; known fields: {', '.join(sorted(KNOWN_EXTRA_FIELDS))}.")
    for name in _STRINGS:
        if name in extra and not isinstance(extra[name], str):
            raise fail(f"extra.{name}", f"must be a string, got {type(extra[name]).__name__}.", "write it as text.")
    for name in _BOOLEANS:
        if name in extra and isinstance(extra[name], str):
            if extra[name].lower() not in ("true", "false"):
                raise fail(f"extra.{name}", f"must be true or false, got {extra[name]!r}.", "write true or false.")
            extra[name] = extra[name].lower() == "true"
        elif name in extra and not isinstance(extra[name], bool):
            raise fail(f"extra.{name}", f"must be true or false, got {extra[name]!r}.", "write true or false.")
    for name in _NUMBERS:
        if name in extra:
            try:
                extra[name] = float(extra[name])
            except (TypeError, ValueError):
                raise fail(f"extra.{name}", f"must be a number, got {extra[name]!r}.", "write a number.") from None
            if extra[name] < 0 or (name == "connect_timeout" and extra[name] == 0):
                raise fail(f"extra.{name}", f"must be positive, got {extra[name]:g}.", "write a positive number.")
    if "private_key" in extra and "key_file" in extra:
        raise fail("extra.private_key", "and key_file are both set.", "keep one of them.")
    if not (password or "private_key" in extra or "key_file" in extra):
        raise fail("extra.key_file", "no private key and no password are set.",
                   "set key_file (a path) or private_key (the key's text), or the connection's password.")
    if extra.get("conda", "auto") not in ("auto", "rattler", "translate"):
        raise fail("extra.conda", f"is {extra['conda']!r}.", 'use "auto", "rattler" (real conda environments with '
                   'py-rattler) or "translate" (a virtual environment from PyPI).')
    if port is not None and not 0 < int(port) < 65536:
        raise fail("port", f"{port} is not a TCP port.", "use 1-65535 (22 by default).")
    _check_key(conn_id, extra)
    limits = {}
    if "blob_cache_max_mb" in extra:
        limits["blob_cache_max_bytes"] = extra["blob_cache_max_mb"] * 1024 * 1024
    if "env_cache_max_gb" in extra:
        limits["env_cache_max_bytes"] = extra["env_cache_max_gb"] * 1024 ** 3
    for name in ("env_cache_max_count", "kept_job_max_age_days"):
        if name in extra:
            limits[name] = extra[name]
    settings = {
        "host": host, "port": int(port or 22), "username": login or None, "password": password or None,
        "key_file": extra.get("key_file"), "private_key": extra.get("private_key"),
        "passphrase": extra.get("passphrase"), "host_key": extra.get("host_key"),
        "known_hosts": extra.get("known_hosts"),
        "accept_unknown_host_keys": bool(extra.get("accept_unknown_host_keys", False)),
        "connect_timeout": float(extra.get("connect_timeout", 10.0)), "keepalive": int(extra.get("keepalive", 30)),
    }
    return {"settings": settings, "work_root": extra.get("work_root", "~/.training-runs"),
            "python": extra.get("python", "python3"),
            "keep_failed_job_folders": bool(extra.get("keep_failed_job_folders", True)), "cache_limits": limits,
            "conda": extra.get("conda", "auto"),
            "host_sharing": HostSharing.from_extra(extra, f"connection {conn_id!r} extra")}


def _check_key(conn_id: str, extra: dict[str, Any]) -> None:
    """Read the private key (inline, or a readable key_file) as paramiko will; put a pasted key's
    line breaks back (a one-line form field removes them).

    :param conn_id: the connection id, for messages.
    :param extra: the checked extra fields; ``private_key`` is replaced by its rebuilt text.
    """
    from airflow_provider.core.keys import ssh_private_key

    passphrase = extra.get("passphrase")
    if "private_key" in extra:
        field = f"connection {conn_id!r} extra.private_key"
        text = extra["private_key"].strip()
        if "-----" not in text and text.startswith(("/", "~")) and not any(c.isspace() for c in text):
            raise ConfigurationError(field, f"{text!r} is a path, not a key.", "put the path in key_file instead.")
        extra["private_key"], _ = ssh_private_key(text, passphrase, field, "extra.passphrase")
    elif "key_file" in extra:
        path = Path(extra["key_file"]).expanduser()
        if path.is_file() and os.access(path, os.R_OK):  # a missing file is reported when connecting
            ssh_private_key(path.read_text(errors="replace"), passphrase, f"connection {conn_id!r} extra.key_file",
                            "extra.passphrase", f"point key_file at a private key file such as ~/.ssh/id_ed25519 "
                            f"(not {path.name}.pub), or paste the key into private_key.")
