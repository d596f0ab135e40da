"""One SSH connection (paramiko) with strict host keys, clear errors and reconnection.

Errors: paramiko's and the socket's exceptions never leave this module: connecting maps them onto
the error tree (a refused or unknown host key, a failed login or an unreadable key file is a
:class:`TargetConfigurationError`; an unreachable host a :class:`TargetError`), and every use goes
through :meth:`SSHConnection.retrying`, which reconnects and, when that keeps failing, raises a
:class:`TargetError` (retryable) with the last error as its cause.

Host keys: a key pinned in the configuration wins; else a known_hosts file (the given one, or
``~/.ssh/known_hosts``). An unknown key is refused unless ``accept_unknown_host_keys`` is set, and a
changed key is always refused; both errors show the key's fingerprint and how to pin it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import paramiko

from airflow_provider.core.errors import TargetConfigurationError, TargetError

__all__ = ["SSHConnection", "SSHSettings", "fingerprint"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRYABLE = (paramiko.SSHException, EOFError, OSError, socket.timeout)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class SSHSettings:
    """Where and how to connect.

    :param host: host name or address.
    :param port: SSH port.
    :param username: the remote user (default: this process's user).
    :param key_file: path of a private key file.
    :param private_key: an inline private key (PEM / OpenSSH text).
    :param passphrase: the private key's passphrase.
    :param password: a password, when no key is given.
    :param host_key: the pinned host key, ``"ssh-ed25519 AAAA..."`` (as in known_hosts, without the host).
    :param known_hosts: a known_hosts file (default ``~/.ssh/known_hosts``).
    :param accept_unknown_host_keys: accept a host whose key is unknown (never a changed one).
    :param connect_timeout: seconds to connect and authenticate.
    :param keepalive: seconds between keepalive packets (0: none).
    """

    host: str
    port: int = 22
    username: str | None = None
    key_file: str | None = None
    private_key: str | None = None
    passphrase: str | None = None
    password: str | None = None
    host_key: str | None = None
    known_hosts: str | None = None
    accept_unknown_host_keys: bool = False
    connect_timeout: float = 10.0
    keepalive: int = 30

    @property
    def address(self) -> str:
        """``host:port`` for messages."""
        return f"{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The host's name in known_hosts files."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, settings: SSHSettings) -> None:
        self.settings = settings

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if self.settings.accept_unknown_host_keys:
            log.warning("Accepting the unknown host key of %s: %s %s", self.settings.address, key.get_name(),
                        fingerprint(key))
            client.get_host_keys().add(hostname, key.get_name(), key)
            return
        raise TargetConfigurationError(
            f"the host key of {self.settings.address} is unknown: {key.get_name()} {fingerprint(key)}. "
            f"If that is the host's key, pin it: set the connection's extra host_key to "
            f"'{key.get_name()} {key.get_base64()}', or add it to known_hosts "
            f"(ssh-keyscan -p {self.settings.port} {self.settings.host}); or opt in with "
            "accept_unknown_host_keys=true."
        )


class SSHConnection:
    """A lazily opened, automatically reopened SSH connection.

    :param settings: where and how to connect.
    """

    def __init__(self, settings: SSHSettings) -> None:
        self.settings = settings
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # ------------------------------------------------------------------ connecting
    @property
    def client(self) -> paramiko.SSHClient:
        """The connected client (connects, or reconnects after a drop)."""
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self.close()
        self._client = self._connect()
        return self._client

    @property
    def sftp(self) -> paramiko.SFTPClient:
        """An SFTP session on the connection."""
        client = self.client
        if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:  # type: ignore[union-attr]
            self._sftp = client.open_sftp()
        return self._sftp

    def close(self) -> None:
        """Close the connection (the next use reconnects)."""
        for closeable in (self._sftp, self._client):
            if closeable is not None:
                try:
                    closeable.close()
                except Exception:  # already broken
                    log.debug("closing an SSH connection failed", exc_info=True)
        self._sftp = None
        self._client = None

    def _connect(self) -> paramiko.SSHClient:
        settings = self.settings
        client = paramiko.SSHClient()
        if settings.host_key:
            client.get_host_keys().add(settings.known_hosts_name, *_parse_host_key(settings.host_key))
        else:
            known_hosts = settings.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
            if settings.known_hosts and not os.path.exists(known_hosts):
                raise TargetConfigurationError(f"known_hosts file {known_hosts!r} does not exist: fix the connection's "
                                               "known_hosts field, or pin the key with host_key.")
            if os.path.exists(known_hosts):
                client.load_host_keys(known_hosts)
        client.set_missing_host_key_policy(_RefuseUnknown(settings))
        try:
            client.connect(
                settings.host, settings.port, username=settings.username or _local_user(), pkey=_private_key(settings),
                password=settings.password, timeout=settings.connect_timeout, banner_timeout=settings.connect_timeout,
                auth_timeout=settings.connect_timeout, allow_agent=False,
                look_for_keys=not (settings.key_file or settings.private_key or settings.password),
            )
        except TargetError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise TargetConfigurationError(
                f"the host key of {settings.address} CHANGED: it now offers {exc.key.get_name()} "
                f"{fingerprint(exc.key)}, but {fingerprint(exc.expected_key)} is pinned or in known_hosts. Someone may "
                "be intercepting the connection; if the host was reinstalled, pin the new key (connection extra "
                f"host_key = '{exc.key.get_name()} {exc.key.get_base64()}') or update known_hosts."
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise TargetConfigurationError(
                f"authentication as {settings.username or _local_user()!r} on {settings.address} failed ({exc}): "
                "check the connection's login and its private key (key_file / private_key, passphrase) or password."
            ) from exc
        except (OSError, paramiko.SSHException) as exc:
            client.close()
            raise TargetError(
                f"cannot reach the SSH host {settings.address} ({type(exc).__name__}: {exc}): check the host and "
                f"port, that sshd runs there and the network allows it (connect_timeout={settings.connect_timeout:g}s)."
            ) from exc
        transport = client.get_transport()
        if transport is not None and settings.keepalive:
            transport.set_keepalive(settings.keepalive)
        return client

    # ------------------------------------------------------------------ using
    def retrying(self, action: Callable[[], T], attempts: int = 4, what: str = "an SSH call") -> T:
        """Run ``action``; when the connection drops, reconnect with backoff and run it again.

        :param action: an idempotent call that uses this connection.
        :param attempts: how many times to try.
        :param what: what ``action`` does, for messages.
        """
        for attempt in range(1, attempts + 1):
            try:
                return action()
            except TargetError:
                raise
            except _RETRYABLE as exc:
                self.close()
                if attempt == attempts:
                    raise TargetError(f"{what} on {self.settings.address} failed {attempts} times, the last with "
                                      f"{type(exc).__name__}: {exc}") from exc
                log.warning("%s on %s failed (%s: %s); reconnecting (attempt %d of %d)", what, self.settings.address,
                            type(exc).__name__, exc, attempt + 1, attempts)
                time.sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")


def _parse_host_key(text: str) -> tuple[str, paramiko.PKey]:
    parts = text.split()
    if len(parts) >= 3 and not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        parts = parts[1:]  # a whole known_hosts line: drop the host names
    try:
        key_type, blob = parts[0], parts[1]
        return key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
    except Exception as exc:
        raise TargetConfigurationError(
            f"the pinned host_key {text[:60]!r} is not a public key: write it as in known_hosts, "
            "'ssh-ed25519 AAAA...' (ssh-keyscan prints it)."
        ) from exc


def _private_key(settings: SSHSettings) -> paramiko.PKey | None:
    """The key to log in with: inline, or read from key_file (either may have lost its line breaks).

    :raises ConfigurationError: the key cannot be read (naming why: no BEGIN line, encrypted without
        a passphrase, a body that is not base64, ...).
    """
    from airflow_provider.core.keys import ssh_private_key

    if settings.key_file:
        path = Path(settings.key_file).expanduser()
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError as exc:
            raise TargetConfigurationError(f"the key_file {settings.key_file!r} does not exist: fix the connection's "
                                           "key_file.") from exc
        except OSError as exc:
            raise TargetConfigurationError(f"the key_file {settings.key_file!r} cannot be read ({exc}).") from exc
        key = ssh_private_key(text, settings.passphrase, "SSHSettings.key_file", "SSHSettings.passphrase",
                              "point key_file at a private key file such as ~/.ssh/id_ed25519.")[1]
        certificate = Path(f"{path}-cert.pub")
        if certificate.is_file():  # an OpenSSH certificate next to the key, as ssh and paramiko use it
            key.load_certificate(str(certificate))
        return key
    if settings.private_key:
        return ssh_private_key(settings.private_key, settings.passphrase, "SSHSettings.private_key",
                               "SSHSettings.passphrase")[1]
    return None


def _local_user() -> str:
    import getpass

    return getpass.getuser()
