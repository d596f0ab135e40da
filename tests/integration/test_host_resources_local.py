"""GPUs, CPUs and memory of runs on a shared host, on the local target (the same supervisor runs on
SSH hosts): devices reserved and released through the host's reservation file, a run waiting
``Queued`` with the reason while they are held, a dead job's reservation reclaimed, a run that
can never get its GPUs refused before compute, and CPU and memory limits on the run's processes.

No GPU is needed: the host declares its devices on the connection, and the test reads what the
run was given (``CUDA_VISIBLE_DEVICES``) instead of touching a GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Experiment, Resources, ScriptRunConfig
from airflow_provider.core.targets.host_sharing import HostSharing
from airflow_provider.core.targets.local import LocalTarget
from airflow_provider.runtime import job_runner
from airflow_provider.runtime.gpu_reservations import ReservationLedger
from tests.helpers import pid_alive, wait_until, write_script

pytestmark = pytest.mark.integration

HOLDS_UNTIL_RELEASED = """
import json, os, sys, time
os.makedirs("outputs", exist_ok=True)
json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "order": os.environ.get("CUDA_DEVICE_ORDER")},
          open("outputs/devices.json", "w"))
open(sys.argv[1] + ".started", "w").close()
deadline = time.time() + 120
while not os.path.exists(sys.argv[1]) and time.time() < deadline:
    time.sleep(0.05)
"""


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "host" / "reservations.json"


def _target(ledger: Path, gpus: tuple[str, ...] = ("0", "1", "2"), timeout: float = 120.0) -> LocalTarget:
    return LocalTarget(host_sharing=HostSharing(gpus, str(ledger), timeout))


def _holding_run(target: LocalTarget, folder: Path, release: Path, gpus: int = 2):  # type: ignore[no-untyped-def]
    write_script(folder, HOLDS_UNTIL_RELEASED)
    config = ScriptRunConfig(folder, "train.py", arguments=[str(release)], compute_target=target,
                             resources=Resources(gpus=gpus), system_metrics_interval_seconds=0)
    return Experiment("shared-gpus").submit(config)


def _devices(run, folder: Path) -> list[str]:  # type: ignore[no-untyped-def]
    seen = json.loads(run.download_file("outputs/devices.json", str(folder / "devices.json")).read_text())
    assert seen["order"] == "PCI_BUS_ID"  # the indices nvidia-smi shows, which the ledger reserves
    return str(seen["cuda"]).split(",")


def test_a_second_run_waits_queued_until_the_first_frees_its_gpus(ledger: Path, tmp_path: Path) -> None:
    target = _target(ledger)
    first = _holding_run(target, tmp_path / "a", tmp_path / "release-a")
    wait_until((tmp_path / "release-a.started").exists, 60, "the first run to start")
    second = _holding_run(target, tmp_path / "b", tmp_path / "release-b")
    wait_until(lambda: second.get_status() == "Queued", 60, "the second run to show Queued")
    reason = MlflowClient().get_run(second.id).data.tags["training.queue_reason"]
    assert "2 GPUs" in reason and "1 of 3 free" in reason, reason
    assert not (tmp_path / "release-b.started").exists()
    state = job_runner.job_state(second.handle.location)  # what every watcher reads
    assert state["state"] == "queued" and "1 of 3 free" in state["message"]

    (tmp_path / "release-a").touch()
    assert first.wait_for_completion()["status"] == "Completed"
    held_first = _devices(first, tmp_path / "a")
    assert held_first == ["0", "1"]
    wait_until((tmp_path / "release-b.started").exists, 60, "the second run to start once GPUs are free")
    (tmp_path / "release-b").touch()
    assert second.wait_for_completion()["status"] == "Completed"
    held_second = _devices(second, tmp_path / "b")
    assert len(held_second) == 2 and set(held_second) <= {"0", "1", "2"}
    assert ReservationLedger(str(ledger)).holders() == {}  # all released
    log = second.download_file("system_logs/driver.log", str(tmp_path / "driver.log")).read_text()
    assert f"GPUs {','.join(held_second)} reserved after waiting" in log


def test_a_dead_jobs_reservation_is_reclaimed(ledger: Path, tmp_path: Path) -> None:
    target = _target(ledger, gpus=("0", "1"))
    first = _holding_run(target, tmp_path / "a", tmp_path / "release-a")
    wait_until((tmp_path / "release-a.started").exists, 60, "the first run to start")
    runner = job_runner.read_runner_json(first.handle.location)
    assert runner is not None
    os.kill(int(runner["runner_pid"]), signal.SIGKILL)  # its supervisor dies holding both GPUs
    wait_until(lambda: not pid_alive(int(runner["runner_pid"])), 30, "the supervisor to die")
    second = _holding_run(target, tmp_path / "b", tmp_path / "release-b")
    wait_until((tmp_path / "release-b.started").exists, 60, "the second run to get the dead job's GPUs")
    (tmp_path / "release-b").touch()
    assert second.wait_for_completion()["status"] == "Completed"
    assert _devices(second, tmp_path / "b") == ["0", "1"]
    assert first.wait_for_completion(raise_on_error=False)["status"] == "Failed"


def test_the_queue_timeout_fails_the_run_saying_a_retry_can_help(ledger: Path, tmp_path: Path) -> None:
    first = _holding_run(_target(ledger, gpus=("0",)), tmp_path / "a", tmp_path / "release-a", gpus=1)
    wait_until((tmp_path / "release-a.started").exists, 60, "the first run to start")
    second = _holding_run(_target(ledger, gpus=("0",), timeout=2), tmp_path / "b", tmp_path / "release-b", gpus=1)
    details = second.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    message = details["error"]["message"]
    assert "queue_timeout_seconds=2" in message and "a retry can help" in message, message
    (tmp_path / "release-a").touch()
    assert first.wait_for_completion()["status"] == "Completed"


def test_more_gpus_than_the_host_has_is_refused_before_compute(ledger: Path, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('never runs')\n")
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=_target(ledger, gpus=("0", "1")),
                             resources=Resources(gpus=4))
    with pytest.raises(ConfigurationError, match=r"resources\.gpus.*declares 2"):
        Experiment("too-many-gpus").submit(config)
    assert not ledger.exists()


def test_a_script_past_its_memory_limit_ends_out_of_memory_naming_the_limit(ledger: Path, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        blocks = []
        for _ in range(40):
            blocks.append(bytearray(16 * 1024 * 1024))
        print("allocated past the limit")
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=_target(ledger),
                             resources=Resources(memory_gb=0.25))
    details = Experiment("host-memory").submit(config).wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed"
    message = details["error"]["message"]
    assert "out of memory" in message and "256 MiB" in message and "resources.memory_gb" in message, message


def test_a_run_within_its_limits_completes_on_the_cpus_it_was_given(ledger: Path, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import json, os
        blocks = [bytearray(16 * 1024 * 1024) for _ in range(4)]
        os.makedirs("outputs", exist_ok=True)
        cgroups = open("/proc/self/cgroup").read()
        json.dump({"cpus": sorted(os.sched_getaffinity(0)), "cgroups": cgroups}, open("outputs/seen.json", "w"))
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=_target(ledger),
                             resources=Resources(cpus=1, memory_gb=0.5))
    run = Experiment("host-limits").submit(config)
    assert run.wait_for_completion()["status"] == "Completed"
    seen = json.loads(run.download_file("outputs/seen.json", str(tmp_path / "seen.json")).read_text())
    log = run.download_file("system_logs/driver.log", str(tmp_path / "driver.log")).read_text()
    assert "memory limit 512 MiB" in log or "512 MiB" in log, log
    if "training-runs" in seen["cgroups"]:  # cgroups: one CPU's worth of quota on the job's cgroup
        assert "cgroup" in log
    else:  # no writable cgroups: the run is pinned to one CPU
        assert len(seen["cpus"]) == 1


def test_a_run_canceled_while_it_waits_for_gpus_ends_canceled_holding_nothing(ledger: Path, tmp_path: Path) -> None:
    target = _target(ledger, gpus=("0",))
    first = _holding_run(target, tmp_path / "a", tmp_path / "release-a", gpus=1)
    wait_until((tmp_path / "release-a.started").exists, 60, "the first run to start")
    second = _holding_run(target, tmp_path / "b", tmp_path / "release-b", gpus=1)
    wait_until(lambda: second.get_status() == "Queued", 60, "the second run to show Queued")
    second.cancel()
    assert second.get_status() == "Canceled"
    assert not (tmp_path / "release-b.started").exists()
    assert [entry["gpus"] for entry in ReservationLedger(str(ledger)).holders().values()] == [["0"]]
    (tmp_path / "release-a").touch()
    assert first.wait_for_completion()["status"] == "Completed"
    assert ReservationLedger(str(ledger)).holders() == {}


def test_a_run_asking_for_no_gpu_on_a_sharing_host_sees_none(ledger: Path, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import json, os
        os.makedirs("outputs", exist_ok=True)
        json.dump({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}, open("outputs/devices.json", "w"))
    """)
    run = Experiment("no-gpu-asked").submit(ScriptRunConfig(tmp_path / "src", "train.py",
                                                           compute_target=_target(ledger)))
    assert run.wait_for_completion()["status"] == "Completed"
    seen = json.loads(run.download_file("outputs/devices.json", str(tmp_path / "devices.json")).read_text())
    assert seen["cuda"] == ""  # not a GPU another run reserved
    log = run.download_file("system_logs/driver.log", str(tmp_path / "driver.log")).read_text()
    assert "only to runs that ask for them (resources.gpus)" in log


def test_a_watcher_killed_mid_run_does_not_leak_the_runs_gpus(ledger: Path, tmp_path: Path) -> None:
    write_script(tmp_path / "a", HOLDS_UNTIL_RELEASED)
    watcher = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from airflow_provider.core import Experiment, Resources, ScriptRunConfig
        from airflow_provider.core.targets.host_sharing import HostSharing
        from airflow_provider.core.targets.local import LocalTarget
        target = LocalTarget(host_sharing=HostSharing(("0",), {str(ledger)!r}, 120.0))
        config = ScriptRunConfig({str(tmp_path / "a")!r}, "train.py", arguments=[{str(tmp_path / "release-a")!r}],
                                 compute_target=target, resources=Resources(gpus=1), system_metrics_interval_seconds=0)
        run = Experiment("shared-gpus").submit(config)
        open({str(tmp_path / "run-id")!r}, "w").write(run.id)
        run.wait_for_completion()
    """)], start_new_session=True)
    try:
        wait_until((tmp_path / "release-a.started").exists, 120, "the watched run to start")
        os.kill(watcher.pid, signal.SIGKILL)  # the process that submitted and watched the run dies
        watcher.wait()
        assert [entry["gpus"] for entry in ReservationLedger(str(ledger)).holders().values()] == [["0"]]
        (tmp_path / "release-a").touch()  # the job goes on without its watcher, and ends
        wait_until(lambda: ReservationLedger(str(ledger)).holders() == {}, 60, "the job to release its GPU")
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    second = _holding_run(_target(ledger, gpus=("0",)), tmp_path / "b", tmp_path / "release-b", gpus=1)
    wait_until((tmp_path / "release-b.started").exists, 60, "the next run to get the freed GPU")
    (tmp_path / "release-b").touch()
    assert second.wait_for_completion()["status"] == "Completed"
    assert _devices(second, tmp_path / "b") == ["0"]
    first = Experiment("shared-gpus").get_run((tmp_path / "run-id").read_text())  # a new watcher records its end
    assert first.wait_for_completion()["status"] == "Completed"
