"""Requests to a test's own ``airflow standalone`` through its REST API."""

from __future__ import annotations

import time
from typing import Any

import httpx


def api_call(api: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One API request. The standalone's metadata database is SQLite: while the scheduler holds its
    write lock past SQLite's busy timeout, the API server answers 500 (seen once in CI), so a server
    error is asked again, for up to 30 s."""
    deadline = time.monotonic() + 30
    while True:
        response = api.request(method, path, **kwargs)
        if response.status_code < 500 or time.monotonic() > deadline:
            return response
        time.sleep(1)


def trigger_dag(api: httpx.Client, dag_id: str) -> str:
    """Unpause the DAG and trigger a run of it now; return the DAG run's id."""
    response = api_call(api, "PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
    assert response.status_code == 200, response.text
    response = api_call(api, "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
    assert response.status_code == 200, response.text
    return str(response.json()["dag_run_id"])
