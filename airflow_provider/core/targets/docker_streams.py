"""The Docker target's two streams: the job folder into a container's stdin, its output back.

In: a container's command is :data:`ENTRY_PROGRAM` (``python3 -I -S -c ENTRY_PROGRAM JOB_DIR``,
stdin open). Launching streams the job folder to its stdin as :func:`record` s ending with
:data:`END`; the program unpacks them and runs :mod:`job_runner` from the folder in the same process
(no second interpreter start). No archive is copied into the container first. A record is a
header line ``KIND MODE SIZE NAME_BYTES`` (``MODE`` in octal), the path (UTF-8, relative to the job
folder) and ``SIZE`` bytes; ``KIND`` is ``d`` (a folder), ``f`` (a file), ``s`` (a symbolic link
whose target is the ``SIZE`` bytes: a data input's file in the read-only input cache, see
:mod:`~airflow_provider.core.targets.docker_input_cache`) or ``l`` (the command's launch
parameters, :func:`~airflow_provider.runtime.job_runner.encode_launch`, kept in memory: the
supervisor starts the command before it parses ``job.json``). The secrets are in the launch
parameters only: never in the container's configuration or on its disk. A stream cut short stops
the container before the job starts (the target then reports the job lost).

Out: the supervisor echoes ``driver.log`` on the container's stdout (``echo_output``) and prints
its exit line, with the log's final size, on stderr. :class:`ContainerOutput` reads both from the
attach stream of the process that launched the container, so that process never copies the driver
log out of the container.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from airflow_provider.core.targets.tar_stream import file_chunks
from airflow_provider.runtime import job_runner

__all__ = ["END", "ENTRY_PROGRAM", "ContainerOutput", "close_stream", "last_exit_line", "raw_socket", "record"]

END = b"e 0 0 0\n"
"""The record that ends the job folder stream."""

ENTRY_PROGRAM = r"""import os, sys
root, stream, launch = sys.argv[1], sys.stdin.buffer, None
def read(count):
    data = stream.read(count)
    if len(data) != count:
        sys.exit("the job folder stream was cut short (%d of %d bytes)" % (len(data), count))
    return data
os.makedirs(root, exist_ok=True)
while True:
    header = stream.readline()
    if header == b"e 0 0 0\n":
        break
    fields = header.split()
    if len(fields) != 4 or fields[0] not in (b"d", b"f", b"l", b"s"):
        sys.exit("the job folder stream was cut short or is malformed: %r" % (header[:80],))
    if fields[0] == b"l":
        launch = read(int(fields[2]))
        continue
    mode, size, relative = int(fields[1], 8), int(fields[2]), read(int(fields[3])).decode()
    if relative.startswith("/") or ".." in relative.split("/"):
        sys.exit("refusing the path %r: it leaves the job folder" % (relative,))
    path = os.path.join(root, relative)
    if fields[0] == b"s":
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(read(size).decode(), path)
        continue
    if fields[0] == b"d":
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as target:
            while size:
                chunk = read(min(size, 1 << 20))
                target.write(chunk)
                size -= len(chunk)
    os.chmod(path, mode)
sys.path.insert(0, root)
import job_runner
code = job_runner.main(["job_runner.py", root], launch)
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""
"""A container's first process (Python >= 3.9, modules loaded at start only): unpack the job folder
from stdin, then supervise the job. Its argument is the job folder. Once the supervisor has
recorded the ending, the process exits without the interpreter's teardown (the container stops
milliseconds sooner; every file is closed and both streams are flushed by then)."""


@dataclass(frozen=True)
class FileRecord:
    """A file record whose content is read from ``source`` only while it is sent (large files: data
    inputs), so a staged job folder never holds gigabytes in memory.

    :param mode: its permission bits.
    :param path: relative to the job folder.
    :param source: the file to read (a blob: it does not change).
    :param size: its size.
    """

    mode: int
    path: str
    source: Path
    size: int

    def chunks(self, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The record: its header, then the file's bytes.

        :raises OSError: the file's length is not ``size`` any more.
        """
        name = self.path.encode()
        yield b"f %o %d %d\n" % (self.mode, self.size, len(name)) + name
        yield from file_chunks(self.source, self.size, chunk)


def record(kind: str, mode: int, path: str, content: bytes = b"") -> bytes:
    """One record of the job folder stream (see the module docstring).

    :param kind: ``d`` for a folder, ``f`` for a file, ``s`` for a link (``content`` is its target),
        ``l`` for the launch parameters (path empty).
    :param mode: its permission bits.
    :param path: relative to the job folder, ``/``-separated.
    :param content: a file's bytes.
    """
    name = path.encode()
    return b"%s %o %d %d\n" % (kind.encode(), mode, len(content), len(name)) + name + content


class ContainerOutput:
    """A launched container's output, read by a thread from the attach stream: stdout is the driver
    log (the supervisor's echo of ``driver.log``), stderr the supervisor's own lines, its exit line
    (with the driver log's final size) last. Held in memory up to :attr:`limit` bytes; past that, or
    when the stream breaks, it is not used and the container's files are read instead.

    :param stream: the socket ``attach_socket`` returned (stdout and stderr, no TTY).
    """

    limit: ClassVar[int] = 64 << 20
    """Bytes of driver log kept in memory; a longer log is read from the container's files."""
    end_timeout_seconds: ClassVar[float] = 10.0
    """How long to wait for the stream's end once the container has stopped."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._driver = bytearray()
        self._supervisor = bytearray()
        self._lock = threading.Lock()
        self.usable = True
        """False once the driver log went past :attr:`limit` or the stream broke."""
        self.ended = threading.Event()
        """Set when the stream has ended (the container's main process exited, or it broke)."""
        threading.Thread(target=self._read, name="docker-output", daemon=True).start()

    def _read(self) -> None:
        from docker.utils.socket import frames_iter

        try:
            for stream_id, data in frames_iter(self._stream, tty=False):
                with self._lock:
                    if stream_id == 2:
                        self._supervisor += data
                    elif len(self._driver) + len(data) <= self.limit:
                        self._driver += data
                    else:
                        self.usable = False
                        self._driver = bytearray()
                        return
        except Exception:  # the daemon went away, or close() shut the socket: the files are read
            self.usable = False
        finally:
            self.ended.set()
            close_stream(self._stream)

    def driver_log_so_far(self) -> bytes | None:
        """The driver log as far as it has arrived (None: the stream is not used)."""
        with self._lock:
            return bytes(self._driver) if self.usable else None

    def complete_driver_log(self) -> bytes | None:
        """The whole driver log of a stopped container; None when the stream did not bring all of it."""
        if not self.ended.wait(self.end_timeout_seconds):
            return None
        line = self.exit_line()
        try:
            size = json.loads(line)["driver_log_bytes"] if line is not None else None
        except (ValueError, KeyError, TypeError):
            size = None
        with self._lock:
            return bytes(self._driver) if self.usable and size == len(self._driver) else None

    def exit_line(self) -> bytes | None:
        """The supervisor's exit line (what it wrote to ``exit.json``), once it has arrived."""
        with self._lock:
            return last_exit_line(bytes(self._supervisor))

    def close(self) -> None:
        """Stop reading (the reading thread ends)."""
        close_stream(self._stream)


def last_exit_line(output: bytes) -> bytes | None:
    """The JSON of the last exit line in a supervisor's ``output`` (None when it has none).

    :param output: what the supervisor printed.
    """
    prefix = job_runner.EXIT_LINE_PREFIX.encode()
    for line in reversed(output.splitlines()):
        if line.startswith(prefix):
            return line[len(prefix):]
    return None


def raw_socket(stream: Any) -> Any:
    """The socket under what ``attach_socket`` returned (a ``SocketIO`` on a Unix socket).

    :param stream: the attach stream.
    """
    return getattr(stream, "_sock", stream)


def close_stream(stream: Any) -> None:
    """Shut both directions of an attach stream (the daemon sees its end at once), then close it.

    :param stream: the attach stream.
    """
    with contextlib.suppress(OSError, AttributeError):
        raw_socket(stream).shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        stream.close()
