"""Tests of ``airflow_provider.core.bulk_copy`` on real files and real threads (issue 14)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from airflow_provider.core.bulk_copy import copy_new_file, run_in_threads


def test_a_copy_is_an_independent_file_with_the_same_content(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 << 20) + b"tail")
    assert copy_new_file(str(source), str(tmp_path / "copy.bin")) == (3 << 20) + 4
    copy = tmp_path / "copy.bin"
    assert copy.read_bytes() == source.read_bytes()
    assert copy.stat().st_ino != source.stat().st_ino and copy.stat().st_nlink == 1
    with open(copy, "r+b") as handle:
        handle.write(b"changed")
    assert source.read_bytes()[:7] != b"changed"


def test_an_existing_target_or_a_link_planted_there_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_text("new")
    existing = tmp_path / "existing.txt"
    existing.write_text("keep")
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("untouched")
    (tmp_path / "link.txt").symlink_to(elsewhere)
    with pytest.raises(FileExistsError):
        copy_new_file(str(source), str(existing))
    with pytest.raises(FileExistsError):
        copy_new_file(str(source), str(tmp_path / "link.txt"))
    assert existing.read_text() == "keep" and elsewhere.read_text() == "untouched"


def test_a_missing_source_is_named_in_the_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.bin")
    with pytest.raises(FileNotFoundError) as caught:
        copy_new_file(missing, str(tmp_path / "copy.bin"))
    assert caught.value.filename == missing
    assert not (tmp_path / "copy.bin").exists()


def test_modes_exact_whatever_the_umask_or_as_open_gives_with_execute_where_read(tmp_path: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_text("x")
    previous = os.umask(0o027)
    try:
        copy_new_file(str(source), str(tmp_path / "exact"), mode=0o600)
        copy_new_file(str(source), str(tmp_path / "plain"))
        copy_new_file(str(source), str(tmp_path / "tool"), executable=True)
    finally:
        os.umask(previous)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("exact", "plain", "tool")}
    assert modes == {"exact": 0o600, "plain": 0o640, "tool": 0o750}


def test_a_copy_between_two_filesystems_falls_back_to_reading_and_writing(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the test's temporary folder")
    source = other / f"bulk-copy-test-{os.getpid()}"
    source.write_bytes(os.urandom(1 << 20))
    try:
        copy_new_file(str(source), str(tmp_path / "copy.bin"))
        assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    finally:
        source.unlink()


def test_results_come_back_in_the_items_order_from_several_threads() -> None:
    threads: set[int] = set()
    barrier = threading.Barrier(2, timeout=30)

    def square(item: int) -> int:
        threads.add(threading.get_ident())
        if item in (0, 500):  # two chunks that can only finish when both run at once
            barrier.wait()
        return item * item

    assert run_in_threads(square, list(range(1000)), workers=2) == [i * i for i in range(1000)]
    assert len(threads) == 2


def test_items_of_one_group_are_handled_by_one_thread() -> None:
    seen: dict[str, set[int]] = {}
    lock = threading.Lock()

    def record(item: str) -> str:
        with lock:
            seen.setdefault(item.split("/")[0], set()).add(threading.get_ident())
        return item

    items = [f"folder{index % 7}/file{index}" for index in range(700)]
    assert run_in_threads(record, items, workers=4, group=lambda item: item.split("/")[0]) == items
    assert len(seen) == 7 and all(len(threads) == 1 for threads in seen.values())


def test_the_first_error_is_raised_once_no_call_is_running_any_more() -> None:
    active = [0]
    lock = threading.Lock()
    failing = threading.Event()

    def work(item: int) -> int:
        with lock:
            active[0] += 1
        try:
            if item == 0:
                failing.set()
                raise ValueError("item 0 is bad")
            failing.wait(timeout=30)  # every other call is still running when item 0 fails
            return item
        finally:
            with lock:
                active[0] -= 1

    with pytest.raises(ValueError, match="item 0 is bad"):
        run_in_threads(work, list(range(2000)), workers=4)
    assert active[0] == 0
