"""A script in a container that calls ``mlflow`` itself, against a real ``mlflow server``.

The provider sets ``MLFLOW_TRACKING_URI`` and ``MLFLOW_RUN_ID`` for the job; with the container on
the host's network, the script reaches the server on 127.0.0.1 and logs to the run directly, next
to what ``Run.get_context()`` logs through the events file (relayed by the watcher). The image has
no mlflow: this machine's site-packages is mounted read-only and put on ``PYTHONPATH`` (the image's
Python and this one are both 3.11, so compiled wheels load).
"""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import Experiment, ScriptRunConfig, TargetError
from airflow_provider.core.targets.docker import DEFAULT_IMAGE, LABEL_RUN_ID, DockerTarget
from tests.conftest import skip_or_fail
from tests.helpers import write_script

HOST_SITE = "/opt/host-site"


@pytest.fixture
def host_network_target() -> Iterator[DockerTarget]:
    """A Docker target on the host's network with this interpreter's site-packages mounted read-only."""
    if sys.version_info[:2] != (3, 11):
        skip_or_fail(f"the image's Python is 3.11; this one is {sys.version.split()[0]}: its wheels would not load")
    site_packages = sysconfig.get_paths()["purelib"]
    target = DockerTarget(run_options={"network_mode": "host",
                                       "volumes": {site_packages: {"bind": HOST_SITE, "mode": "ro"}}})
    try:
        target.check()
    except TargetError as exc:
        skip_or_fail(f"no Docker engine (run scripts/components.sh as root): {exc}")
    try:
        target.client.images.get(DEFAULT_IMAGE)
    except Exception:
        skip_or_fail(f"no base image {DEFAULT_IMAGE} (run scripts/components.sh)")
    yield target


def test_a_script_in_a_container_logs_to_the_server_directly(mlflow_server: str, host_network_target: DockerTarget,
                                                              tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os
        import mlflow
        from airflow_provider.core import Run
        print("mlflow from", mlflow.__file__, "to", os.environ["MLFLOW_TRACKING_URI"], flush=True)
        mlflow.log_metric("direct", 1.5)  # MLFLOW_RUN_ID: the provider's run, resumed, not a new one
        mlflow.log_param("origin", "container")
        Run.get_context().log("relayed", 2.0)
    """)
    experiment = Experiment("docker-direct", tracking_uri=mlflow_server)
    run = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=host_network_target,
                                            environment_variables={"PYTHONPATH": HOST_SITE}))
    client = host_network_target.client
    try:
        lines: list[str] = []
        details = run.wait_for_completion(output=lines.append, raise_on_error=False)
        assert details["status"] == "Completed", (details, lines[-30:])
        assert any(f"from {HOST_SITE}/mlflow/" in line and mlflow_server in line for line in lines), lines
        server = MlflowClient(mlflow_server)
        assert [(m.value, m.step) for m in server.get_metric_history(run.id, "direct")] == [(1.5, 0)]
        assert [(m.value, m.step) for m in server.get_metric_history(run.id, "relayed")] == [(2.0, 0)]
        remote = server.get_run(run.id)
        assert remote.data.params["origin"] == "container"
        assert remote.info.status == "FINISHED" and remote.data.tags["training.state"] == "Completed"
        (only,) = server.search_runs([experiment.id])  # mlflow resumed the run rather than starting another
        assert only.info.run_id == run.id
        assert client.containers.list(all=True, filters={"label": f"{LABEL_RUN_ID}={run.id}"}) == []
    finally:
        for container in client.containers.list(all=True, filters={"label": f"{LABEL_RUN_ID}={run.id}"}):
            container.remove(force=True)
