"""The blob tar stream: a tar archive made while it is read, whose size is known first."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from airflow_provider.core.targets.tar_stream import BlobTarStream


def _read_all(stream: BlobTarStream, chunk: int = 4096) -> bytes:
    parts = []
    while data := stream.read(chunk):
        parts.append(data)
    return b"".join(parts)


def test_the_stream_is_a_tar_of_the_blobs_with_the_announced_size(tmp_path: Path) -> None:
    """Members from bytes and from files (sizes on and off the 512-byte blocks) read back whole, and the
    archive is exactly as long as announced."""
    (tmp_path / "a").write_bytes(os.urandom(70_000))
    (tmp_path / "b").write_bytes(b"x" * 1024)
    blobs: dict[str, bytes | Path] = {"d1": tmp_path / "a", "d2": b"inline bytes", "d3": tmp_path / "b", "d4": b""}
    stream = BlobTarStream(list(blobs), blobs.__getitem__)
    archive = _read_all(stream)
    assert len(archive) == stream.size
    assert stream.content_bytes == 70_000 + 12 + 1024
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r|") as tar:
        found = {member.name: tar.extractfile(member).read() for member in tar}  # type: ignore[union-attr]
    assert found == {"d1": (tmp_path / "a").read_bytes(), "d2": b"inline bytes", "d3": b"x" * 1024, "d4": b""}


def test_seek_to_the_start_gives_the_same_bytes_again(tmp_path: Path) -> None:
    """A retry reads the same archive from the start; any other seek is refused."""
    (tmp_path / "a").write_bytes(os.urandom(5000))
    stream = BlobTarStream(["d"], lambda _: tmp_path / "a")
    first = stream.read(1000) + _read_all(stream)
    stream.seek(0)
    assert _read_all(stream, 333) == first
    with pytest.raises(io.UnsupportedOperation):
        stream.seek(10)


def test_a_file_that_shrank_while_sent_raises(tmp_path: Path) -> None:
    """A blob file shorter than when the size was announced is never sent as if it were whole."""
    (tmp_path / "a").write_bytes(b"y" * 4000)
    stream = BlobTarStream(["d"], lambda _: tmp_path / "a")
    (tmp_path / "a").write_bytes(b"y" * 10)
    with pytest.raises(OSError, match="changed while it was sent"):
        _read_all(stream)
