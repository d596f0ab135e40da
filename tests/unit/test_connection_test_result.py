"""What the Test button shows: the answer, the error with its retry advice, or the deadline passed."""

from __future__ import annotations

import threading

from airflow_provider.core.errors import ConfigurationError, TargetError
from airflow_provider.hooks.connection_test import connection_test_result


def test_an_answer_a_fix_and_a_retryable_error() -> None:
    assert connection_test_result(lambda: "reached it") == (True, "reached it")

    def wrong() -> str:
        raise ConfigurationError("extra.host_key", "does not match.", "pin the host's key.")

    ok, message = connection_test_result(wrong)
    assert not ok and "extra.host_key" in message and "will not help until the connection is changed" in message

    def down() -> str:
        raise TargetError("the daemon cannot be reached")

    ok, message = connection_test_result(down)
    assert not ok and message.endswith("Testing again later may help.")


def test_a_service_that_never_finishes_answering_fails_at_the_deadline() -> None:
    release = threading.Event()
    ok, message = connection_test_result(lambda: str(release.wait(30)), deadline=0.2)
    release.set()
    assert not ok and message.startswith("No answer within 0.2 s") and "Testing again later may help." in message


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_credentials_in_a_tracking_uri_are_never_shown() -> None:
    from airflow_provider.hooks.tracking_reachability import tracking_reachability

    port = _closed_port()
    for uri in (f"postgresql+psycopg2://mlflow:Pw-Secret-41@127.0.0.1:{port}/mlflow",
                f"http://mlflow:Pw-Secret-41@127.0.0.1:{port}"):
        ok, message = connection_test_result(lambda uri=uri: tracking_reachability(uri, {}))
        assert not ok and "cannot be reached" in message, message
        assert "Pw-Secret-41" not in message and "***@127.0.0.1" in message, message
    ok, message = connection_test_result(lambda: tracking_reachability("postgresql+nodriver://u:Pw-Secret-41@h/db", {}))
    assert not ok and "needs a database driver" in message and "Pw-Secret-41" not in message, message
    shown = tracking_reachability("databricks://profile:Pw-Secret-41@x", {})
    assert "Pw-Secret-41" not in shown and "not tested" in shown
