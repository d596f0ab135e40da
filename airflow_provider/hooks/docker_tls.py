"""The TLS fields of a ``training_docker`` connection: CA certificate, client certificate and key.

Each is the absolute path of a PEM file or the PEM text itself. Text is checked with
``cryptography`` (a certificate where a certificate goes, an unencrypted private key where the key
goes, the key the client certificate was issued for) and its line breaks are put back when a
one-line form field removed them; a readable file is checked the same way. Text is then written
once to a 0600 file (:func:`pem_file`), because docker-py reads certificates from files.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider.core.keys import certificate_matches_key, tls_certificates, tls_private_key

if TYPE_CHECKING:
    from airflow_provider.hooks.docker_options import _Fields

__all__ = ["pem_file", "tls_settings"]

_TLS_FILES = {"tls_ca_cert": ("ca_cert", "CERTIFICATE"), "tls_client_cert": ("client_cert", "CERTIFICATE"),
              "tls_client_private_key": ("client_key", "PRIVATE KEY")}
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\Z|^\[?[0-9A-Fa-f:.]+\]?\Z")


def tls_settings(fields: _Fields, host: str | None) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The ``tls`` argument of ``DockerTarget`` (None without TLS) and the PEM texts still to write
    to files, by ``tls`` key.

    :param fields: the connection's checked extra fields.
    :param host: the daemon URL (``https://`` implies TLS).
    :raises ConfigurationError: naming the first TLS field at fault.
    """
    tls: dict[str, Any] = {}
    pem_texts: dict[str, str] = {}
    contents: dict[str, Any] = {}  # what each given field holds: the certificate text, or the key
    for key, (name, kind) in _TLS_FILES.items():
        value = fields.extra.get(key)
        if value is None:
            continue
        fix = (f"write the absolute path of a PEM file, or paste the PEM text itself (-----BEGIN {kind}----- ... "
               f"-----END {kind}-----).")
        if not isinstance(value, str):
            raise fields.error(key, f"expected a path or PEM text, got {type(value).__name__}.", fix)
        value = value.strip()
        if "-----BEGIN" in value or "-----END" in value:
            contents[key] = _check(fields, key, value, fix)
            tls[name] = pem_texts[name] = contents[key] if kind == "CERTIFICATE" else contents[key][0]
        elif not Path(value).expanduser().is_absolute() or "\n" in value:
            shown = "it" if kind == "PRIVATE KEY" else repr(value[:80])  # never echo a key into a log
            raise fields.error(key, f"{shown} is neither an absolute path nor PEM text.", fix)
        else:
            path = Path(value).expanduser()
            if path.is_file() and os.access(path, os.R_OK):  # a missing file is reported when connecting
                contents[key] = _check(fields, key, path.read_text(errors="replace"),
                                       f"point {fields.name(key).removeprefix('extra.')} at a PEM {kind.lower()} "
                                       f"file ({path} is not one), or paste the PEM text itself.")
            tls[name] = str(path)
    _check_pair(fields, contents)
    verify = _boolean(fields, "tls_verify")
    if _boolean(fields, "tls_skip_verify"):  # the form's switch (off by default: the certificate is checked)
        if verify:
            raise fields.error("tls_skip_verify", "is on while tls_verify is true.",
                               "keep one of them: turn tls_skip_verify off, or remove tls_verify.")
        verify = False
    hostname = fields.text("tls_hostname", "write the host name the daemon's certificate carries, e.g. "
                           "docker.example.com (no scheme, no port).", lambda v: bool(_HOSTNAME.match(v)))
    if not tls and verify is None and hostname is None and not (host or "").strip().startswith("https://"):
        return None, {}
    if bool(tls.get("client_cert")) != bool(tls.get("client_key")):
        missing = "tls_client_private_key" if tls.get("client_cert") else "tls_client_cert"
        raise fields.error(missing, "is missing: a client certificate and its key go together.",
                           "set both tls_client_cert and tls_client_private_key, or neither.")
    tls["verify"] = True if verify is None else verify
    if hostname is not None:
        tls["assert_hostname"] = hostname
    return tls, pem_texts


def pem_file(content: str) -> str:
    """Write PEM text once to a 0600 file named by its SHA-256 and return the file's path.

    :param content: the PEM text.
    """
    from airflow_provider.core.paths import state_dir

    data = (content.strip() + "\n").encode()
    folder = state_dir() / "docker-tls"
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / hashlib.sha256(data).hexdigest()
    if not (path.is_file() and path.read_bytes() == data):
        temporary = folder / f".{path.name}.{os.getpid()}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    return str(path)


def _check(fields: _Fields, key: str, text: str, fix: str) -> Any:
    """The certificates' text, or ``(text, key)`` for the private key, both with line breaks in place."""
    field = f"connection {fields.conn_id!r} {fields.name(key)}"
    if key == "tls_client_private_key":
        return tls_private_key(text, field, fix)
    return tls_certificates(text, field, fix)


def _check_pair(fields: _Fields, contents: dict[str, Any]) -> None:
    """The client key must be the one the client certificate was issued for."""
    if ("tls_client_cert" in contents and "tls_client_private_key" in contents
            and not certificate_matches_key(contents["tls_client_cert"], contents["tls_client_private_key"][1])):
        raise fields.error("tls_client_private_key", "is not the key of tls_client_cert (their public keys "
                           "differ).", "give the key the client certificate was issued for, or its certificate.")


def _boolean(fields: _Fields, key: str) -> bool | None:
    value = fields.extra.get(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise fields.error(key, f"{value!r} is not a boolean.", "write true or false.")
