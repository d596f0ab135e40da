"""Transient tracking errors are retried with backoff within a budget, logged; others are not."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST, INVALID_PARAMETER_VALUE

from airflow_provider.core import tracking
from airflow_provider.core.errors import ConfigurationError, TrackingRefusedError, TrackingUnavailableError
from airflow_provider.core.tracking import _TranslatingClient, is_refusal, tracking_error

URI = "http://mlflow.example.com:5000"


class FlakyClient:
    """Fails each method ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def _answer(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "answer"

    def log_batch(self, *args: Any) -> str:
        return self._answer()

    def create_run(self, *args: Any) -> str:
        return self._answer()


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    monkeypatch.delenv("TRAINING_RUNS_TRACKING_RETRY_SECONDS")  # the default budget (the suite sets 0)
    slept: list[float] = []
    clock = [1000.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(tracking.time, "sleep", sleep)
    monkeypatch.setattr(tracking.time, "monotonic", lambda: clock[0])
    return slept


def test_a_dropped_connection_is_retried_with_backoff_and_logged(
        no_waiting: list[float], caplog: pytest.LogCaptureFixture) -> None:
    client = FlakyClient(3, requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"))
    with caplog.at_level(logging.WARNING, logger="airflow_provider.core.tracking"):
        assert _TranslatingClient(client, URI).log_batch("run") == "answer"  # type: ignore[arg-type]
    assert client.calls == 4
    assert no_waiting == [1.0, 2.0, 4.0]
    retries = [r.getMessage() for r in caplog.records]
    assert len(retries) == 3 and all("trying again" in m and "TRAINING_RUNS_TRACKING_RETRY_SECONDS" in m
                                     for m in retries), retries


def test_the_budget_bounds_the_retries(monkeypatch: pytest.MonkeyPatch, no_waiting: list[float]) -> None:
    monkeypatch.setenv("TRAINING_RUNS_TRACKING_RETRY_SECONDS", "20")
    client = FlakyClient(100, requests.exceptions.ConnectionError("refused"))
    with pytest.raises(TrackingUnavailableError) as raised:
        _TranslatingClient(client, URI).log_batch("run")  # type: ignore[arg-type]
    assert raised.value.retryable
    assert sum(no_waiting) <= 20 and no_waiting == [1.0, 2.0, 4.0, 8.0]
    monkeypatch.setenv("TRAINING_RUNS_TRACKING_RETRY_SECONDS", "0")
    client = FlakyClient(100, requests.exceptions.ConnectionError("refused"))
    with pytest.raises(TrackingUnavailableError):
        _TranslatingClient(client, URI).log_batch("run")  # type: ignore[arg-type]
    assert client.calls == 1


def test_a_call_that_creates_something_is_not_retried(no_waiting: list[float]) -> None:
    client = FlakyClient(1, requests.exceptions.ConnectionError("refused"))
    with pytest.raises(TrackingUnavailableError):
        _TranslatingClient(client, URI).create_run("0")  # type: ignore[arg-type]
    assert client.calls == 1 and no_waiting == []


def test_a_refusal_is_not_retried(no_waiting: list[float]) -> None:
    client = FlakyClient(1, MlflowException("bad metric name", error_code=INVALID_PARAMETER_VALUE))
    with pytest.raises(TrackingRefusedError):
        _TranslatingClient(client, URI).log_batch("run")  # type: ignore[arg-type]
    assert client.calls == 1 and no_waiting == []


def test_a_servers_exhausted_database_pool_is_transient_not_a_refusal() -> None:
    """MLflow's server answers 400 BAD_REQUEST when its database pool is exhausted: the relay must
    not skip those values as refused, and the call is retried."""
    exc = MlflowException("QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00",
                          error_code=BAD_REQUEST)
    assert isinstance(tracking_error(exc, URI, "log_batch"), TrackingUnavailableError)
    assert not is_refusal(exc)
    assert is_refusal(MlflowException("bad value", error_code=BAD_REQUEST))


def test_a_bad_budget_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINING_RUNS_TRACKING_RETRY_SECONDS", "soon")
    with pytest.raises(ConfigurationError, match="TRAINING_RUNS_TRACKING_RETRY_SECONDS"):
        tracking.tracking_retry_budget()
