"""The SSH host agent's data inputs: blobs arrive checked and marked, job folders link them read-only,
and a blob something wrote to is hashed again and refused when damaged (run here, on this machine's
filesystem, as the agent runs on a host)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from airflow_provider.core.targets.tar_stream import BlobTarStream
from airflow_provider.runtime import remote_agent


def _put(root: Path, blobs: dict[str, bytes]) -> None:
    stream = BlobTarStream(list(blobs), blobs.__getitem__)
    data = b"".join(iter(lambda: stream.read(1 << 16), b""))
    answer = remote_agent.op_put_blobs({"root": str(root)}, io.BufferedReader(io.BytesIO(data)))
    assert answer == {"stored": len(blobs)}


def _materialize(root: Path, job: str, manifest: list[list[object]]) -> dict[str, object]:
    (root / "jobs").mkdir(exist_ok=True)
    return remote_agent.op_materialize({"root": str(root), "job_dir": str(root / "jobs" / job), "manifest": manifest,
                                        "extras": {}, "job_json": {"argv": ["true"]}})


def test_linked_inputs_share_the_blob_and_copies_do_not(tmp_path: Path) -> None:
    """A data input's file is the blob itself (one inode, read-only); a source file is its own copy."""
    big, small = os.urandom(200_000), b"print('hi')\n"
    blobs = {hashlib.sha256(big).hexdigest(): big, hashlib.sha256(small).hexdigest(): small}
    _put(tmp_path, blobs)
    digest_big, digest_small = list(blobs)
    blob = Path(remote_agent._blob_path(str(tmp_path), digest_big))
    assert Path(f"{blob}.ok").is_file()  # checked on arrival
    answer = _materialize(tmp_path, "j1", [[".inputs/train/w.bin", digest_big, False, True],
                                           ["train.py", digest_small, False]])
    assert answer == {}
    linked = tmp_path / "jobs" / "j1" / "work" / ".inputs" / "train" / "w.bin"
    copied = tmp_path / "jobs" / "j1" / "work" / "train.py"
    assert linked.stat().st_ino == blob.stat().st_ino and linked.stat().st_mode & 0o222 == 0
    assert copied.stat().st_ino != Path(remote_agent._blob_path(str(tmp_path), digest_small)).stat().st_ino
    assert linked.read_bytes() == big


def test_a_blob_written_to_is_checked_again_and_sent_again_when_damaged(tmp_path: Path) -> None:
    """A job that wrote into its linked input changed the blob: the next job folder finds the blob's
    signature changed, hashes it, removes it and asks for it again; a blob only touched is kept."""
    content = os.urandom(100_000)
    digest = hashlib.sha256(content).hexdigest()
    _put(tmp_path, {digest: content})
    manifest: list[list[object]] = [[".inputs/x/data.bin", digest, False, True]]
    assert _materialize(tmp_path, "j1", manifest) == {}
    blob = Path(remote_agent._blob_path(str(tmp_path), digest))
    os.utime(blob, ns=(1, 1))  # only its times: same content, hashed again and kept
    assert _materialize(tmp_path, "j2", manifest) == {}
    assert blob.exists()
    linked = tmp_path / "jobs" / "j2" / "work" / ".inputs" / "x" / "data.bin"
    linked.chmod(0o644)
    with open(linked, "r+b") as handle:  # what a script running as the blobs' owner could do
        handle.write(b"tampered")
    assert _materialize(tmp_path, "j3", manifest) == {"damaged": [digest]}
    assert not blob.exists()
