"""Connection secrets against a real ``airflow api-server`` (issue 12, items 8 and 9).

A connection of every type is created through the REST API with every field set; every secret
field (``airflow_provider.SECRET_FIELDS``) must come back as ``***`` from every route that returns
connections (create, get, list), which is what the UI's Edit dialog shows; saving the dialog
unchanged (``***`` sent back) must keep the secret. The connection form the UI draws
(``/ui/connections/hook_meta``) must offer the key and PEM fields as multi-line inputs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import airflow_provider
from tests.helpers import stop_process_tree, wait_until
from tests.system.conftest import airflow_environment

pytestmark = pytest.mark.slow

AIRFLOW_BIN = str(Path(sys.executable).parent / "airflow")
MULTI_LINE = {"training_ssh": {"private_key"}, "training_mpi": {"private_key"},
              "training_slurm": {"private_key", "setup"},
              "training_docker": {"tls_ca_cert", "tls_client_cert", "tls_client_private_key"}}


@dataclass
class ApiServer:
    client: httpx.Client
    environment: dict[str, str]  # an Airflow CLI process on the server's AIRFLOW_HOME

    def stored(self, conn_id: str) -> dict[str, Any]:
        """The connection as the database holds it, unredacted (what a task's hook reads)."""
        result = subprocess.run([AIRFLOW_BIN, "connections", "get", conn_id, "-o", "json"], env=self.environment,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        (connection,) = json.loads(result.stdout[result.stdout.index("[{"):])
        return dict(connection)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, _airflow_db_template: Path) -> Iterator[ApiServer]:
    """A real ``airflow api-server`` (core API and UI routes, every caller an admin) on a free port."""
    home = tmp_path_factory.mktemp("airflow-api")
    shutil.copyfile(_airflow_db_template, home / "airflow.db")
    port = _free_port()
    environment = {
        **{k: v for k, v in airflow_environment(home, home / "dags").items() if not k.startswith("AIRFLOW_CONN_")},
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }
    log = open(home / "api-server.log", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen([AIRFLOW_BIN, "api-server", "--apps", "core",
                                "-H", "127.0.0.1", "-p", str(port), "-w", "1"], env=environment, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError((home / "api-server.log").read_text()[-3000:])
        with contextlib.suppress(httpx.HTTPError):
            return client.get("/api/v2/monitor/health").status_code == 200
        return False

    try:
        wait_until(ready, timeout=120, message="airflow api-server to answer")
        yield ApiServer(client, environment)
    finally:
        client.close()
        stop_process_tree(process.pid)  # its scheduler and executor workers too, whatever their group
        process.wait()
        log.close()


def _connection_types() -> dict[str, dict[str, Any]]:
    return {c["connection-type"]: c for c in airflow_provider.get_provider_info()["connection-types"]}


def _secret_value(conn_type: str, name: str) -> str:
    return f"-----BEGIN PRIVATE KEY----- {conn_type}-{name}-Pw7731 -----END PRIVATE KEY-----"


def _body(conn_type: str) -> dict[str, Any]:
    """A connection with every field of its type set (secret ones to values that must never show)."""
    secrets = airflow_provider.SECRET_FIELDS[conn_type]
    extra = {name: _secret_value(conn_type, name) if name in secrets else f"shown-{name}"
             for name in _connection_types()[conn_type]["conn-fields"]}
    return {"connection_id": f"walk_{conn_type}", "conn_type": conn_type, "host": "example.com",
            "login": "someone", "password": _secret_value(conn_type, "password"), "extra": json.dumps(extra)}


def _assert_redacted(conn_type: str, shown: dict[str, Any]) -> None:
    secrets = airflow_provider.SECRET_FIELDS[conn_type]
    text = json.dumps(shown)
    for name in (*secrets, "password"):
        assert f"{conn_type}-{name}-Pw7731" not in text, f"{conn_type}.{name} is shown in clear: {text}"
    assert shown["password"] == "***"
    extra = json.loads(shown["extra"])
    for name in _connection_types()[conn_type]["conn-fields"]:
        assert extra[name] == ("***" if name in secrets else f"shown-{name}"), f"{conn_type}.{name}: {extra[name]}"


@pytest.mark.parametrize("conn_type", sorted(airflow_provider.SECRET_FIELDS))
def test_every_secret_field_is_redacted_by_the_api_server(api: ApiServer, conn_type: str) -> None:
    client = api.client
    body = _body(conn_type)
    created = client.post("/api/v2/connections", json=body)
    assert created.status_code == 201, created.text
    _assert_redacted(conn_type, created.json())
    fetched = client.get(f"/api/v2/connections/{body['connection_id']}")
    assert fetched.status_code == 200, fetched.text
    _assert_redacted(conn_type, fetched.json())
    listed = client.get("/api/v2/connections", params={"connection_id_pattern": body["connection_id"]})
    (one,) = [c for c in listed.json()["connections"] if c["connection_id"] == body["connection_id"]]
    _assert_redacted(conn_type, one)

    # The Edit dialog sends back what it was shown (*** included): the secrets must survive it.
    edited = {**fetched.json(), "description": "edited"}
    patched = client.patch(f"/api/v2/connections/{body['connection_id']}", json=edited)
    assert patched.status_code == 200, patched.text
    _assert_redacted(conn_type, patched.json())
    stored = api.stored(body["connection_id"])
    assert stored["description"] == "edited"
    assert stored["password"] == body["password"] and stored["extra_dejson"] == json.loads(body["extra"])


def test_the_form_offers_key_and_pem_fields_as_multi_line_inputs(api: ApiServer) -> None:
    response = api.client.get("/ui/connections/hook_meta")
    assert response.status_code == 200, response.text
    forms = {hook["connection_type"]: hook for hook in response.json()}
    for conn_type, connection in _connection_types().items():
        fields = forms[conn_type]["extra_fields"] or {}
        for name in connection["conn-fields"]:
            multi_line = fields[name]["schema"].get("format") == "multiline"
            assert multi_line == (name in MULTI_LINE.get(conn_type, set())), f"{conn_type}.{name}: {fields[name]}"
