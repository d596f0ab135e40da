"""The multi-worker deployment of ``scripts/cluster.sh``, driven from tests.

:class:`Cluster` starts the topology in a folder of its own (its own ports, worker container name and
address, so it never meets a cluster a developer started by hand) and gives tests what they need:
the Airflow REST API as admin, an MLflow client with the trainer's credentials, the workers' task logs
and a way to kill or start a worker or restart a service.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import wait_until

REPOSITORY = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPOSITORY / "scripts" / "cluster.sh"
GATEWAY = "172.28.0.1"
WORKER2_IP = "172.28.0.31"
TRACKING_CONN_ID = "mlflow_cluster"


def free_port(address: str = GATEWAY) -> int:
    """A TCP port nothing listens on at ``address``."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def gateway_present() -> bool:
    """True when this machine has the docker network's gateway address (scripts/components.sh)."""
    with socket.socket() as sock:
        try:
            sock.bind((GATEWAY, 0))
        except OSError:
            return False
    return True


@dataclass
class Cluster:
    """A running topology.

    :param folder: its state folder (``TRAINING_CLUSTER_DIR``).
    :param environment: the environment ``scripts/cluster.sh`` runs with (ports, names, folders).
    """

    folder: Path
    environment: dict[str, str]
    _api: httpx.Client | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ lifecycle
    def script(self, *arguments: str, timeout: float = 900) -> str:
        """Run ``scripts/cluster.sh ARGUMENTS``; its output (raises with it when it fails)."""
        result = subprocess.run(["bash", str(CLUSTER_SCRIPT), *arguments], env=self.environment, timeout=timeout,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise AssertionError(f"cluster.sh {' '.join(arguments)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{self.diagnosis()}")
        return result.stdout

    @property
    def dags(self) -> Path:
        return Path(self.environment["TRAINING_CLUSTER_DAGS"])

    def stop(self) -> None:
        """Stop every part; PostgreSQL's data folder (outside :attr:`folder`) is removed."""
        import shutil

        try:
            self.script("down")
        finally:
            shutil.rmtree(self.environment["TRAINING_CLUSTER_PG_DATA"], ignore_errors=True)

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def worker2_container(self) -> str:
        return self.environment["TRAINING_CLUSTER_WORKER2_NAME"]

    def secret(self, name: str) -> str:
        """A password or key from the cluster's ``secrets.env``."""
        for line in (self.folder / "secrets.env").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == name:
                return value
        raise KeyError(name)

    def diagnosis(self) -> str:
        """The tails of every component's log, for a failure message."""
        parts = []
        logs = sorted(self.logs.glob("*.log")) if self.logs.exists() else []
        for log in [*logs, Path(self.environment["TRAINING_CLUSTER_PG_DATA"]) / "server.log"]:
            with contextlib.suppress(OSError):
                parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}")
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            parts.append("--- worker-2 container\n" + subprocess.run(
                ["docker", "logs", "--tail", "40", self.worker2_container], capture_output=True, text=True,
                timeout=30).stdout)
        return "\n".join(parts)

    # ------------------------------------------------------------------ Airflow
    @property
    def api(self) -> httpx.Client:
        """The REST API, as admin."""
        if self._api is None:
            base = f"http://{GATEWAY}:{self.environment['TRAINING_CLUSTER_API_PORT']}"
            password = json.loads((self.folder / "airflow-passwords.json").read_text())["admin"]
            token = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=60)
            token.raise_for_status()
            self._api = httpx.Client(base_url=base, timeout=60,
                                     headers={"Authorization": f"Bearer {token.json()['access_token']}"})
        return self._api

    def add_connection(self, conn_id: str, conn_type: str, **fields: Any) -> None:
        """Create (or replace) an Airflow connection in the cluster's database."""
        self.api.delete(f"/api/v2/connections/{conn_id}")
        if isinstance(fields.get("extra"), dict):
            fields["extra"] = json.dumps(fields["extra"])
        response = self.api.post("/api/v2/connections", json={"connection_id": conn_id, "conn_type": conn_type,
                                                               **fields})
        assert response.status_code in (200, 201), response.text

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        def parsed() -> bool:
            response = self.api.get(f"/api/v2/dags/{dag_id}")
            return response.status_code == 200

        wait_until(parsed, timeout=timeout, message=f"DAG {dag_id} to be parsed\n{self._import_errors()}")

    def _import_errors(self) -> str:
        with contextlib.suppress(httpx.HTTPError):
            return self.api.get("/api/v2/importErrors").text[-3000:]
        return ""

    def trigger(self, dag_id: str) -> str:
        self.wait_for_dag(dag_id)
        assert self.api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).status_code == 200
        response = self.api.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        response = self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 500})
        assert response.status_code == 200, response.text
        return list(response.json()["task_instances"])

    def _answered(self, ask: Any) -> Any:
        """``ask()``, or None when the API server answered 5xx (busy: a waiting loop asks again)."""
        try:
            return ask()
        except AssertionError as exc:
            if '"Database error"' in str(exc) or "Internal Server Error" in str(exc):
                return None
            raise

    def task(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        response = self.api.get(path if map_index < 0 else f"{path}/{map_index}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_for_task(self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 300,
                      where: Any = None) -> dict[str, Any]:
        """Wait until the task is in one of ``states`` (and ``where(task)`` holds, when given)."""
        found: dict[str, Any] = {}

        def reached() -> bool:
            task = self._answered(lambda: self.task(dag_id, run_id, task_id))
            if task is None:
                return False
            found.clear()
            found.update(task)
            return found.get("state") in states and (where is None or bool(where(found)))

        try:
            wait_until(reached, timeout=timeout, message=f"{dag_id}.{task_id} in {states}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {found}\n{self.task_logs(dag_id)[-4000:]}") from None
        return found

    def wait_for_dag_run(self, dag_id: str, run_id: str, timeout: float = 600) -> list[dict[str, Any]]:
        """Wait until every task of the run has ended; its task instances."""
        ended = {"success", "failed", "upstream_failed", "skipped"}
        seen: list[dict[str, Any]] = []

        def done() -> bool:
            tasks = self._answered(lambda: self.task_instances(dag_id, run_id))
            if tasks is None:
                return False
            seen[:] = tasks
            return bool(seen) and all(ti["state"] in ended for ti in seen)

        try:
            wait_until(done, timeout=timeout, message=f"every task of {dag_id} to end")
        except AssertionError as exc:
            states = sorted((ti["task_id"], ti.get("map_index"), ti["state"]) for ti in seen)
            raise AssertionError(f"{exc}; states: {states}\n{self.diagnosis()[-6000:]}") from None
        return seen

    def task_logs(self, dag_id: str) -> str:
        """Every task log line of ``dag_id``, from both workers' log folders."""
        texts = []
        for folder in (self.logs / "worker-1-tasks", self.logs / "worker-2-tasks"):
            for path in sorted(folder.glob(f"dag_id={dag_id}/**/*.log")):
                with contextlib.suppress(OSError):
                    texts.append(f"=== {path.relative_to(self.logs)}\n{path.read_text(errors='replace')}")
        return "\n".join(texts)

    def xcom_values(self, dag_id: str, run_id: str, task_ids: Iterable[str]) -> str:
        """Every XCom of the tasks, as text."""
        texts = []
        for task_id in task_ids:
            response = self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries")
            assert response.status_code == 200, response.text
            for entry in response.json()["xcom_entries"]:
                value = self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
                                     f"{entry['key']}", params={"stringify": True, "map_index": entry["map_index"]})
                texts.append(value.text)
        return "\n".join(texts)

    # ------------------------------------------------------------------ workers and services
    @staticmethod
    def worker_number(hostname: str) -> int:
        """Which worker a task instance's ``hostname`` names (worker-2 is the container)."""
        return 2 if hostname == "worker-2" else 1

    def kill_worker(self, number: int) -> None:
        """SIGKILL a worker (worker 2: its whole container, as when its machine dies)."""
        self.script("kill", f"worker-{number}")

    def start_worker(self, number: int) -> None:
        self.script("start", f"worker-{number}")
        wait_until(self.both_workers_answer, timeout=180, message="both Celery workers to answer")

    def both_workers_answer(self) -> bool:
        result = subprocess.run(["bash", str(CLUSTER_SCRIPT), "workers"], env=self.environment, capture_output=True,
                                text=True, timeout=60)
        return result.returncode == 0

    def restart(self, service: str) -> None:
        """Stop an Airflow service or the tracking server and start it again (``cluster.sh restart``)."""
        self.script("restart", service)

    # ------------------------------------------------------------------ MLflow
    def tracking_uri(self) -> str:
        return f"http://{GATEWAY}:{self.environment['TRAINING_CLUSTER_MLFLOW_PORT']}"

    def mlflow(self) -> Any:
        """An MLflow client logged in as the trainer."""
        from mlflow.tracking import MlflowClient

        os.environ["MLFLOW_TRACKING_USERNAME"] = "trainer"
        os.environ["MLFLOW_TRACKING_PASSWORD"] = self.secret("MLFLOW_TRAINER_PASSWORD")
        return MlflowClient(self.tracking_uri())

    def runs_of(self, experiment: str) -> list[Any]:
        client = self.mlflow()
        found = client.get_experiment_by_name(experiment)
        return [] if found is None else list(client.search_runs([found.experiment_id], max_results=1000))


def start_cluster(folder: Path) -> Cluster:
    """Start a topology in ``folder`` (fresh ports and a worker container of its own)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINING_RUNS_", "MLFLOW_", "AIRFLOW"))}
    environment.update({
        "TRAINING_CLUSTER_DIR": str(folder),
        "TRAINING_CLUSTER_DAGS": str(folder / "dags"),
        # PostgreSQL runs as its own user, which cannot enter pytest's private temporary folders.
        "TRAINING_CLUSTER_PG_DATA": f"/tmp/training-runs-test-postgres-{os.getpid()}-{folder.name}",
        "TRAINING_CLUSTER_PG_PORT": str(free_port()),
        "TRAINING_CLUSTER_REDIS_PORT": str(free_port()),
        "TRAINING_CLUSTER_MLFLOW_PORT": str(free_port()),
        "TRAINING_CLUSTER_API_PORT": str(free_port()),
        "TRAINING_CLUSTER_WORKER2_NAME": f"training-runs-test-worker-2-{os.getpid()}",
        "TRAINING_CLUSTER_WORKER2_IP": WORKER2_IP,
        "TRAINING_CLUSTER_CONCURRENCY": os.environ.get("TRAINING_CLUSTER_CONCURRENCY", "16"),
    })
    (folder / "dags").mkdir(parents=True, exist_ok=True)
    cluster = Cluster(folder, environment)
    started = time.monotonic()
    cluster.script("up")
    cluster.startup_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    return cluster
