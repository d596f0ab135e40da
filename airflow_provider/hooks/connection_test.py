"""The answer of a hook's ``test_connection`` (the Test button of Airflow's connection form).

Airflow shows the message as it is: on success, what answered; on failure, the error's own message
(which names the field and the fix), and whether testing again later can help.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from airflow_provider.core.errors import is_retryable

__all__ = ["connection_test_result"]

log = logging.getLogger(__name__)

DEADLINE_SECONDS = 60.0
"""How long the Test button waits for an answer: it runs in Airflow's API server, which must not
hang on a host that accepts a connection and then never answers."""


def connection_test_result(reach: Callable[[], str], deadline: float = DEADLINE_SECONDS) -> tuple[bool, str]:
    """Run a reachability check and turn its outcome into ``(status, message)``.

    :param reach: reaches the service and returns what answered; raises the provider's errors.
    :param deadline: seconds to wait for it; after them the test fails (the check goes on in a
        daemon thread until its own timeouts end it).
    """
    outcome: list[tuple[bool, str]] = []

    def run() -> None:
        try:
            outcome.append((True, reach()))
        except Exception as exc:  # the Test button shows the message; nothing is raised to Airflow
            log.info("connection test failed", exc_info=True)
            again = ("Testing again later may help." if is_retryable(exc)
                     else "Testing again will not help until the connection is changed.")
            outcome.append((False, f"{type(exc).__name__}: {exc} {again}"))

    worker = threading.Thread(target=run, name="connection-test", daemon=True)
    worker.start()
    worker.join(deadline)
    if not outcome:
        return False, (f"No answer within {deadline:g} s: the service accepted the connection but did not finish "
                       "answering (a busy or stuck host?). Testing again later may help.")
    return outcome[0]
