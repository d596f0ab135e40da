"""Work that overlaps with waiting on a target (``core.background``): tracking writes stay in their
order, an error is never lost, and a write after a failed one is not made."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider.core.background import BackgroundCall, OrderedWrites


def test_writes_happen_in_order_on_one_thread_while_the_caller_goes_on() -> None:
    done: list[tuple[int, str]] = []
    release = threading.Event()
    writes = OrderedWrites("test")
    writes.submit(lambda: (release.wait(5), done.append((1, threading.current_thread().name))))
    for number in (2, 3):
        writes.submit(lambda number=number: done.append((number, threading.current_thread().name)))
    assert done == []  # the caller was not held up by the first write
    release.set()
    writes.wait()
    writes.close()
    assert [number for number, _ in done] == [1, 2, 3]
    assert len({name for _, name in done}) == 1 and done[0][1] != threading.current_thread().name


def test_the_first_error_is_raised_and_the_writes_after_it_are_skipped() -> None:
    done: list[int] = []
    writes = OrderedWrites("test")
    writes.submit(lambda: done.append(1))
    writes.submit(lambda: (_ for _ in ()).throw(ConnectionError("store down")))
    writes.submit(lambda: done.append(3))
    with pytest.raises(ConnectionError, match="store down"):
        writes.wait()
    writes.close()
    assert done == [1]


def test_close_waits_for_every_write_whatever_it_raises() -> None:
    done: list[int] = []
    writes = OrderedWrites("test")
    writes.submit(lambda: (time.sleep(0.2), done.append(1)))
    writes.close()
    assert done == [1]


def test_a_background_call_raises_its_error_to_whoever_waits_for_it() -> None:
    call = BackgroundCall("test", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        call.result()
    finished: list[bool] = []
    BackgroundCall("test", lambda: finished.append(True)).result()
    assert finished == [True]
