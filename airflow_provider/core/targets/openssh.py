"""Bulk transfers through the system's OpenSSH client, when this machine has one.

paramiko encrypts in Python: on a small machine that sends gigabytes (a data input, wheels), its
packetizing costs as much CPU as the receiving side's work, and both compete for the same cores.
OpenSSH's ``ssh`` does it in C. It is used for one request at a time, with the same remote agent
and the same protocol (:func:`airflow_provider.runtime.remote_agent.serve`), and only where it
authenticates exactly as the provider's connection does:

- the host key is the one the provider's own connection already verified (pinned, or from
  ``known_hosts``), written to a private temporary ``known_hosts`` file; ``StrictHostKeyChecking=yes``;
- the private key is the connection's key file, or its inline key written to a private temporary
  file; a key with a passphrase, or a password login, keeps the paramiko path;
- ``BatchMode=yes``: it never asks anything. If ``ssh`` cannot connect (exit status 255) the
  caller falls back to paramiko for the rest of the target's life.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from typing import IO, Any, Protocol

import paramiko

from airflow_provider.core.targets.ssh_connection import SSHSettings

__all__ = ["OpenSSHUnavailable", "openssh_request"]

log = logging.getLogger(__name__)
_CONNECT_FAILED = 255


class _Payload(Protocol):
    def seek(self, offset: int, whence: int = ..., /) -> int: ...
    def read(self, size: int = ..., /) -> bytes: ...


class OpenSSHUnavailable(Exception):
    """``ssh`` could not be used for this request (none here, or it could not connect): use paramiko."""


_CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
            "aes128-ctr,aes192-ctr,aes256-ctr")
"""OpenSSH's default ciphers (since 6.5), AES-GCM first: with the AES instructions every server CPU
has, 1 GB goes through ssh in 2.0 s instead of chacha20's 2.9 s here (what this stream is for)."""


def _write_payload(pipe: IO[bytes], payload: _Payload) -> None:
    """Write ``payload`` into ``pipe`` in 1 MiB pieces (measured faster here than ``os.sendfile``
    into the pipe), with the pipe's buffer raised to match (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    payload.seek(0)
    while chunk := payload.read(1 << 20):
        pipe.write(chunk)


def _usable(settings: SSHSettings) -> bool:
    return (shutil.which("ssh") is not None and bool(settings.key_file or settings.private_key)
            and not settings.passphrase)


def openssh_request(settings: SSHSettings, server_key: paramiko.PKey, username: str, command: str,
                    request: dict[str, Any], payload: _Payload, size: int, timeout: float) -> dict[str, Any]:
    """Send one agent request with its payload through ``ssh`` and return the agent's answer.

    :param settings: the connection's settings (host, port, key).
    :param server_key: the host key the provider's connection verified.
    :param username: the remote user.
    :param command: the remote command that starts the agent.
    :param request: the request's fields (``op`` included).
    :param payload: read from its start, ``size`` bytes.
    :param size: the payload's length.
    :param timeout: the longest the whole request may take, in seconds.
    :raises OpenSSHUnavailable: ``ssh`` is missing, cannot be used with these settings, or did not connect.
    """
    if not _usable(settings):
        raise OpenSSHUnavailable("no ssh client, or a login ssh cannot do without asking")
    with tempfile.TemporaryDirectory(prefix="training-ssh-") as private:
        known_hosts = os.path.join(private, "known_hosts")
        with open(known_hosts, "w") as handle:
            handle.write(f"{settings.known_hosts_name} {server_key.get_name()} {server_key.get_base64()}\n")
        key_file = os.path.expanduser(settings.key_file) if settings.key_file else os.path.join(private, "key")
        if not settings.key_file:
            descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(str(settings.private_key).strip() + "\n")
        argv = ["ssh", "-T", "-p", str(settings.port), "-l", username, "-i", key_file,
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", f"ConnectTimeout={int(settings.connect_timeout)}", "-o", "LogLevel=ERROR",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-o", f"Ciphers={_CIPHERS}",
                "-F", "/dev/null", settings.host, command]
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdin is not None and process.stdout is not None
        watchdog = threading.Timer(timeout, process.kill)  # a host that stops answering never hangs the caller
        watchdog.daemon = True
        watchdog.start()
        try:
            process.stdin.write(json.dumps({**request, "payload_size": size}).encode() + b"\n")
            _write_payload(process.stdin, payload)
            process.stdin.close()
            line = process.stdout.readline()
            process.stdout.close()
            assert process.stderr is not None
            error = process.stderr.read()
            process.wait(timeout=timeout)
        except BrokenPipeError:  # it ended before reading everything: say why
            process.kill()
            process.wait()
            line, error = b"", process.stderr.read() if process.stderr is not None else b""
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            watchdog.cancel()
    if not line:
        reason = error.decode(errors="replace").strip()[-300:]
        if process.returncode == _CONNECT_FAILED:
            raise OpenSSHUnavailable(f"ssh could not connect to {settings.address}: {reason}")
        raise OpenSSHUnavailable(f"the remote agent ended without answering (exit {process.returncode}): {reason}")
    answer: dict[str, Any] = json.loads(line)
    return answer
