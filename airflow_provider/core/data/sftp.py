"""fsspec's SFTP filesystem over the provider's own SSH connection.

fsspec's ``SFTPFileSystem`` never loads ``known_hosts`` and trusts any host key by default; here
the connection is :class:`~airflow_provider.core.targets.ssh_connection.SSHConnection`: a pinned
key or ``known_hosts``, an unknown key refused with its fingerprint, a changed one always refused,
paramiko's errors mapped onto the provider's error tree.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from fsspec.implementations.sftp import SFTPFileSystem

from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.targets.ssh_connection import SSHConnection, SSHSettings

if TYPE_CHECKING:
    from airflow_provider.core.data.locations import DataLocation

__all__ = ["strict_sftp"]

_SETTINGS = {item.name for item in fields(SSHSettings)} - {"host"}


class _StrictSFTP(SFTPFileSystem):  # type: ignore[misc]
    def __init__(self, settings: SSHSettings) -> None:
        self._settings = settings
        self._connection = SSHConnection(settings)
        super().__init__(settings.host)

    def _connect(self) -> None:
        self.client = self._connection.client
        self.ftp = self.client.open_sftp()

    def close(self) -> None:
        """Close the SFTP session and the connection."""
        self._connection.close()


def strict_sftp(location: DataLocation, options: dict[str, Any]) -> Any:
    """An SFTP filesystem for ``location`` with the connection's settings.

    :param location: an ``sftp://`` location.
    :param options: :class:`SSHSettings` fields (``username``, ``key_file``, ``private_key``,
        ``password``, ``host_key``, ``known_hosts``, ``accept_unknown_host_keys``, ``port``...).
    :raises ConfigurationError: an option that is not an SSH setting.
    """
    unknown = sorted(set(options) - _SETTINGS)
    if unknown:
        raise ConfigurationError("storage_options", f"{', '.join(unknown)} are not SSH settings for {location.uri}.",
                                 f"use only: {', '.join(sorted(_SETTINGS))}.")
    given = dict(options)
    given.setdefault("port", location.port or 22)
    if location.username:
        given["username"] = location.username
    return _StrictSFTP(SSHSettings(host=location.host, **given), skip_instance_cache=True)  # type: ignore[call-arg]
