"""Copying and hashing many files fast: what snapshots and job folders are made of.

:func:`copy_new_file` creates a file that must not exist yet and fills it with the kernel's
``copy_file_range``: on a filesystem with copy-on-write (btrfs, XFS, ...) the kernel clones the
data instead of copying it (a reflink), elsewhere it copies inside the kernel without passing the
bytes through Python. Where the kernel refuses (two filesystems it cannot copy between, a system
without the call) it falls back to reading and writing.

:func:`run_in_threads` spreads many such small jobs over a few threads. Copying and hashing spend
their time in system calls and in hashlib, which release the GIL, so a 10,000-file tree is worked
on by every core at once instead of one file after the other; files of one folder go to one
thread (creating files in a folder takes the folder's lock: threads in one folder would queue).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar, cast

__all__ = ["copy_new_file", "default_workers", "run_in_threads"]

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

_BLOCK = 1 << 30  # bytes asked of one copy_file_range call (it returns fewer at the end of the file)
_READ_BLOCK = 1 << 20
_MAX_WORKERS = 8
_SERIAL_BELOW = 32  # fewer items than this are not worth starting threads for
_CHUNKS_PER_WORKER = 4  # items go to the threads in chunks: one hand-over per chunk, not per file
# What copy_file_range answers when it cannot copy between these two files; read and write instead.
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM,
                             errno.ETXTBSY})


def copy_new_file(source: str, target: str, mode: int | None = None, executable: bool = False) -> int:
    """Copy the content of ``source`` into a new file ``target``; return the number of bytes copied.

    :param source: the file to copy.
    :param target: the file to create; it must not exist (not even as a link), its folder must.
    :param mode: the exact permission bits of ``target``, whatever the umask; ``None``: what
        ``open(target, "w")`` gives (``0o666`` minus the umask).
    :param executable: add the execute bit wherever the read bit is (``chmod +x``), after ``mode``.
    :raises FileNotFoundError: ``source`` (``exc.filename == source``) or ``target``'s folder is missing.
    :raises FileExistsError: ``target`` exists.
    """
    source_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        target_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                            0o666 if mode is None else mode)
        try:
            if mode is not None:
                os.fchmod(target_fd, mode)
            if executable:
                current = os.fstat(target_fd).st_mode
                os.fchmod(target_fd, current | ((current & 0o444) >> 2))
            return _copy_descriptors(source_fd, target_fd)
        finally:
            os.close(target_fd)
    finally:
        os.close(source_fd)


def _copy_descriptors(source_fd: int, target_fd: int) -> int:
    copied = 0
    if hasattr(os, "copy_file_range"):
        try:
            while chunk := os.copy_file_range(source_fd, target_fd, _BLOCK):
                copied += chunk
            return copied
        except OSError as exc:
            if copied or exc.errno not in _NO_KERNEL_COPY:
                raise
    while data := os.read(source_fd, _READ_BLOCK):
        view = memoryview(data)
        while view:
            view = view[os.write(target_fd, view):]
        copied += len(data)
    return copied


def default_workers() -> int:
    """Threads :func:`run_in_threads` uses: two per usable CPU, at most eight. Creating a file
    partly waits (on the folder's lock, the journal, the disk); more threads than that mostly
    wait on each other for the GIL."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(_MAX_WORKERS, 2 * cpus))


def run_in_threads(function: Callable[[ItemT], ResultT], items: Sequence[ItemT], workers: int | None = None,
                   group: Callable[[ItemT], Hashable] | None = None) -> list[ResultT]:
    """Call ``function`` on every item, on a few threads; return the results in the items' order.

    The first exception raised stops what has not started yet and is raised here, once the calls
    already running have returned (none is left running behind the caller's back).

    :param function: what to do with one item; it must be safe to call from several threads at once.
    :param items: the items.
    :param workers: how many threads; default :func:`default_workers`. Few items run on this thread.
    :param group: items with the same key are handled by one thread, one after the other. Files
        created in one folder wait on that folder's lock: give their folder, and threads work in
        different folders instead of queueing on one.
    """
    count = workers or default_workers()
    if count <= 1 or len(items) < _SERIAL_BELOW:
        return [function(item) for item in items]
    chunks = _chunks(items, count * _CHUNKS_PER_WORKER, group)

    def run_chunk(chunk: list[int]) -> list[ResultT]:
        return [function(items[index]) for index in chunk]

    with ThreadPoolExecutor(count, thread_name_prefix="bulk-copy") as pool:
        futures = [pool.submit(run_chunk, chunk) for chunk in chunks]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((future for future in futures if future in done and future.exception() is not None), None)
        if failed is not None:
            for future in futures:
                future.cancel()
            wait(futures)
            failed.result()  # raises the first error
        results: list[ResultT | None] = [None] * len(items)
        for chunk, future in zip(chunks, futures, strict=True):
            for index, result in zip(chunk, future.result(), strict=True):
                results[index] = result
        return cast("list[ResultT]", results)


def _chunks(items: Sequence[ItemT], wanted: int, group: Callable[[ItemT], Hashable] | None) -> list[list[int]]:
    """Indices of ``items`` cut into about ``wanted`` chunks of whole groups (in order of first appearance)."""
    groups: dict[Hashable, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(index if group is None else group(item), []).append(index)
    size = -(-len(items) // wanted)
    chunks: list[list[int]] = [[]]
    for members in groups.values():
        if len(chunks[-1]) >= size:
            chunks.append([])
        chunks[-1].extend(members)
    return chunks
