"""A tar archive of blobs made while it is read, with its size known before the first byte.

Sending gigabytes of blobs (data inputs, wheels) used to write the whole archive to a spooled
temporary file first: one more write and read of everything, and as much free disk. Here each
member's header, content and padding are produced as the reader asks, from the blob's bytes or its
file; the size (what the remote agent's protocol announces first) is the sum of the parts.
A reader may start again from the beginning (``seek(0)``, a retry on a new connection).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["BlobTarStream", "file_chunks"]

_BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1 << 20


def _padding(size: int) -> int:
    return -size % _BLOCK


class BlobTarStream(io.RawIOBase):
    """A tar stream of the blobs ``digests``, each member named by its digest (mode 0644).

    :param digests: the blobs, in the order they are sent.
    :param content: a blob's bytes, or the path of its file, by digest. A file must not change
        while it is sent: its size is read once, and a different length raises :class:`OSError`.
    """

    def __init__(self, digests: list[str], content: Callable[[str], bytes | Path]) -> None:
        super().__init__()
        self._members: list[tuple[str, bytes | Path, int]] = []
        for digest in digests:
            data = content(digest)
            length = os.stat(data).st_size if isinstance(data, Path) else len(data)
            self._members.append((digest, data, length))
        self.size = sum(_BLOCK + length + _padding(length) for _, _, length in self._members) + 2 * _BLOCK
        """The archive's length in bytes."""
        self.content_bytes = sum(length for _, _, length in self._members)
        """The blobs' own bytes (without headers and padding)."""
        self._parts: Iterator[bytes] = self._generate()
        self._pending = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Only back to the start (what a retried send does)."""
        if offset != 0 or whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a blob tar stream can only start again from 0")
        self._parts = self._generate()
        self._pending = b""
        return 0

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            part = next(self._parts, None)
            if part is None:
                return 0
            self._pending = part
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _generate(self) -> Iterator[bytes]:
        for digest, data, length in self._members:
            info = tarfile.TarInfo(digest)
            info.size, info.mode = length, 0o644
            yield info.tobuf(format=tarfile.GNU_FORMAT)
            if isinstance(data, Path):
                yield from file_chunks(data, length, _CHUNK)
            elif data:
                yield data
            if _padding(length):
                yield b"\0" * _padding(length)
        yield b"\0" * (2 * _BLOCK)


def file_chunks(source: Path, size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The bytes of a file that must not change while it is sent, in pieces of ``chunk``.

    :param source: the file.
    :param size: its length when it was listed.
    :param chunk: the most bytes a piece holds.
    :raises OSError: its length is not ``size`` any more.
    """
    sent = 0
    with open(source, "rb") as handle:
        while sent < size and (data := handle.read(min(chunk, size - sent))):
            sent += len(data)
            yield data
    if sent != size:
        raise OSError(f"{source} changed while it was sent ({sent} of {size} bytes)")
