"""Browser tests: a real Chromium (selenium) against a real ``airflow standalone`` and a real
``mlflow server``, screenshots kept as test artifacts (see tests/system/browser.py).

What a person sees: the provider's connection forms in Airflow's UI (the fields each one shows and
hides, defaults and help texts), the "Test" button of an MLflow connection, and the "MLflow run"
extra link of a finished training task and of a sweep's task, followed to MLflow's own UI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

import airflow_provider
from tests.conftest import skip_or_fail
from tests.helpers import stop_process_tree, wait_until
from tests.system.airflow_api import api_call, trigger_dag
from tests.system.browser import Browser, artifacts_folder, missing_browser, start_chromium, text_xpath, xpath_literal

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
CONN_ID = "browser_mlflow"

SCRIPT = """
import argparse
from airflow_provider.core import Run
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()
Run.get_context().log("loss", 0.5 if args.epochs > 1 else args.lr)
"""

DAGS = """
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider.core.hyperdrive import GridParameterSampling, choice
from airflow_provider.operators import HyperparameterSweepOperator, SubmitTrainingRunOperator

with DAG("browser_train", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SubmitTrainingRunOperator(
        task_id="train", source_directory={source!r}, script="train.py",
        arguments=["--lr", "0.01", "--epochs", "2"], compute_target="local",
        experiment_name="browser-train", tracking_conn_id={conn_id!r},
    )

with DAG("browser_sweep", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    HyperparameterSweepOperator(
        task_id="sweep", source_directory={source!r}, script="train.py", compute_target="local",
        hyperparameter_sampling=GridParameterSampling({{"--lr": choice(0.1, 0.01)}}),
        primary_metric_name="loss", primary_metric_goal="MINIMIZE", max_concurrent_runs=2,
        tracking_conn_id={conn_id!r}, experiment_name="browser-sweep",
    )
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Services:
    home: Path
    airflow_url: str
    mlflow_url: str
    api: httpx.Client
    runs: dict[str, str] = field(default_factory=dict)  # DAG id -> the id of the run the fixture triggered

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return api_call(self.api, method, path, **kwargs)

    def trigger(self, dag_id: str) -> str:
        return trigger_dag(self.api, dag_id)

    def finished_run(self, dag_id: str, timeout: float = 150) -> str:
        """The id of the DAG's triggered run, once it succeeded (its task logs if it did not)."""
        run_id = self.runs[dag_id]
        found: dict[str, Any] = {}

        def over() -> bool:
            response = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            found.update(response.json() if response.status_code == 200 else {})
            return found.get("state") in ("success", "failed")

        wait_until(over, timeout=timeout, message=f"{dag_id} run {run_id} to end")
        assert found["state"] == "success", f"{dag_id} {found['state']}:\n{self.task_logs(dag_id)[-4000:]}"
        return run_id

    def mlflow_runs(self, experiment: str) -> tuple[str, list[Run]]:
        """The experiment's id and its runs, asked of the MLflow server."""
        client = MlflowClient(self.mlflow_url)
        found = client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment!r} on {self.mlflow_url}"
        return found.experiment_id, list(client.search_runs([found.experiment_id]))

    def run_page(self, experiment_id: str, run_id: str) -> str:
        """MLflow's UI address of a run."""
        return f"{self.mlflow_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def task_logs(self, dag_id: str) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted((self.home / "logs").rglob("*"))
                       if p.is_file() and f"dag_id={dag_id}" in str(p))


def _wait_ready(process: subprocess.Popen[bytes], log: Path, url: str, what: str, timeout: float) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=5).status_code == 200
        return False

    wait_until(ready, timeout=timeout, message=f"{what} to answer")


@contextlib.contextmanager
def services(home: Path) -> Iterator[Services]:
    """An ``mlflow server`` and an ``airflow standalone`` (loopback only, no login: every user is an
    admin) with the two DAGs and an ``mlflow`` connection to that server."""
    source, dags, artifacts = home / "source", home / "dags", home / "mlflow-artifacts"
    for folder in (source, dags, artifacts):
        folder.mkdir()
    (source / "train.py").write_text(textwrap.dedent(SCRIPT))
    (dags / "browser_dags.py").write_text(DAGS.format(source=str(source), conn_id=CONN_ID))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINING_RUNS_", "MLFLOW_", "AIRFLOW"))}
    clean["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    mlflow_port, airflow_port = _free_port(), _free_port()
    mlflow_url, airflow_url = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{airflow_port}"
    environment = {
        **clean,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(airflow_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{airflow_url}/execution/",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps({"conn_type": "mlflow", "host": mlflow_url}),
    }
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        mlflow_log = open(home / "mlflow.log", "wb")  # noqa: SIM115 - closed at teardown
        logs.append(mlflow_log)
        processes.append(subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(artifacts)],
            env=clean, cwd=home, stdout=mlflow_log, stderr=subprocess.STDOUT, start_new_session=True))
        airflow_log = open(home / "standalone.log", "wb")  # noqa: SIM115 - closed at teardown
        logs.append(airflow_log)
        processes.append(subprocess.Popen([str(VENV_BIN / "airflow"), "standalone"], env=environment, cwd=home,
                                          stdout=airflow_log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_ready(processes[0], home / "mlflow.log", f"{mlflow_url}/health", "mlflow server", 120)
        _wait_ready(processes[1], home / "standalone.log", f"{airflow_url}/api/v2/monitor/health",
                    "airflow standalone", 180)
        api = httpx.Client(base_url=airflow_url, timeout=30)  # every request is an admin's: no token
        found = Services(home, airflow_url, mlflow_url, api)
        wait_until(lambda: all(found.call("GET", f"/api/v2/dags/{dag_id}").status_code == 200
                               for dag_id in ("browser_train", "browser_sweep")),
                   timeout=120, message="the DAGs to be parsed")
        yield found
    finally:
        for process in reversed(processes):
            stop_process_tree(process.pid)
            process.wait()
        for log in logs:
            log.close()



# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The services, both DAGs triggered at once: they run while the form tests do."""
    reason = missing_browser()
    if reason:
        skip_or_fail(reason)
    with services(tmp_path_factory.mktemp("browser-ui")) as found:
        found.runs.update({dag_id: found.trigger(dag_id) for dag_id in ("browser_train", "browser_sweep")})
        yield found


@pytest.fixture(scope="module")
def chromium(ui: Services) -> Iterator[WebDriver]:
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(request: pytest.FixtureRequest, chromium: WebDriver) -> Iterator[Browser]:
    """The browser for one test, its screenshots named after the test; a failed test leaves a
    ``<test>-NN-failed.png`` of what the page showed then."""
    failed_before = request.session.testsfailed
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.removeprefix("test_").lower()).strip("-")
    browser = Browser(chromium, artifacts_folder(), name)
    browser.normal()
    yield browser
    if request.session.testsfailed > failed_before:  # the call's report is counted before teardown
        with contextlib.suppress(Exception):
            print(f"screenshot of the failure: {browser.shot('failed')}")


# --- a. the connection forms ----------------------------------------------------------------------

CONNECTION_TYPES = {info["hook-name"]: info for info in airflow_provider.get_provider_info()["connection-types"]}
STANDARD_LABELS = {"host": "Host", "login": "Login", "password": "Password", "port": "Port", "schema": "Schema"}
DIALOG = "//*[@role='dialog']"


def _open_add_form(page: Browser, ui: Services, type_name: str) -> None:
    """Admin -> Connections -> Add Connection, the connection type chosen by its name."""
    page.open(f"{ui.airflow_url}/connections")
    page.click_on(text_xpath("Add Connection", "button"), "the Add Connection button")
    box = page.visible(f"{DIALOG}//input[@role='combobox']", "the Connection Type choice")
    box.click()
    box.send_keys(type_name)
    page.click_on(f"//*[@role='option'][normalize-space(.)={xpath_literal(type_name)}]", f"the option {type_name!r}")


def _shown_standard_fields(page: Browser) -> dict[str, str]:
    """The standard fields the open form shows: name -> label."""
    shown = {}
    for element in page.all_visible(f"{DIALOG}//input[@name] | {DIALOG}//textarea[@name]"):
        name = element.get_attribute("name") or ""
        if name in STANDARD_LABELS:
            label = element.find_element(By.XPATH, f"//label[@for={xpath_literal(element.get_attribute('id') or '')}]")
            shown[name] = " ".join(label.text.split())
    return shown


def _field(page: Browser, label: str) -> Any:
    """The form field (Chakra's field root: label, input and help text) labelled ``label``."""
    return page.visible(f"{DIALOG}//*[@data-scope='field' and @data-part='root']"
                        f"[.//label[normalize-space(.)={xpath_literal(label)}]]", f"the field {label!r}")


@pytest.mark.parametrize("type_name", list(CONNECTION_TYPES))
def test_connection_form(page: Browser, ui: Services, type_name: str) -> None:
    """Each connection type's form shows the standard fields its hook uses (relabelled), none it
    ignores, and every extra field with its label and help text; the promises people rely on:
    MPI asks for no Host (its hosts are the Hosts field), Docker for no Port and verifies the
    daemon's certificate by default, SSH explains what a pinned host key is."""
    info = CONNECTION_TYPES[type_name]
    behaviour = info["ui-field-behaviour"]
    expected = {name: behaviour["relabeling"].get(name, label) for name, label in STANDARD_LABELS.items()
                if name not in behaviour["hidden-fields"]}
    page.tall()
    _open_add_form(page, ui, type_name)
    page.visible(text_xpath("Standard Fields", "button"), "the Standard Fields section")
    page.visible(f"{DIALOG}//textarea[@name='description']", "the standard fields")
    page.wait(lambda _driver: _shown_standard_fields(page) == expected,
              lambda: f"the standard fields {expected} (shown: {_shown_standard_fields(page)})", timeout=10)
    page.shot("standard-fields")
    if info["connection-type"] == "training_mpi":
        assert "host" not in _shown_standard_fields(page), "the MPI form asks for a Host, which its hook ignores"
    if info["connection-type"] == "training_docker":
        assert "port" not in _shown_standard_fields(page), "the Docker form asks for a Port (the URL holds it)"

    page.click_on(text_xpath("Extra Fields", "button"), "the Extra Fields section")
    fields = info["conn-fields"]
    labels = [spec["label"] for spec in fields.values()]

    def missing() -> list[str]:
        return [label for label in labels
                if not page.all_visible(f"{DIALOG}//label[normalize-space(.)={xpath_literal(label)}]")]

    page.wait(lambda _driver: not missing(), lambda: f"the extra fields {missing()}", timeout=10)
    page.shot("extra-fields")
    for name, spec in fields.items():
        help_text = _field(page, spec["label"]).find_elements(By.XPATH, ".//*[@data-part='helper-text']")
        shown = " ".join(" ".join(e.text.split()) for e in help_text)
        assert " ".join(spec.get("description", "").split()) in shown, f"{name}: help text {shown!r}"
    if info["connection-type"] == "training_docker":
        skip = _field(page, fields["tls_skip_verify"]["label"]).find_element(By.XPATH, ".//input[@type='checkbox']")
        assert not skip.is_selected(), "the Docker form's 'Skip checking the daemon's certificate' switch is on"
    if info["connection-type"] == "training_mpi":
        _field(page, fields["hosts"]["label"])
    if info["connection-type"] == "training_ssh":
        description = fields["host_key"].get("description", "")
        assert description, "the SSH connection type gives 'Pinned host key' no help text"
        shown = _field(page, "Pinned host key").find_element(By.XPATH, ".//*[@data-part='helper-text']").text
        assert " ".join(shown.split()) == " ".join(description.split())


# --- b. the Test button ---------------------------------------------------------------------------


def test_test_connection_button(page: Browser, ui: Services) -> None:
    """The MLflow connection's Test button reaches the server and says so, naming it."""
    # Stored with its port apart: Airflow 3.3's list sends port Number(null) = 0 for a connection
    # without one, which its API takes for another destination (400; apache/airflow#73298).
    host, port = ui.mlflow_url.rsplit(":", 1)
    response = ui.call("POST", "/api/v2/connections", json={
        "connection_id": "browser_mlflow_ui", "conn_type": "mlflow", "host": host, "port": int(port)})
    assert response.status_code == 201, response.text
    page.open(f"{ui.airflow_url}/connections")
    row = "//tr[./td[normalize-space(.)='browser_mlflow_ui']]"
    page.visible(row, "the connection's row")
    page.shot("connections")
    page.click_on(f"{row}//button[@aria-label='Test Connection']", "the row's Test Connection button")
    toast = page.visible("//*[@data-scope='toast' and @data-part='root']", "the test's answer")
    title = toast.find_element(By.XPATH, ".//*[@data-part='title']").text
    message = " ".join(e.text for e in toast.find_elements(By.XPATH, ".//*[@data-part='description']"))
    page.shot("tested")
    assert (toast.get_attribute("data-type"), title) == ("success", "Test Connection Successful"), message
    assert ui.mlflow_url in message, message


# --- c, d. the "MLflow run" link ------------------------------------------------------------------


def _mlflow_link(page: Browser, ui: Services, dag_id: str, task_id: str) -> str:
    """Open the task instance's page, then its Details (where Airflow 3 lists extra links); the
    "MLflow run" link's address."""
    run_id = ui.finished_run(dag_id)
    page.open(f"{ui.airflow_url}/dags/{dag_id}/runs/{run_id}/tasks/{task_id}")
    page.visible(f"//*[normalize-space(.)={xpath_literal(task_id)}]/following::*[normalize-space(.)='Success']",
                 "the task's Success badge")
    page.shot("task")
    page.click_on(text_xpath("Details", "a"), "the Details tab")
    link = page.visible(text_xpath("MLflow run", "a"), "the 'MLflow run' extra link")
    page.shot("extra-link")
    return str(link.get_attribute("href"))


def _open_run(page: Browser, url: str, run: Run) -> None:
    page.open(url)
    page.text(run.info.run_name, f"MLflow's page of run {run.info.run_name!r}")
    page.wait_for_page_text(run.info.run_id)


def test_training_task_links_to_its_mlflow_run(page: Browser, ui: Services) -> None:
    """A finished training task's "MLflow run" link opens, on the tracking server, the run it made."""
    href = _mlflow_link(page, ui, "browser_train", "train")
    experiment_id, runs = ui.mlflow_runs("browser-train")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    (run,) = runs
    assert href == ui.run_page(experiment_id, run.info.run_id)
    _open_run(page, href, run)
    page.shot("mlflow-run")
    assert run.info.run_name in page.page_text()


def test_sweep_task_links_to_its_parent_run(page: Browser, ui: Services) -> None:
    """A sweep task's "MLflow run" link opens the sweep's parent run, which lists its trials as
    child runs; the experiment's runs list nests them under it."""
    href = _mlflow_link(page, ui, "browser_sweep", "sweep")
    experiment_id, runs = ui.mlflow_runs("browser-sweep")
    (parent,) = [r for r in runs if r.data.tags.get("training.sweep.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 2, [r.info.run_name for r in runs]
    assert href == ui.run_page(experiment_id, parent.info.run_id)
    _open_run(page, href, parent)
    expected = {t.info.run_id: t.info.run_name for t in trials}

    def child_runs() -> dict[str, str]:  # what the parent run's "Child runs" lists: run id -> name
        return {str(a.get_attribute("href")).rsplit("/", 1)[-1]: " ".join(a.text.split())
                for a in page.all_visible("//*[@data-testid='key-value-Child runs']//a")}

    page.wait(lambda _driver: child_runs() == expected,
              lambda: f"the parent run's Child runs to list {expected} (shown: {child_runs()})", timeout=20)
    page.shot("mlflow-parent-run")

    page.open(f"{ui.mlflow_url}/#/experiments/{experiment_id}/runs")
    row = f"//*[@role='row'][@row-id={xpath_literal(parent.info.run_id)}]"
    page.visible(row, "the parent run's row")
    page.shot("mlflow-runs")
    page.click_on(f"{row}//*[@role='gridcell'][.//a]//button", "the expander of the parent run's Run Name")
    for trial in trials:
        page.visible(f"//*[@role='row'][@row-id={xpath_literal(trial.info.run_id)}]", f"{trial.info.run_name}'s row")
    page.shot("mlflow-runs-nested")
