"""TensorBoard follows a run while it goes on: real TensorBoard event files (the ``tensorboard``
package's writer) in ``./logs``, uploaded as they grow, read by a real ``tensorboard`` server started
by ``training-runs tensorboard``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from airflow_provider.core import Experiment, ScriptRunConfig
from tests.helpers import wait_until, write_script

CLI = str(Path(sys.executable).parent / "training-runs")
SCRIPT = """
    import os, time
    from tensorboard.summary import Writer

    def wait_for(name):
        while not os.path.exists(os.path.join(os.environ["GO_DIR"], name)):
            time.sleep(0.05)

    writer = Writer("logs/tb")
    for step in range(3):
        writer.add_scalar("loss", 1.0 / (step + 1), step=step)
    writer.flush()
    wait_for("more")
    for step in range(3, 6):
        writer.add_scalar("loss", 1.0 / (step + 1), step=step)
    writer.flush()
    wait_for("end")
    writer.close()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_tensorboard_reads_a_runs_event_files_while_it_runs(tracking_uri: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    write_script(tmp_path / "src", SCRIPT)
    run = Experiment("tensorboard").submit(ScriptRunConfig(tmp_path / "src", "train.py",
                                                           environment_variables={"GO_DIR": str(tmp_path)}))
    run.log_upload_interval = 0.5
    waiter = threading.Thread(target=run.wait_for_completion, kwargs={"raise_on_error": False})
    waiter.start()
    port = _free_port()
    logdir = tmp_path / "tb"
    viewer = subprocess.Popen([CLI, "tensorboard", run.id, "--logdir", str(logdir), "--port", str(port),
                               "--interval", "0.5", "--reload-interval", "1", "--exit-when-done"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    try:
        def steps() -> list[int]:
            runs = _get(f"{base}/data/runs") or []
            names = [name for name in runs if name.endswith("/tb")]
            if not names:
                return []
            query = urllib.parse.urlencode({"run": names[0], "tag": "loss"})
            return [int(point[1]) for point in _get(f"{base}/data/plugin/scalars/scalars?{query}") or []]

        wait_until(lambda: steps() == [0, 1, 2], timeout=120, message="TensorBoard to show the first steps")
        assert run.get_details()["status"] == "Running"
        (tmp_path / "more").write_text("go")
        wait_until(lambda: steps() == [0, 1, 2, 3, 4, 5], timeout=120,
                   message="TensorBoard to show the steps written later")
        assert run.get_details()["status"] == "Running", "read while the run goes on"
    finally:
        (tmp_path / "end").write_text("go")
        waiter.join()
        try:
            viewer.wait(timeout=120)
        finally:
            if viewer.poll() is None:
                viewer.kill()
    output, errors = viewer.communicate()
    assert viewer.returncode == 0, errors[-3000:]
    assert f"run {run.id} ended; its logs are whole" in output
    event_files = list(logdir.rglob("events.out.tfevents.*"))
    assert len(event_files) == 1
    assert event_files[0].read_bytes() == run.download_file(
        f"logs/tb/{event_files[0].name}", tmp_path / "whole").read_bytes()
