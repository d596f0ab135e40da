"""Tests of ``airflow_provider.core.snapshot`` on real files (no mocks)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider.core.errors import SnapshotError
from airflow_provider.core.snapshot import ManifestEntry, Snapshot, SnapshotResult, SnapshotStore

PAST = time.time() - 3600  # an mtime old enough for the stat cache to be trusted


def write(root: Path, rel: str, content: str | bytes = "x", *, executable: bool = False) -> Path:
    """Create ``root/rel`` with ``content`` (and its folders)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    if executable:
        path.chmod(0o755)
    return path


def age(root: Path, when: float = PAST) -> None:
    """Set the mtime of every file under ``root`` to ``when`` (without following links)."""
    for folder, _, names in os.walk(root):
        for name in names:
            os.utime(os.path.join(folder, name), (when, when), follow_symlinks=False)


def paths(result: SnapshotResult) -> list[str]:
    return [entry.path for entry in result.snapshot.entries]


def digest_of(result: SnapshotResult, rel: str) -> str:
    return next(entry.digest for entry in result.snapshot.entries if entry.path == rel)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(root: Path) -> dict[str, int]:
    """Every file and folder under ``root`` with its mtime_ns (the store's observable state)."""
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in root.rglob("*")}


def tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file under ``root``: content and owner-exec bit."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    return folder


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "store")


# --- ignore rules -----------------------------------------------------------------------------------


def test_default_root_is_under_the_state_folder(isolated_state: Path) -> None:
    assert SnapshotStore().root == isolated_state / "snapshots"


def test_gitignore_is_applied_and_included(src: Path, store: SnapshotStore) -> None:
    write(src, ".gitignore", "*.log\nbuild/\n")
    write(src, "train.py")
    write(src, "debug.log")
    write(src, "build/out.bin")
    write(src, "build.py")  # "build/" matches directories only
    assert paths(store.take(src)) == [".gitignore", "build.py", "train.py"]


def test_amlignore_wins_over_gitignore(src: Path, store: SnapshotStore) -> None:
    write(src, ".amlignore", "data/\n")
    write(src, ".gitignore", "*.py\n")
    write(src, "sub/.gitignore", "*.txt\n")
    write(src, "train.py")
    write(src, "sub/notes.txt")
    write(src, "data/big.bin")
    assert paths(store.take(src)) == [".amlignore", ".gitignore", "sub/.gitignore", "sub/notes.txt", "train.py"]


def test_nested_amlignore_files_are_used_when_amlignore_is_the_kind(src: Path, store: SnapshotStore) -> None:
    write(src, ".amlignore", "*.tmp\n")
    write(src, "sub/.amlignore", "*.csv\n")
    write(src, "a.csv")
    write(src, "sub/b.csv")
    write(src, "sub/c.tmp")
    assert paths(store.take(src)) == [".amlignore", "a.csv", "sub/.amlignore"]


def test_nested_gitignore_is_relative_to_its_folder_and_overrides(src: Path, store: SnapshotStore) -> None:
    write(src, ".gitignore", "*.log\n")
    write(src, "sub/.gitignore", "!keep.log\n/local.txt\n")
    write(src, "top.log")
    write(src, "local.txt")  # "/local.txt" in sub/.gitignore is anchored to sub/
    write(src, "sub/x.log")
    write(src, "sub/keep.log")  # re-included by the deeper file
    write(src, "sub/local.txt")
    write(src, "sub/deeper/local.txt")
    write(src, "other/keep.log")  # the negation only applies under sub/
    assert paths(store.take(src)) == [
        ".gitignore",
        "local.txt",
        "sub/.gitignore",
        "sub/deeper/local.txt",
        "sub/keep.log",
    ]


def test_negation_in_the_same_file(src: Path, store: SnapshotStore) -> None:
    write(src, ".gitignore", "*.csv\n!important.csv\n")
    write(src, "a.csv")
    write(src, "important.csv")
    write(src, "deep/important.csv")
    assert paths(store.take(src)) == [".gitignore", "deep/important.csv", "important.csv"]


def test_invalid_pattern_and_crlf_lines_are_handled_like_git(src: Path, store: SnapshotStore) -> None:
    # CRLF line ends; the invalid pattern "bad\\" (trailing backslash) never matches, as in git.
    write(src, ".gitignore", "*.log\r\nbad\\\r\n# comment\r\n")
    write(src, "a.log")
    write(src, "bad")
    assert paths(store.take(src)) == [".gitignore", "bad"]


def test_ignored_directory_is_pruned(src: Path, store: SnapshotStore, tmp_path: Path) -> None:
    write(src, ".gitignore", "venv/\n!venv/keep.txt\n")
    write(src, "venv/keep.txt")  # as in git, a file cannot be re-included from an excluded folder
    write(src, "venv/lib/mod.py")
    # Links that would be errors if the folder were walked.
    (src / "venv" / "outside").symlink_to(tmp_path)
    (src / "venv" / "dangling").symlink_to(src / "missing")
    write(src, "main.py")
    assert paths(store.take(src)) == [".gitignore", "main.py"]


def test_git_folder_is_never_included(src: Path, store: SnapshotStore) -> None:
    write(src, ".gitignore", "!.git\n!.git/\n")
    write(src, ".git/config")
    write(src, ".git/objects/ab/cdef")
    write(src, "vendored/.git/HEAD")
    write(src, "main.py")
    assert paths(store.take(src)) == [".gitignore", "main.py"]


# --- ids and deduplication -----------------------------------------------------------------------------


def test_id_is_stable_and_changes_with_content(src: Path, store: SnapshotStore) -> None:
    write(src, "train.py", "print(1)\n")
    write(src, "pkg/model.py", "W = 1\n")
    first = store.take(src).snapshot
    assert store.take(src).snapshot.id == first.id
    assert SnapshotStore(src.parent / "other-store").take(src).snapshot.id == first.id
    write(src, "pkg/model.py", "W = 2\n")
    assert store.take(src).snapshot.id != first.id


def test_manifest_is_canonical(src: Path, store: SnapshotStore) -> None:
    write(src, "b.py", "b")
    write(src, "a/run.sh", "#!/bin/sh\n", executable=True)
    snapshot = store.take(src).snapshot
    text = snapshot.manifest_json()
    assert json.loads(text) == {
        "version": 1,
        "entries": [["a/run.sh", sha(b"#!/bin/sh\n"), 10, True], ["b.py", sha(b"b"), 1, False]],
    }
    assert snapshot.id == sha(text.encode())
    assert (store.root / "manifests" / f"{snapshot.id}.json").read_text() == text
    assert snapshot.total_size == 11


def test_resubmitting_unchanged_writes_nothing(src: Path, store: SnapshotStore) -> None:
    write(src, "train.py", "print(1)\n")
    write(src, "pkg/model.py", "W = 1\n")
    write(src, "run.sh", "#!/bin/sh\n", executable=True)
    age(src)
    first = store.take(src)
    assert first.new_blobs == 3
    before = listing(store.root)
    assert any(name.startswith("statcache/") for name in before)
    time.sleep(0.01)  # so that a rewrite would show as a different mtime_ns
    second = store.take(src)
    assert (second.new_blobs, second.new_bytes) == (0, 0)
    assert second.snapshot == first.snapshot
    assert listing(store.root) == before


def test_resubmitting_fresh_files_writes_no_blob_or_manifest(src: Path, store: SnapshotStore) -> None:
    write(src, "train.py", "print(1)\n")  # mtime now: hashed again every time (racy), but not stored
    store.take(src)
    blobs_and_manifests = {k: v for k, v in listing(store.root).items() if not k.startswith("statcache")}
    assert store.take(src).new_blobs == 0
    after = {k: v for k, v in listing(store.root).items() if not k.startswith("statcache")}
    assert after == blobs_and_manifests


def test_changed_file_stores_exactly_one_blob(src: Path, store: SnapshotStore) -> None:
    for index in range(5):
        write(src, f"pkg/m{index}.py", f"value = {index}\n")
    age(src)
    store.take(src)
    blobs_before = {p for p in (store.root / "blobs").rglob("*") if p.is_file()}
    write(src, "pkg/m3.py", "value = 'changed'\n")
    result = store.take(src)
    assert (result.new_blobs, result.new_bytes) == (1, len("value = 'changed'\n"))
    new = {p for p in (store.root / "blobs").rglob("*") if p.is_file()} - blobs_before
    assert new == {store.blob_path(sha(b"value = 'changed'\n"))}


def test_identical_files_share_one_blob(src: Path, store: SnapshotStore) -> None:
    write(src, "a.txt", "same")
    write(src, "b/a.txt", "same")
    result = store.take(src)
    assert result.new_blobs == 1
    assert store.has_blob(sha(b"same"))
    assert store.blob_path(sha(b"same")) == store.root / "blobs" / sha(b"same")[:2] / sha(b"same")
    assert store.blob_path(sha(b"same")).read_bytes() == b"same"
    assert not store.has_blob(sha(b"other"))


# --- stat cache --------------------------------------------------------------------------------------


def _cache_file(store: SnapshotStore) -> Path:
    (cache,) = (store.root / "statcache").iterdir()
    return cache


def test_stat_cache_is_trusted_for_old_unchanged_files(src: Path, store: SnapshotStore) -> None:
    write(src, "a.txt", "real")
    age(src)
    store.take(src)
    cache = _cache_file(store)
    payload = json.loads(cache.read_text())
    assert payload["entries"]["a.txt"][4] == sha(b"real")
    # Plant a wrong digest: if the cache is used (no re-read), the snapshot reports it.
    payload["entries"]["a.txt"][4] = sha(b"planted")
    cache.write_text(json.dumps(payload))
    assert digest_of(store.take(src), "a.txt") == sha(b"planted")


def test_stat_cache_is_not_trusted_for_recent_files(src: Path, store: SnapshotStore) -> None:
    path = write(src, "a.txt", "real")  # mtime = now: within the racy window
    store.take(src)
    st = path.stat()
    cache = store.root / "statcache" / f"{sha(os.path.realpath(src).encode())}.json"
    entry = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, sha(b"planted")]
    source = os.path.realpath(src)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"version": 1, "source": source, "entries": {"a.txt": entry}}))
    assert digest_of(store.take(src), "a.txt") == sha(b"real")


def test_stat_cache_does_not_record_recent_files(src: Path, store: SnapshotStore) -> None:
    write(src, "old.txt", "o")
    age(src)
    write(src, "new.txt", "n")  # mtime = now: could still change within the same clock tick
    store.take(src)
    assert set(json.loads(_cache_file(store).read_text())["entries"]) == {"old.txt"}


def test_stat_cache_sees_same_size_modification(src: Path, store: SnapshotStore) -> None:
    path = write(src, "params.txt", "aaaa")
    os.utime(path, (PAST, PAST))
    assert digest_of(store.take(src), "params.txt") == sha(b"aaaa")
    path.write_bytes(b"bbbb")  # same size
    os.utime(path, (PAST + 10, PAST + 10))  # a distinct mtime, still old enough to be cached
    result = store.take(src)
    assert digest_of(result, "params.txt") == sha(b"bbbb")
    assert result.new_blobs == 1


def test_stat_cache_sees_modification_with_restored_mtime(src: Path, store: SnapshotStore) -> None:
    path = write(src, "params.txt", "aaaa")
    os.utime(path, (PAST, PAST))
    store.take(src)
    path.write_bytes(b"bbbb")
    os.utime(path, (PAST, PAST))  # same size and same mtime: only the ctime tells
    assert digest_of(store.take(src), "params.txt") == sha(b"bbbb")


# --- size limit ----------------------------------------------------------------------------------------


def test_size_limit_names_largest_files_folders_field_and_fix(src: Path, store: SnapshotStore) -> None:
    sizes = {"data/a.bin": 9000, "data/b.bin": 8000, "ckpt/c.pt": 7000, "d.bin": 6000, "logs/e.txt": 5000}
    for rel, size in {**sizes, "logs/f.txt": 1000, "small.py": 10}.items():
        write(src, rel, b"0" * size)
    with pytest.raises(SnapshotError) as caught:
        store.take(src, max_bytes=20_000)
    error = caught.value
    assert error.field == "ScriptRunConfig.source_directory"
    for rel in sizes:
        assert rel in error.problem
    assert "logs/f.txt" not in error.problem  # only the five largest files
    assert "8.8 KB" in error.problem  # 9000 bytes, human-readable
    assert "data/ (16.6 KB)" in error.problem  # largest top-level folders
    assert "ckpt/ (6.8 KB)" in error.problem
    assert ".amlignore" in error.fix
    assert "snapshot_size_limit_mb" in error.fix
    assert not store.root.exists() or [p for p in store.root.rglob("*") if p.is_file()] == []


def test_ignored_files_do_not_count_towards_the_limit(src: Path, store: SnapshotStore) -> None:
    write(src, ".amlignore", "data/\n")
    write(src, "data/big.bin", b"0" * 50_000)
    write(src, "train.py", "print(1)\n")
    assert store.take(src, max_bytes=1_000).snapshot.total_size < 1_000


# --- symbolic links --------------------------------------------------------------------------------------


def test_symlink_inside_is_snapshotted_as_its_target(src: Path, store: SnapshotStore) -> None:
    write(src, "configs/base.yaml", "lr: 0.1\n")
    (src / "config.yaml").symlink_to("configs/base.yaml")
    (src / "alias").symlink_to("configs", target_is_directory=True)
    result = store.take(src)
    assert paths(result) == ["alias/base.yaml", "config.yaml", "configs/base.yaml"]
    assert digest_of(result, "config.yaml") == sha(b"lr: 0.1\n")
    assert result.skipped_links == ()


def test_symlink_loop_is_skipped(src: Path, store: SnapshotStore) -> None:
    write(src, "pkg/mod.py", "x = 1\n")
    (src / "pkg" / "root").symlink_to("..", target_is_directory=True)
    result = store.take(src)
    assert paths(result) == ["pkg/mod.py"]
    assert result.skipped_links == ("pkg/root",)


def test_symlink_outside_raises_with_the_link_name(src: Path, store: SnapshotStore, tmp_path: Path) -> None:
    outside = write(tmp_path, "elsewhere/secret.txt", "s")
    write(src, "train.py")
    (src / "pkg").mkdir()
    (src / "pkg" / "linked.txt").symlink_to(outside)
    with pytest.raises(SnapshotError) as caught:
        store.take(src)
    assert caught.value.field == "ScriptRunConfig.source_directory"
    assert "pkg/linked.txt" in caught.value.problem
    assert str(outside) in caught.value.problem
    assert ".amlignore" in caught.value.fix
    assert not store.root.exists() or [p for p in store.root.rglob("*") if p.is_file()] == []


def test_dangling_symlink_raises_with_the_link_name(src: Path, store: SnapshotStore) -> None:
    write(src, "train.py")
    (src / "gone.txt").symlink_to("does-not-exist.txt")
    with pytest.raises(SnapshotError, match=r"gone\.txt.*does-not-exist\.txt"):
        store.take(src)


def test_ignored_outside_symlink_is_no_error(src: Path, store: SnapshotStore, tmp_path: Path) -> None:
    write(src, ".gitignore", "linked.txt\n")
    (src / "linked.txt").symlink_to(write(tmp_path, "elsewhere.txt", "e"))
    write(src, "train.py")
    assert paths(store.take(src)) == [".gitignore", "train.py"]


# --- errors on the source -----------------------------------------------------------------------------


def test_missing_source_directory(tmp_path: Path, store: SnapshotStore) -> None:
    with pytest.raises(SnapshotError) as caught:
        store.take(tmp_path / "nope")
    assert caught.value.field == "ScriptRunConfig.source_directory"
    assert "does not exist" in caught.value.problem


def test_source_that_is_a_file(tmp_path: Path, store: SnapshotStore) -> None:
    with pytest.raises(SnapshotError, match=r"ScriptRunConfig\.source_directory.*not a directory"):
        store.take(write(tmp_path, "train.py"))


def test_unreadable_file_is_named() -> None:
    """Run the snapshot as an unprivileged user (root reads every file), in a subprocess."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="unreadable-"))  # /tmp itself: pytest's folders are root-only
    try:
        _check_unreadable_file_is_named(base)
    finally:
        shutil.rmtree(base)


def _check_unreadable_file_is_named(base: Path) -> None:
    src = base / "src"
    write(src, "train.py", "print('hi')\n")
    secret = write(src, "secret.txt", "s")
    secret.chmod(0)
    store_root = base / "store-for-nobody"
    store_root.mkdir()
    for folder in (base, src, store_root):
        folder.chmod(0o777)
    code = (
        "import sys\n"
        "from airflow_provider.core.snapshot import SnapshotStore\n"
        "from airflow_provider.core.errors import SnapshotError\n"
        "try:\n"
        f"    SnapshotStore({str(store_root)!r}).take({str(src)!r})\n"
        "except SnapshotError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "HOME": str(store_root), "TRAINING_RUNS_HOME": str(store_root)})
    assert result.returncode == 3, result.stderr
    assert "secret.txt" in result.stdout


# --- restore ---------------------------------------------------------------------------------------------


def test_restore_rebuilds_an_identical_tree(src: Path, store: SnapshotStore, tmp_path: Path) -> None:
    write(src, "train.py", "print('hi')\n")
    write(src, "run.sh", "#!/bin/sh\necho hi\n", executable=True)
    write(src, "pkg/sub/model.py", b"\x00\x01binary")
    write(src, "pkg/sub/tool", "#!/usr/bin/env python\n", executable=True)
    write(src, "pkg/empty.txt", b"")
    snapshot_id = store.take(src).snapshot.id
    dest = tmp_path / "restored"
    assert store.restore(snapshot_id, dest) == dest
    assert tree(dest) == tree(src)
    assert tree(dest)["run.sh"][1] and not tree(dest)["train.py"][1]


def test_restored_files_are_copies_not_links(src: Path, store: SnapshotStore, tmp_path: Path) -> None:
    write(src, "state.txt", "original")
    snapshot = store.take(src).snapshot
    dest = tmp_path / "restored"
    dest.mkdir()  # an existing empty folder is fine
    store.materialize(snapshot, dest)
    (dest / "state.txt").write_text("modified in place")
    assert store.blob_path(sha(b"original")).read_bytes() == b"original"
    assert (dest / "state.txt").stat().st_nlink == 1


def test_a_tree_of_many_folders_is_stored_and_restored_on_several_threads(src: Path, store: SnapshotStore,
                                                                         tmp_path: Path) -> None:
    for index in range(300):  # enough files for the threaded paths of take and materialize
        write(src, f"pkg{index % 12}/sub{index % 3}/file{index}.py", f"content {index % 250}\n",
              executable=index % 17 == 0)
    age(src)
    result = store.take(src)
    assert (result.new_blobs, len(result.snapshot.entries)) == (250, 300)
    dest = tmp_path / "restored"
    store.materialize(result.snapshot, dest)
    assert tree(dest) == tree(src)
    assert all(path.stat().st_nlink == 1 for path in dest.rglob("*.py"))


def test_materialize_refuses_a_non_empty_folder(src: Path, store: SnapshotStore, tmp_path: Path) -> None:
    write(src, "a.txt")
    snapshot = store.take(src).snapshot
    dest = tmp_path / "dest"
    write(dest, "already.txt")
    with pytest.raises(FileExistsError):
        store.materialize(snapshot, dest)


def test_load_unknown_snapshot(store: SnapshotStore) -> None:
    with pytest.raises(SnapshotError) as caught:
        store.load("0" * 64)
    assert caught.value.field == "snapshot_id"
    with pytest.raises(SnapshotError):
        store.restore("../../etc/passwd", "unused")


def test_load_returns_what_take_returned(src: Path, store: SnapshotStore) -> None:
    write(src, "a.txt", "a")
    snapshot = store.take(src).snapshot
    assert store.load(snapshot.id) == snapshot


def test_to_dict_from_dict_round_trip(src: Path, store: SnapshotStore) -> None:
    write(src, "a.txt", "a")
    write(src, "bin/run", "#!/bin/sh\n", executable=True)
    snapshot = store.take(src).snapshot
    data = json.loads(json.dumps(snapshot.to_dict()))
    assert Snapshot.from_dict(data) == snapshot
    assert data["id"] == snapshot.id


def test_from_dict_rejects_tampering() -> None:
    entry = ManifestEntry("a.txt", sha(b"a"), 1, False)
    data = Snapshot.from_entries([entry]).to_dict()
    with pytest.raises(SnapshotError):
        Snapshot.from_dict({**data, "id": "f" * 64})
    with pytest.raises(SnapshotError):
        Snapshot.from_dict({"entries": [["a.txt", "../../x", 1, False]]})
    with pytest.raises(SnapshotError):
        Snapshot.from_dict({"entries": "nope"})


def test_materialize_rejects_unsafe_paths(store: SnapshotStore, tmp_path: Path) -> None:
    snapshot = Snapshot.from_entries([ManifestEntry("../escape.txt", sha(b"a"), 1, False)])
    with pytest.raises(SnapshotError, match="unsafe path"):
        store.materialize(snapshot, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()


def test_store_inside_the_source_does_not_snapshot_itself(src: Path) -> None:
    store = SnapshotStore(src / ".state" / "snapshots")
    write(src, "train.py", "print(1)\n")
    age(src)
    first = store.take(src)
    second = store.take(src)
    assert paths(second) == ["train.py"]
    assert second.snapshot == first.snapshot


GIT_CASES = [
    (["*", "!*/", "!*.py"], ["a.txt", "b.py", "pkg/c.py", "pkg/d.txt", "pkg/sub/e.py"]),
    (["foo/**", "!foo/bar"], ["foo/bar", "foo/baz", "x/foo/y"]),
    (["build/"], ["build/out.o", "src/build/x.o", "src/main.c"]),
    (["*.log", "!keep.log"], ["a.log", "keep.log", "d/keep.log", "d/b.log"]),
    (["/root-only.txt", "docs/*.md", "**/tmp"], ["root-only.txt", "d/root-only.txt", "docs/a.md", "docs/x/b.md",
                                                  "tmp/t", "a/b/tmp/t", "a/tmpx"]),
    (["data/", "!data/keep.csv", "*.ckpt", "!best.ckpt"], ["data/keep.csv", "data/x.csv", "m/best.ckpt",
                                                            "m/last.ckpt", "train.py"]),
    (["/*", "!/src/", "!/README.md"], ["src/a.py", "src/b/c.py", "tests/t.py", "README.md", "setup.py"]),
    (["**/cache/**", "!**/cache/keep"], ["cache/a", "x/cache/keep", "x/cache/b/c", "x/cachex/d"]),
]


@pytest.mark.parametrize(("patterns", "files"), GIT_CASES)
def test_ignore_rules_agree_with_git(tmp_path: Path, store: SnapshotStore, patterns: list[str],
                                     files: list[str]) -> None:
    src = tmp_path / "repo"
    for name in files:
        write(src, name, name)
    (src / ".gitignore").write_text("\n".join(patterns) + "\n")
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    listed = subprocess.run(["git", "-C", str(src), "ls-files", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert paths(store.take(src)) == sorted(listed)
