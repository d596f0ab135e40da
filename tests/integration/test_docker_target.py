"""The Docker target against a real dockerd and a locally built base image (no registry)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import Experiment, RunFailedError, ScriptRunConfig, TargetError
from airflow_provider.core.targets.docker import DEFAULT_IMAGE, LABEL_MANAGED, DockerTarget
from tests.helpers import GROWING_LOG_SCRIPT, assert_live_log_parts, write_script

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _client() -> Any:
    import docker

    return docker.from_env()


@pytest.fixture
def target(docker_target: DockerTarget) -> DockerTarget:
    return docker_target


def test_a_run_in_a_container_lands_metrics_outputs_and_logs(target: DockerTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os, sys
        from airflow_provider.core import Run
        run = Run.get_context()
        for i in range(20):
            run.log("loss", 1.0 / (i + 1))
        open("outputs/model.txt", "w").write("in a container")  # ./outputs exists, as on Azure ML
        print("python", sys.version.split()[0], "hostname", os.uname().nodename, "args", sys.argv[1:])
    """)
    lines: list[str] = []
    run = Experiment("docker").submit(ScriptRunConfig(tmp_path / "src", "train.py", arguments=["--lr", 0.1],
                                                      compute_target=target))
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", details
    assert details["environment"]["description"].startswith(f"image {DEFAULT_IMAGE}")
    assert any("args ['--lr', '0.1']" in line for line in lines)
    assert not any(os.uname().nodename in line for line in lines if "hostname" in line)  # not this host
    assert len(MlflowClient().get_metric_history(run.id, "loss")) == 20
    assert run.download_file("outputs/model.txt", tmp_path / "m.txt").read_text() == "in a container"
    assert "system_logs/driver.log" in details["logFiles"]


def test_a_failing_script_in_a_container(target: DockerTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os, sys
        os.makedirs("outputs", exist_ok=True)
        open("outputs/partial.txt", "w").write("partial")
        sys.exit(3)
    """)
    run = Experiment("docker-fail").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and details["exitCode"] == 3
    assert "exited with code 3" in details["error"]["message"]
    assert "outputs/partial.txt" in run.get_file_names()


def test_timeout_and_cancel_stop_the_container(target: DockerTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", os.environ["STUBBORN"]])
        print("started", flush=True)
        time.sleep(300)
    """)
    experiment = Experiment("docker-stop")
    variables = {"STUBBORN": STUBBORN}
    timed = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                              max_run_duration_seconds=2, environment_variables=variables))
    with pytest.raises(RunFailedError, match="max_run_duration_seconds=2"):
        timed.wait_for_completion()
    canceled = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                 environment_variables=variables))
    canceled.cancel()
    assert canceled.get_details()["status"] == "Canceled"
    assert canceled.get_details()["mlflowStatus"] == "KILLED"


def test_a_retry_reattaches_to_the_running_container(target: DockerTarget, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os, time
        os.makedirs("outputs", exist_ok=True)
        open(f"outputs/execution-{os.getpid()}-{time.time()}", "w").close()
        time.sleep(3)
    """)
    experiment = Experiment("docker-reattach")
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target)
    first = experiment.submit(config, run_key="dag/task/run/0")
    second = experiment.submit(config, run_key="dag/task/run/0")
    assert second.id == first.id and second.handle == first.handle
    second.wait_for_completion()
    assert len([f for f in first.get_file_names() if f.startswith("outputs/execution-")]) == 1


def test_out_of_memory_is_reported_as_such(tmp_path: Path, target: DockerTarget) -> None:
    limited = DockerTarget(run_options={"mem_limit": "64m", "memswap_limit": "64m"})
    write_script(tmp_path / "src", """
        blocks = []
        for _ in range(100):
            blocks.append(bytearray(16 * 1024 * 1024))
    """)
    run = Experiment("docker-oom").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=limited))
    details = run.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    assert "ran out of memory" in details["error"]["message"], details["error"]


def test_a_container_that_cannot_start_fails_before_running(target: DockerTarget, tmp_path: Path) -> None:
    broken = DockerTarget(python="/no/such/python")
    write_script(tmp_path / "src", "print('never')\n")
    experiment = Experiment("docker-nostart")
    with pytest.raises(TargetError, match="did not start"):
        experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=broken))
    (run,) = MlflowClient().search_runs([experiment.id])
    assert run.info.status == "FAILED" and "did not start" in run.data.tags["training.error"]


def test_reading_a_container_that_stopped_since_the_last_poll_reads_its_filesystem(target: DockerTarget) -> None:
    """The race CI once hit: the container ends between the poll that saw it running and the read."""
    from airflow_provider.core.targets.base import JobHandle
    from airflow_provider.runtime import job_runner

    log = f"/job/{job_runner.DRIVER_LOG}"
    container = target.client.containers.run(
        DEFAULT_IMAGE, ["sh", "-c", f"mkdir -p /job && printf 'one\\ntwo\\n' > {log}"], detach=True,
        labels={LABEL_MANAGED: "true"},
    )
    try:
        container.wait(timeout=30)
        handle = JobHandle("docker", "stopped-since", str(container.id))
        target._states[handle.location] = "running"  # what the last poll saw
        target._sizes[(handle.location, log)] = 8 << 20  # a large log: read by exec, which now fails
        assert target.read(handle, "driver", 4) == b"two\n"
    finally:
        container.remove(force=True)


def test_the_containers_output_is_its_driver_log_streamed_to_the_launching_process(
        target: DockerTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``docker logs -f training-run-<run id>`` follows a run's output as it runs, and the process
    that launched the container reads the driver log from that stream: nothing is copied out of the
    container for it at the end, and the bytes are exact (not UTF-8, no newline at the end)."""
    import time

    from airflow_provider.runtime import job_runner

    write_script(tmp_path / "src", """
        import sys, time
        sys.stdout.buffer.write(b"started\\n\\xff not utf-8, no newline")
        sys.stdout.flush()
        time.sleep(120)
    """)
    copied: list[str] = []
    archive = target._archive
    monkeypatch.setattr(target, "_archive", lambda handle, path: copied.append(path) or archive(handle, path))
    run = Experiment("docker-stream").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))
    assert run.handle is not None
    deadline = time.monotonic() + 60
    while b"started" not in bytes(_client().api.logs(run.handle.location, stdout=True, stderr=False)):
        assert time.monotonic() < deadline, "the container's stdout never showed the script's output"
        time.sleep(0.1)
    run.cancel()
    assert run.get_details()["status"] == "Canceled"
    logged = run.download_file("system_logs/driver.log", tmp_path / "driver.log").read_bytes()
    assert logged == b"started\n\xff not utf-8, no newline"
    assert f"/job/{job_runner.DRIVER_LOG}" not in copied


def test_logs_go_up_as_they_grow_from_a_container(target: DockerTarget, tmp_path: Path) -> None:
    """``./logs`` in a container reaches MLflow while the run goes on, each byte once (parts)."""
    write_script(tmp_path / "src", GROWING_LOG_SCRIPT)
    run = Experiment("docker-live-logs").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))
    run.log_upload_interval = 0.5
    assert run.wait_for_completion()["status"] == "Completed"
    assert_live_log_parts(run, tmp_path)
