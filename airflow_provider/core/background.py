"""Work that overlaps with waiting on a target: a call in a thread of its own, and an ordered
queue of tracking writes. Neither hides an error: the caller collects each one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["BackgroundCall", "OrderedWrites"]


class BackgroundCall:
    """Runs ``action`` in a thread of its own (not a daemon: the interpreter waits for it at exit).

    :param name: the thread's name.
    :param action: what to run.
    """

    def __init__(self, name: str, action: Callable[[], object]) -> None:
        self._action = action
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._action()
        except BaseException as exc:
            self._error = exc

    def result(self) -> None:
        """Wait for the action; raise what it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error


class OrderedWrites:
    """Writes done one after another, in the order given, by one worker thread, while the caller
    goes on (for example creating a container). A write after one that failed is skipped.

    :param name: the worker thread's name prefix.
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._futures: list[Future[object]] = []
        self._failed = threading.Event()

    def submit(self, write: Callable[[], object]) -> None:
        """Queue ``write`` after the writes already queued.

        :param write: the call.
        """
        self._futures.append(self._executor.submit(self._unless_failed, write))

    def _unless_failed(self, write: Callable[[], object]) -> object:
        if self._failed.is_set():
            return None
        try:
            return write()
        except BaseException:
            self._failed.set()
            raise

    def wait(self) -> None:
        """Wait for every queued write; raise the first error met."""
        try:
            for future in self._futures:
                future.result()
        finally:
            self._futures.clear()

    def close(self) -> None:
        """Wait for the queued writes, whatever they raise, and stop the worker thread."""
        self._executor.shutdown(wait=True)
        self._futures.clear()
