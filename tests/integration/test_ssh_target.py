"""The SSH target against real sshd: on a loopback port and in a container with its own IP and
filesystem. Fault tests cut the server-side session mid-run and change the host key."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import (
    ConfigurationError,
    Environment,
    Experiment,
    RunFailedError,
    ScriptRunConfig,
    TargetError,
)
from airflow_provider.core.targets.ssh import SSHTarget
from airflow_provider.core.targets.ssh_connection import SSHSettings
from airflow_provider.core.tracking import Tags
from tests.helpers import GROWING_LOG_SCRIPT, assert_live_log_parts, make_wheel, pid_alive, wait_until, write_script
from tests.ssh_hosts import SSHHost, cut_sessions, restore_host_key, rotate_host_key


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _target(host: SSHHost, root: str | None = None, **settings: object) -> SSHTarget:
    options: dict[str, object] = {"username": host.username, "key_file": str(host.key_path),
                                  "host_key": host.host_public_key, **settings}
    return SSHTarget(SSHSettings(host.host, host.port, **options),  # type: ignore[arg-type]
                     work_root=root or f"/tmp/training-runs-test-{uuid.uuid4().hex[:8]}")


def test_a_run_on_the_loopback_host_lands_metrics_outputs_and_logs(ssh_loopback: SSHHost, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os, sys
        from airflow_provider.core import Run
        run = Run.get_context()
        for i in range(20):
            run.log("loss", 1.0 / (i + 1))
        os.makedirs("outputs", exist_ok=True)
        open("outputs/model.txt", "w").write("over ssh")
        print("args", sys.argv[1:])
    """)
    target = _target(ssh_loopback)
    lines: list[str] = []
    run = Experiment("ssh").submit(ScriptRunConfig(tmp_path / "src", "train.py", arguments=["--lr", 0.1],
                                                   compute_target=target))
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed", details
    assert lines == ["args ['--lr', '0.1']"]
    assert len(MlflowClient().get_metric_history(run.id, "loss")) == 20
    assert run.download_file("outputs/model.txt", tmp_path / "m.txt").read_text() == "over ssh"
    assert "system_logs/driver.log" in details["logFiles"]
    assert run.handle is not None and not Path(run.handle.location).exists(), "a finished job folder is removed"


def test_a_separate_host_builds_a_pip_environment_once(ssh_container: SSHHost, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "tinypkg", "1.0", f"VALUE = 'remote {uuid.uuid4().hex[:6]}'\n")
    write_script(tmp_path / "src", """
        import os, sys, tinypkg
        from airflow_provider.core import Run
        run = Run.get_context()
        run.tag("value", tinypkg.VALUE)
        run.tag("host", os.uname().nodename)
        run.tag("python", sys.executable)
    """)
    environment = Environment("remote-tiny")
    environment.add_pip_package(str(wheel))
    target = _target(ssh_container)
    experiment = Experiment("ssh-env")
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target, environment=environment)
    first = experiment.submit(config)
    assert first.wait_for_completion()["status"] == "Completed"
    tags = MlflowClient().get_run(first.id).data.tags
    assert tags["value"].startswith("remote ")
    assert tags["host"] != __import__("socket").gethostname()
    assert "/envs/" in tags["python"] and "built now" in tags[Tags.ENVIRONMENT_DESCRIPTION]
    assert "system_logs/environment_build.log" in first.get_file_names()
    second = experiment.submit(config)
    assert second.wait_for_completion()["status"] == "Completed"
    second_tags = MlflowClient().get_run(second.id).data.tags
    assert "cached" in second_tags[Tags.ENVIRONMENT_DESCRIPTION]
    assert second_tags[Tags.ENVIRONMENT_FINGERPRINT] == tags[Tags.ENVIRONMENT_FINGERPRINT]


def test_resubmitting_after_changing_one_file_sends_only_that_file(ssh_container: SSHHost, tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_script(source, "print('ok')\n")
    for index in range(40):
        (source / f"data_{index}.bin").write_bytes(uuid.uuid4().bytes * 1024)  # 16 KiB each, unique
    target = _target(ssh_container)
    experiment = Experiment("ssh-sync")
    config = ScriptRunConfig(source, "train.py", compute_target=target)
    experiment.submit(config).wait_for_completion()
    first, first_wire = target.blob_bytes_sent, target.bytes_sent
    assert first >= 40 * 16 * 1024
    (source / "data_7.bin").write_bytes(uuid.uuid4().bytes * 1024)
    experiment.submit(config).wait_for_completion()
    assert target.blob_bytes_sent - first == 16 * 1024, "only the changed file's content"
    assert target.bytes_sent - first_wire <= 16 * 1024 + 10240, "plus one tar record of framing at most"


def test_a_cut_connection_mid_run_still_gives_a_complete_log(ssh_container: SSHHost, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import time
        from airflow_provider.core import Run
        run = Run.get_context()
        for i in range(40):
            print(f"line {i}", flush=True)
            run.log("step", i)
            time.sleep(0.1)
    """)
    target = _target(ssh_container)
    run = Experiment("ssh-cut").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))
    lines: list[str] = []
    cuts: list[int] = []

    def cut_when_running() -> None:
        wait_until(lambda: len(lines) >= 5, timeout=30, message="first output lines")
        cuts.append(cut_sessions(ssh_container))

    cutter = threading.Thread(target=cut_when_running)
    cutter.start()
    details = run.wait_for_completion(output=lines.append, poll_interval=0.2)
    cutter.join()
    assert cuts and cuts[0] >= 1, "the server-side session was cut"
    assert details["status"] == "Completed"
    assert lines == [f"line {i}" for i in range(40)], "no gap and no duplicate"
    assert [m.value for m in MlflowClient().get_metric_history(run.id, "step")] == list(range(40))


def test_timeout_and_cancel_stop_the_remote_process_group(ssh_loopback: SSHHost, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    write_script(tmp_path / "src", """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
        with open(os.environ["PIDS"], "a") as out:
            out.write(f"{os.getpid()} {child.pid}\\n")
        time.sleep(300)
    """)
    target = _target(ssh_loopback)
    experiment = Experiment("ssh-stop")
    variables = {"PIDS": str(pids)}
    timed = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                              max_run_duration_seconds=2, environment_variables=variables))
    with pytest.raises(RunFailedError, match="max_run_duration_seconds=2"):
        timed.wait_for_completion()
    canceled = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                                                 environment_variables=variables))
    wait_until(lambda: pids.exists() and len(pids.read_text().splitlines()) == 2, message="second script started")
    canceled.cancel()
    assert canceled.get_details()["status"] == "Canceled"
    for line in pids.read_text().splitlines():  # the loopback host shares this machine's processes
        for pid in map(int, line.split()):
            wait_until(lambda pid=pid: not pid_alive(pid), timeout=15, message=f"remote pid {pid} stopped")


def test_a_retry_reattaches_by_run_key_and_a_failed_run_keeps_its_folder(ssh_loopback: SSHHost,
                                                                         tmp_path: Path) -> None:
    marker = tmp_path / "executions"
    write_script(tmp_path / "src", """
        import os, sys, time
        open(os.environ["MARKER"], "a").write("ran\\n")
        time.sleep(2)
        sys.exit(4)
    """)
    target = _target(ssh_loopback)
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target,
                             environment_variables={"MARKER": str(marker)})
    experiment = Experiment("ssh-reattach")
    first = experiment.submit(config, run_key="dag/task/run/0")
    again = experiment.submit(config, run_key="dag/task/run/0")
    assert again.id == first.id and again.handle == first.handle
    details = again.wait_for_completion(raise_on_error=False)
    assert details["status"] == "Failed" and "exited with code 4" in details["error"]["message"]
    assert marker.read_text() == "ran\n"
    assert again.handle is not None and Path(again.handle.location, ".kept").exists(), "kept for debugging"


def test_an_unknown_host_key_is_refused_with_its_fingerprint(ssh_loopback: SSHHost, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('never')\n")
    strict = _target(ssh_loopback, host_key=None, known_hosts=str(tmp_path / "empty_known_hosts"))
    (tmp_path / "empty_known_hosts").write_text("")
    with pytest.raises(TargetError) as caught:
        strict.check()
    message = str(caught.value)
    assert "host key of 127.0.0.1:2222 is unknown" in message and "SHA256:" in message
    assert ssh_loopback.host_public_key in message, "the message shows the key to pin"
    opted_in = _target(ssh_loopback, host_key=None, known_hosts=str(tmp_path / "empty_known_hosts"),
                       accept_unknown_host_keys=True)
    opted_in.check()
    known = tmp_path / "known_hosts"
    known.write_text(ssh_loopback.known_hosts_line + "\n")
    _target(ssh_loopback, host_key=None, known_hosts=str(known)).check()


def test_a_changed_host_key_refuses_the_next_run(ssh_container: SSHHost, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('ok')\n")
    experiment = Experiment("ssh-hostkey")
    assert experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py",
                                             compute_target=_target(ssh_container))).wait_for_completion()
    new_key = rotate_host_key(ssh_container)
    try:
        with pytest.raises(TargetError, match=r"CHANGED.*SHA256:.*intercepting") as caught:
            _target(ssh_container).check()
        assert new_key in str(caught.value)
        with pytest.raises(TargetError, match="CHANGED"):  # opting in to unknown keys never accepts a changed one
            _target(ssh_container, accept_unknown_host_keys=True).check()
    finally:
        restore_host_key(ssh_container)


def test_clear_errors_for_credentials_reachability_and_python(ssh_loopback: SSHHost, tmp_path: Path) -> None:
    import subprocess

    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    with pytest.raises(TargetError, match=r"authentication as 'root' on 127\.0\.0\.1:2222 failed"):
        _target(ssh_loopback, key_file=str(other_key)).check()
    with pytest.raises(TargetError, match=r"cannot reach the SSH host 127\.0\.0\.1:9 .*sshd runs there"):
        SSHTarget(SSHSettings("127.0.0.1", 9, "root", key_file=str(ssh_loopback.key_path),
                              connect_timeout=3)).check()
    missing = Environment("missing-interpreter")
    missing.python.user_managed_dependencies = True
    missing.python.interpreter_path = "/no/such/python3.11"
    with pytest.raises(ConfigurationError) as missing_interpreter:
        _target(ssh_loopback).prepare_environment(missing)
    assert missing_interpreter.value.field == "environment.python.interpreter_path"
    assert "'/no/such/python3.11' does not exist on 127.0.0.1:2222" in str(missing_interpreter.value)
    no_python = _target(ssh_loopback)
    no_python.python = "/no/such/python3"
    with pytest.raises(TargetError, match=r"remote Python '/no/such/python3' was not found on 127\.0\.0\.1:2222"):
        no_python.check()


def test_the_spec_rebuilds_the_target_without_secrets(ssh_loopback: SSHHost, monkeypatch: pytest.MonkeyPatch) -> None:
    target = _target(ssh_loopback, key_file=None, private_key=ssh_loopback.key_path.read_text())
    spec = target.to_spec()
    assert "PRIVATE KEY" not in json.dumps(spec)
    for name, value in target.secret_environment().items():
        monkeypatch.setenv(name, value)
    rebuilt = SSHTarget.from_spec(json.loads(json.dumps(spec)))
    rebuilt.check()
    assert rebuilt.settings == target.settings


def test_a_bad_connection_field_fails_before_connecting() -> None:
    from airflow_provider.hooks.ssh_options import ssh_target_arguments

    good = {"key_file": "/k"}
    for extra, field in (({"key_file": "/k", "colour": "x"}, "extra.colour"),
                         ({"key_file": "/k", "connect_timeout": "soon"}, "extra.connect_timeout"),
                         ({"key_file": "/k", "accept_unknown_host_keys": "maybe"}, "extra.accept_unknown_host_keys"),
                         ({}, "extra.key_file"), ({"key_file": "/k", "private_key": "x"}, "extra.private_key"),
                         ({"key_file": "/k", "conda": "mamba"}, "extra.conda")):
        with pytest.raises(ConfigurationError) as caught:
            ssh_target_arguments("box", "h", 22, "u", None, extra)
        assert caught.value.field == f"connection 'box' {field}"
    with pytest.raises(ConfigurationError, match="host"):
        ssh_target_arguments("box", None, 22, "u", None, good)
    arguments = ssh_target_arguments("box", "h", 2200, "u", None, {**good, "blob_cache_max_mb": "5"})
    assert arguments["settings"]["port"] == 2200
    assert arguments["cache_limits"]["blob_cache_max_bytes"] == 5 * 1024 * 1024
    assert arguments["conda"] == "auto"
    assert ssh_target_arguments("box", "h", 22, "u", None, {**good, "conda": "translate"})["conda"] == "translate"


def test_caches_over_their_bounds_are_evicted_least_recently_used_first(ssh_loopback: SSHHost,
                                                                       tmp_path: Path) -> None:
    root = tmp_path / "remote-root"
    write_script(tmp_path / "src", "print('ok')\n")
    (tmp_path / "src" / "data.bin").write_bytes(b"x" * 50_000)
    old_job = root / "jobs" / "an-old-failed-job"
    old_job.mkdir(parents=True)
    (old_job / ".kept").touch()
    ancient = time.time() - 30 * 86400
    os.utime(old_job / ".kept", (ancient, ancient))
    target = _target(ssh_loopback, root=str(root))
    target.cache_limits = {"blob_cache_max_bytes": 1000, "kept_job_max_age_days": 7}
    run = Experiment("ssh-evict").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))
    assert run.wait_for_completion()["status"] == "Completed"
    blobs = [p for p in (root / "blobs").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in blobs) <= 1000, "the 50 kB blob was evicted"
    assert not old_job.exists(), "a kept folder past its age is removed"


def test_one_environment_has_one_fingerprint_on_the_local_target_and_an_ssh_host(ssh_loopback: SSHHost,
                                                                                   tmp_path: Path) -> None:
    from airflow_provider.core.environments.local_cache import EnvironmentCache
    from airflow_provider.core.targets.local import LocalTarget

    interpreter = os.path.realpath(sys.executable)  # the same Python on both: one environment
    wheel = make_wheel(tmp_path, "fppkg", "1.0", f"VALUE = 'fingerprint {uuid.uuid4().hex[:6]}'\n")
    write_script(tmp_path / "src", """
        import fppkg, sys
        print(fppkg.VALUE, sys.prefix != sys.base_prefix)
    """)
    environment = Environment("same-everywhere")
    environment.add_pip_package(str(wheel))
    remote = SSHTarget(_target(ssh_loopback).settings, work_root=f"/tmp/training-runs-fp-{uuid.uuid4().hex[:8]}",
                       python=interpreter)
    targets = [LocalTarget(environment_cache=EnvironmentCache(base_python=interpreter)), remote]
    fingerprints = []
    for target in targets:
        lines: list[str] = []
        run = Experiment("fingerprints").submit(ScriptRunConfig(tmp_path / "src", "train.py", environment=environment,
                                                                compute_target=target))
        assert run.wait_for_completion(output=lines.append)["status"] == "Completed"
        assert lines and lines[0].endswith("True"), lines
        fingerprints.append(MlflowClient().get_run(run.id).data.tags[Tags.ENVIRONMENT_FINGERPRINT])
    assert fingerprints[0] == fingerprints[1], "one environment got two fingerprints"


def test_the_remote_helper_is_shipped_once_per_version_and_then_started_without_sftp(ssh_loopback: SSHHost) -> None:
    import shutil

    name = f".training-runs-test-{uuid.uuid4().hex[:8]}"
    root = Path(os.path.expanduser(f"~{ssh_loopback.username}")) / name  # the loopback host is this machine
    try:
        first = _target(ssh_loopback, root=f"~/{name}")
        first.check()
        assert first.root == str(root)
        (runtime,) = (root / "runtime").iterdir()
        assert sorted(p.name for p in runtime.glob("*.py")) == [
            "conda_installer.py", "gpu_reservations.py", "host_resources.py", "job_runner.py", "remote_agent.py",
            "resource_limits.py", "system_metrics.py", "venv_builder.py"]
        warm = _target(ssh_loopback, root=f"~/{name}")  # a new task: a new connection to a host that has it
        warm.check()
        assert warm.root == str(root)
        assert warm.connection._sftp is None, "the agent was started without an SFTP session to look for it"
        shutil.rmtree(root / "runtime")  # removed by hand while the target is in use, then the connection drops
        warm.connection.close()
        assert warm.stop_strays(f"{root}/jobs/none") == [], "the next call ships the helper again and succeeds"
        assert (runtime / "remote_agent.py").is_file()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_waiting_on_a_job_returns_as_soon_as_it_ends(ssh_loopback: SSHHost, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "import time\ntime.sleep(1)\n")
    target = _target(ssh_loopback)
    run = Experiment("ssh-wait").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))
    assert run.handle is not None
    try:
        started = time.monotonic()
        target.wait(run.handle, 60)
        waited = time.monotonic() - started
        assert target.poll(run.handle).state == "ended"
        assert waited < 30, f"the wait returned after {waited:.1f} s: at its timeout, not when the job ended"
        assert target.wakes_on_end, "so the watcher need not poll fast"
    finally:
        assert run.wait_for_completion()["status"] == "Completed"


def test_logs_go_up_as_they_grow_on_a_host(ssh_container: SSHHost, tmp_path: Path) -> None:
    """``./logs`` on an SSH host reaches MLflow while the run goes on: only the new bytes of each file
    are read there (SFTP, from the last offset) and uploaded (parts)."""
    target = _target(ssh_container)
    write_script(tmp_path / "src", GROWING_LOG_SCRIPT)
    run = Experiment("ssh-live-logs").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))
    run.log_upload_interval = 0.5
    assert run.wait_for_completion()["status"] == "Completed"
    assert_live_log_parts(run, tmp_path)
