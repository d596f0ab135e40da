"""The answer of a hook's ``test_connection`` (the Test button of Airflow's connection form).

Airflow shows the message as it is: on success, what answered; on failure, the error's own message
(which names the field and the fix), and whether testing again later can help.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from airflow_provider.core.errors import is_retryable

__all__ = ["connection_test_result"]

log = logging.getLogger(__name__)


def connection_test_result(reach: Callable[[], str]) -> tuple[bool, str]:
    """Run a reachability check and turn its outcome into ``(status, message)``.

    :param reach: reaches the service and returns what answered; raises the provider's errors.
    """
    try:
        return True, reach()
    except Exception as exc:  # the Test button shows the message; nothing is raised to Airflow
        log.info("connection test failed", exc_info=True)
        again = ("Testing again later may help." if is_retryable(exc)
                 else "Testing again will not help until the connection is changed.")
        return False, f"{type(exc).__name__}: {exc} {again}"
