"""The whole lifecycle on the local target, with real processes and a real MLflow SQLite store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import (
    Environment,
    EnvironmentBuildError,
    Experiment,
    RunFailedError,
    ScriptRun,
    ScriptRunConfig,
)
from airflow_provider.core.bookkeeping import job_record, read_bookkeeping
from airflow_provider.core.errors import ConfigurationError, SnapshotError, TargetError, TrackingError
from airflow_provider.core.finalizer import finalize_in_background
from airflow_provider.core.targets.base import JobHandle, JobStatus
from airflow_provider.core.targets.local import LocalTarget
from airflow_provider.core.tracking import Tags
from airflow_provider.core.watcher import RunWatcher
from tests.helpers import make_wheel, pid_alive, processes_in_group, rewrite_bookkeeping, wait_until, write_script

pytestmark = pytest.mark.usefixtures("tracking_uri")


def run_tags(run_id: str) -> dict[str, str]:
    return dict(MlflowClient().get_run(run_id).data.tags)


def artifacts(run_id: str, path: str | None = None) -> set[str]:
    client = MlflowClient()
    found: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        found |= artifacts(run_id, info.path) if info.is_dir else {info.path}
    return found


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def test_successful_run_lands_metrics_tags_files_and_outputs(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "data").mkdir(parents=True)
    (source / "data" / "picture.png").write_bytes(b"\x89PNG fake image bytes")
    write_script(source, """
        import json, os, sys
        import mlflow
        from airflow_provider.core import Run
        run = Run.get_context()
        for epoch in range(3):
            run.log("loss", 1.0 / (epoch + 1))
        run.log("accuracy", 0.9, step=7)
        run.log("optimizer", "adam")
        run.log_list("lr", [0.1, 0.01])
        run.log_row("scores", fold=1, auc=0.7)
        run.log_row("scores", fold=2, auc=0.8)
        run.log_table("confusion", {"label": ["a", "b"], "count": [3, 4]})
        run.tag("team", "search")
        run.upload_file("extra/notes.txt", __file__)
        run.log_image("picture", path="data/picture.png")
        os.makedirs("outputs", exist_ok=True)
        os.makedirs("logs", exist_ok=True)
        with open("outputs/env.json", "w") as out:  # before mlflow, which unsets MLFLOW_RUN_ID
            json.dump({k: os.environ.get(k) for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
                       "MLFLOW_TRACKING_URI", "GREETING")} | {"argv": sys.argv[1:], "cwd": os.getcwd()}, out)
        mlflow.log_metric("direct", 42.0)
        with open("logs/train.log", "w") as out:
            out.write("epoch done\\n")
        print("hello from the script")
        print("stderr line", file=sys.stderr)
    """)
    lines: list[str] = []
    experiment = Experiment("success")
    config = ScriptRunConfig(source, "train.py", arguments=["--epochs", 3, "--lr", 0.5, True],
                             environment_variables={"GREETING": "hi"})
    run = experiment.submit(config, tags={"owner": "me"})
    details = run.wait_for_completion(output=lines.append)

    assert details["status"] == "Completed"
    assert details["mlflowStatus"] == "FINISHED"
    assert set(details["stateTimes"]) == {"Queued", "Preparing", "Starting", "Running", "Finalizing", "Completed"}
    assert "current interpreter" in details["environment"]["description"]
    assert "hello from the script" in lines and "stderr line" in lines
    metrics = run.get_metrics()
    assert metrics["loss"] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert metrics["accuracy"] == 0.9
    assert metrics["lr"] == [0.1, 0.01]
    assert metrics["direct"] == 42.0
    assert [m.step for m in MlflowClient().get_metric_history(run.id, "accuracy")] == [7]
    tags = run_tags(run.id)
    assert tags["optimizer"] == "adam" and tags["team"] == "search" and tags["owner"] == "me"
    assert tags[Tags.SNAPSHOT_ID] == details["snapshotId"]
    files = artifacts(run.id)
    assert {"outputs/env.json", "logs/train.log", "system_logs/driver.log", "snapshot/manifest.json",
            "tables/scores.json", "tables/confusion.json", "extra/notes.txt", "images/picture.png"} <= files
    env_file = run.download_file("outputs/env.json", tmp_path / "env.json")
    seen = json.loads(env_file.read_text())
    assert seen["MLFLOW_RUN_ID"] == run.id
    assert seen["MLFLOW_EXPERIMENT_ID"] == experiment.id
    assert seen["GREETING"] == "hi"
    assert seen["argv"] == ["--epochs", "3", "--lr", "0.5", "True"]
    assert not seen["cwd"].startswith(str(source))  # runs in its own working folder
    scores = json.loads(run.download_file("tables/scores.json", tmp_path / "s.json").read_text())
    assert scores == {"columns": ["fold", "auc"], "data": [[1, 0.7], [2, 0.8]]}
    driver = run.download_file("system_logs/driver.log", tmp_path / "driver.log").read_text()
    assert "hello from the script" in driver and "stderr line" in driver
    assert not Path((job_record(tags) or {})["location"]).exists()  # the job folder is cleaned up


def test_failing_script_still_uploads_outputs_and_logs(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os
        import mlflow
        from airflow_provider.core import Run
        Run.get_context().log("before_failure", 1)
        mlflow.log_metric("direct", 2.0)  # MLflow's atexit hook will mark the run FINISHED
        os.makedirs("outputs", exist_ok=True); os.makedirs("logs", exist_ok=True)
        open("outputs/partial.txt", "w").write("partial")
        open("logs/debug.log", "w").write("debugging")
        raise RuntimeError("boom in training")
    """)
    run = Experiment("failing").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    with pytest.raises(RunFailedError) as caught:
        run.wait_for_completion()
    assert "exited with code 1" in caught.value.error
    assert "RuntimeError: boom in training" in caught.value.log_tail
    details = run.get_details()
    assert details["status"] == "Failed" and details["mlflowStatus"] == "FAILED"
    assert details["exitCode"] == 1
    assert "boom in training" in details["error"]["logTail"]
    assert {"outputs/partial.txt", "logs/debug.log", "system_logs/driver.log"} <= artifacts(run.id)
    assert run.get_metrics() == {"before_failure": 1.0, "direct": 2.0}


SPAWNING_SCRIPT = """
    import os, signal, subprocess, sys, time
    pids_file = os.environ["PIDS_FILE"]
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    child = subprocess.Popen([sys.executable, "-c", stubborn])
    if os.fork() == 0:          # a daemon that leaves the process group and ignores SIGTERM
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with open(pids_file, "a") as out:
                out.write(f"{os.getpid()}\\n")
            time.sleep(300)
        os._exit(0)
    with open(pids_file, "a") as out:
        out.write(f"{os.getpid()}\\n{child.pid}\\n")
    os.makedirs("outputs", exist_ok=True)
    open("outputs/started.txt", "w").write("yes")
    print("started", flush=True)
    time.sleep(300)
"""


def _submit_spawning_script(tmp_path: Path, experiment: str, **limits: float) -> tuple[ScriptRun, list[int]]:
    """Submit SPAWNING_SCRIPT; return the run and its pids once recorded (script, child, daemon)."""
    write_script(tmp_path / "src", SPAWNING_SCRIPT)
    pids_file = tmp_path / "pids.txt"
    config = ScriptRunConfig(tmp_path / "src", "train.py", environment_variables={"PIDS_FILE": str(pids_file)},
                             **limits)  # type: ignore[arg-type]
    run = Experiment(experiment).submit(config)
    return run, _recorded_pids(pids_file, 3)


def _recorded_pids(path: Path, count: int) -> list[int]:
    wait_until(lambda: path.exists() and len(path.read_text().split()) >= count, message="pids recorded")
    return [int(p) for p in path.read_text().split()]


def test_outputs_and_logs_folders_exist_before_the_script_starts(tmp_path: Path) -> None:
    """v1 scripts write ``outputs/x.csv`` and ``logs/y`` without creating the folders."""
    write_script(tmp_path / "src", """
        open("outputs/metrics.csv", "w").write("epoch,loss\\n1,0.5\\n")
        open("logs/train.log", "w").write("started")
    """)
    run = Experiment("folders").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    details = run.wait_for_completion()
    assert details["status"] == "Completed", details
    assert run.download_file("outputs/metrics.csv", tmp_path / "m.csv").read_text() == "epoch,loss\n1,0.5\n"
    assert "logs/train.log" in details["logFiles"]


def test_timeout_stops_the_whole_process_tree(tmp_path: Path) -> None:
    run, pids = _submit_spawning_script(tmp_path, "timeout", max_run_duration_seconds=3)
    with pytest.raises(RunFailedError) as caught:
        run.wait_for_completion()
    assert "max_run_duration_seconds=3" in caught.value.error
    main_pid = pids[1] if len(pids) > 1 else pids[0]
    assert not [p for p in pids if pid_alive(p)], "a process of the run survived the timeout"
    assert processes_in_group(main_pid) == []
    assert "outputs/started.txt" in artifacts(run.id)
    assert run.get_details()["mlflowStatus"] == "FAILED"


def test_cancel_stops_the_whole_process_tree(tmp_path: Path) -> None:
    run, pids = _submit_spawning_script(tmp_path, "cancel")
    run.cancel()
    details = run.get_details()
    assert details["status"] == "Canceled" and details["mlflowStatus"] == "KILLED"
    assert not [p for p in pids if pid_alive(p)], "a process of the run survived the cancel"
    assert "outputs/started.txt" in artifacts(run.id)
    with pytest.raises(RunFailedError, match="Canceled"):
        run.wait_for_completion()


def test_ten_thousand_logs_arrive_exactly_once(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        from airflow_provider.core import Run
        run = Run.get_context()
        for i in range(10_000):
            run.log("value", i * 0.5)
    """)
    run = Experiment("many").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    run.wait_for_completion()
    history = MlflowClient().get_metric_history(run.id, "value")
    assert len(history) == 10_000
    assert sorted(m.step for m in history) == list(range(10_000))
    assert sorted(m.value for m in history) == [i * 0.5 for i in range(10_000)]


def test_relay_resumes_from_its_offset_after_a_watcher_restart(tmp_path: Path) -> None:
    go_file = tmp_path / "go"
    write_script(tmp_path / "src", """
        import os, time
        from airflow_provider.core import Run
        run = Run.get_context()
        for i in range(3000):
            run.log("m", i)
        while not os.path.exists(os.environ["GO_FILE"]):
            time.sleep(0.02)
        for i in range(3000, 5000):
            run.log("m", i)
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py", environment_variables={"GO_FILE": str(go_file)})
    experiment = Experiment("resume")
    first = experiment.submit(config, run_key="dag/task/run1/-1")

    def relayed() -> int:
        first.get_status()  # one watcher step
        return len(MlflowClient().get_metric_history(first.id, "m"))

    wait_until(lambda: relayed() == 3000, message="first 3000 values relayed")
    offset = int(read_bookkeeping(run_tags(first.id))["events_offset"])
    assert offset > 0
    # A watcher that died after writing metrics but before recording its offset replays them.
    rewrite_bookkeeping(first.id, events_offset=0)
    second = experiment.submit(config, run_key="dag/task/run1/-1")  # a new watcher reattaches
    assert second.id == first.id
    go_file.write_text("go")
    second.wait_for_completion()
    history = MlflowClient().get_metric_history(first.id, "m")
    assert sorted(m.value for m in history) == [float(i) for i in range(5000)]


def test_reattach_by_run_key_never_runs_the_script_twice(tmp_path: Path) -> None:
    counter = tmp_path / "executions.txt"
    go_file = tmp_path / "go"
    write_script(tmp_path / "src", """
        import os, time
        with open(os.environ["COUNTER"], "a") as out:
            out.write("ran\\n")
        while not os.path.exists(os.environ["GO_FILE"]):
            time.sleep(0.02)
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py",
                             environment_variables={"COUNTER": str(counter), "GO_FILE": str(go_file)})
    experiment = Experiment("reattach")
    key = "dag/task/run1/0"
    first = experiment.submit(config, run_key=key)
    wait_until(counter.exists, message="the script started")
    second = experiment.submit(config, run_key=key)   # a retried try while the job still runs
    assert second.id == first.id
    go_file.write_text("go")
    second.wait_for_completion()
    third = experiment.submit(config, run_key=key)    # the job already finished: collect, do not rerun
    assert third.id == first.id
    assert third.wait_for_completion()["status"] == "Completed"
    assert counter.read_text() == "ran\n"
    fresh = experiment.submit(config, run_key=key, reattach=False)
    fresh.wait_for_completion()
    assert fresh.id != first.id and counter.read_text() == "ran\nran\n"


def test_failed_run_is_started_afresh_on_retry(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "import sys; sys.exit(3)\n")
    experiment = Experiment("retry-failed")
    config = ScriptRunConfig(tmp_path / "src", "train.py")
    first = experiment.submit(config, run_key="k")
    assert first.wait_for_completion(raise_on_error=False)["exitCode"] == 3
    second = experiment.submit(config, run_key="k")
    assert second.id != first.id
    second.wait_for_completion(raise_on_error=False)


def test_resubmitting_an_unchanged_folder_keeps_the_snapshot(tmp_path: Path, isolated_state: Path) -> None:
    write_script(tmp_path / "src", "print('ok')\n")
    experiment = Experiment("snapshots")
    config = ScriptRunConfig(tmp_path / "src", "train.py")
    first = experiment.submit(config)
    first.wait_for_completion()
    blobs = sorted((isolated_state / "snapshots").rglob("*"))
    second = experiment.submit(config)
    second.wait_for_completion()
    assert second.get_details()["snapshotId"] == first.get_details()["snapshotId"]
    assert sorted((isolated_state / "snapshots").rglob("*")) == blobs
    restored = second.restore_snapshot(tmp_path / "restored")
    assert (restored / "train.py").read_text() == "print('ok')\n"


def test_git_state_is_recorded(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_script(repo / "src", "print('ok')\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "remote", "add", "origin", "https://bob:hunter2@example.com/org/repo.git"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    (repo / "src" / "train.py").write_text("print('changed')\n")
    run = Experiment("git").submit(ScriptRunConfig(repo / "src", "train.py"))
    run.wait_for_completion()
    tags = run_tags(run.id)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.git.branch"] == "main"
    assert tags["mlflow.source.git.repoURL"] == "https://example.com/org/repo.git"
    assert tags["training.git.dirty"] == "true"
    diff = run.download_file("git/uncommitted.diff", tmp_path / "d.diff").read_text()
    assert "+print('changed')" in diff


def test_no_repository_means_no_git_tags(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('ok')\n")
    run = Experiment("nogit").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    run.wait_for_completion()
    assert not [k for k in run_tags(run.id) if k.startswith("mlflow.source.git")]


def test_command_runs_through_the_shell(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "import sys; print('args', sys.argv[1:])\n")
    run = Experiment("command").submit(
        ScriptRunConfig(tmp_path / "src", command="echo shell-$((1+2)) && python train.py", arguments=["a b"]))
    lines: list[str] = []
    run.wait_for_completion(output=lines.append)
    assert lines[:2] == ["shell-3", "args ['a b']"]


def test_concurrent_get_status_and_wait_never_double_relay(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import time
        from airflow_provider.core import Run
        run = Run.get_context()
        for i in range(2000):
            run.log("x", i)
            if i % 200 == 0:
                time.sleep(0.05)
    """)
    run = Experiment("two-watchers").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            run.get_status()

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        run.wait_for_completion()
    finally:
        stop.set()
        poller.join()
    assert len(MlflowClient().get_metric_history(run.id, "x")) == 2000


def test_script_importing_run_does_not_import_airflow_or_mlflow(tmp_path: Path) -> None:
    code = "import sys; from airflow_provider.core import Run; Run.get_context().log('a', 1); " \
           "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'mlflow')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("TRAINING_RUN_")})
    assert "Attempted to log scalar metric a" in result.stdout
    assert result.stdout.strip().endswith("[]")


def test_concurrent_runs_sharing_an_environment_build_it_once(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "tinypkg", "1.0", "VALUE = 'from tinypkg'\n")
    write_script(tmp_path / "src", """
        import sys, tinypkg
        from airflow_provider.core import Run
        Run.get_context().tag("value", tinypkg.VALUE)
        Run.get_context().tag("python", sys.executable)
    """)
    environment = Environment("tiny")
    environment.add_pip_package(str(wheel))
    experiment = Experiment("shared-env")
    runs: list[ScriptRun] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            run = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", environment=environment))
            run.wait_for_completion()
            runs.append(run)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    tags = [run_tags(run.id) for run in runs]
    assert {t["value"] for t in tags} == {"from tinypkg"}
    assert len({t["python"] for t in tags}) == 1 and tags[0]["python"] != sys.executable
    assert len({t[Tags.ENVIRONMENT_FINGERPRINT] for t in tags}) == 1
    built = [run for run in runs if "system_logs/environment_build.log" in artifacts(run.id)]
    assert len(built) == 1, "exactly one run built the environment and logged its build"
    assert sum("built now" in t[Tags.ENVIRONMENT_DESCRIPTION] for t in tags) == 1


def test_a_missing_wheel_fails_the_run_before_any_build(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('never runs')\n")
    environment = Environment("broken")
    environment.add_pip_package(str(tmp_path / "missing-1.0-py3-none-any.whl"))
    experiment = Experiment("broken-env")
    with pytest.raises(ConfigurationError) as caught:
        experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", environment=environment))
    assert caught.value.field == "environment.python.pip_packages"
    assert "missing-1.0-py3-none-any.whl" in str(caught.value)
    (run,) = MlflowClient().search_runs([experiment.id])
    assert run.info.status == "FAILED" and run.data.tags[Tags.STATE] == "Failed"
    assert "ConfigurationError" in run.data.tags[Tags.ERROR]


def test_a_failed_environment_build_fails_the_run_with_the_installer_error(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('never runs')\n")
    environment = Environment("broken")  # resolves (its metadata is fine), cannot be installed
    environment.add_pip_package(str(make_wheel(tmp_path, "badcli", "1.0", "V = 1\n",
                                               "[console_scripts]\nbad-cli = :::\n")))
    experiment = Experiment("broken-install")
    with pytest.raises(EnvironmentBuildError) as caught:
        experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", environment=environment))
    assert "badcli" in caught.value.log_tail and "[exit code" in caught.value.log_tail
    (run,) = MlflowClient().search_runs([experiment.id])
    assert run.info.status == "FAILED"
    assert run.data.tags[Tags.STATE] == "Failed"
    assert "EnvironmentBuildError" in run.data.tags[Tags.ERROR]
    assert "system_logs/environment_build.log" in artifacts(run.info.run_id)


def test_a_source_directory_over_the_limit_fails_before_any_run_exists(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "print('ok')\n")
    (tmp_path / "src" / "data.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    experiment = Experiment("too-big")
    with pytest.raises(SnapshotError) as caught:
        experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py", snapshot_size_limit_mb=1))
    assert "data.bin" in str(caught.value) and ".amlignore" in str(caught.value)
    assert MlflowClient().search_runs([experiment.id]) == []


def test_logs_folder_and_driver_log_are_uploaded_while_the_run_goes_on(tmp_path: Path) -> None:
    """``./logs`` goes up while the run goes on as what each file gained (parts), which a reader puts
    back together; the whole files are in ``logs/`` once it ends."""
    from airflow_provider.core.live_logs import LiveLogReader
    from airflow_provider.core.tracking import Tracker

    write_script(tmp_path / "src", """
        import os, time
        def wait_for(name):
            while not os.path.exists(os.path.join(os.environ["GO_DIR"], name)):
                time.sleep(0.05)
        with open("logs/progress.log", "w") as out:
            out.write("half way\\n")
        print("still training", flush=True)
        wait_for("second")
        with open("logs/progress.log", "a") as out:
            out.write("three quarters\\n")
        wait_for("end")
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py", environment_variables={"GO_DIR": str(tmp_path)})
    run = Experiment("interim-uploads").submit(config)
    run.log_upload_interval = 0.3
    waiter = threading.Thread(target=run.wait_for_completion)
    waiter.start()
    reader = LiveLogReader(Tracker(), run.id, tmp_path / "mirror")
    mirrored = tmp_path / "mirror" / "progress.log"
    part = "live/logs/progress.log/0000-{:016d}-{:016d}.part"
    try:
        wait_until(lambda: {part.format(0, 9), "system_logs/driver.log"} <= artifacts(run.id),
                   message="interim uploads")
        assert reader.sync(ended=False) == 9 and mirrored.read_text() == "half way\n"
        (tmp_path / "second").write_text("go")
        wait_until(lambda: part.format(9, 24) in artifacts(run.id), message="the appended bytes alone")
        assert reader.sync(ended=False) == 15, "only what was appended is read again"
        assert mirrored.read_text() == "half way\nthree quarters\n"
        assert reader.sync(ended=False) == 0
        assert run.get_details()["status"] == "Running"
    finally:
        (tmp_path / "end").write_text("go")
        waiter.join()
    assert run.get_details()["status"] == "Completed"
    assert "logs/progress.log" in artifacts(run.id)
    assert reader.sync(ended=True) == 0, "the whole file is what the parts made"


def test_a_detached_finalizer_records_a_run_whose_watcher_is_gone(tmp_path: Path) -> None:
    run, pids = _submit_spawning_script(tmp_path, "finalizer")
    run.cancel(wait=False)  # what on_kill does: ask the job to stop, then leave
    finalize_in_background(run)
    wait_until(lambda: run.get_details()["mlflowStatus"] == "KILLED", timeout=60, message="the finalizer")
    assert run.get_details()["status"] == "Canceled"
    assert not [p for p in pids if pid_alive(p)]
    assert "outputs/started.txt" in artifacts(run.id)


def test_a_killed_supervisor_stops_its_command_and_fails_the_run(tmp_path: Path) -> None:
    run, pids = _submit_spawning_script(tmp_path, "lost-runner")
    assert run.handle is not None
    runner_pid = json.loads((Path(run.handle.location) / "runner.json").read_text())["runner_pid"]
    os.kill(runner_pid, signal.SIGKILL)  # the OOM killer, or kill -9
    with pytest.raises(RunFailedError, match="job supervisor died"):
        run.wait_for_completion()
    # Every process of the run stops, the daemon that left its session too (found by the job's marker).
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=30, message="the orphaned processes to stop")
    assert "left running, was stopped" in run.get_details()["error"]["message"]


def test_events_mlflow_would_refuse_are_dropped_and_the_rest_arrives(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import json, os
        from airflow_provider.core import Run
        run = Run.get_context()
        try:
            run.log("top-1 acc@val", 0.9)
        except ValueError as error:
            print("refused:", error)
        with open(os.environ["TRAINING_RUN_EVENTS_FILE"], "a") as events:  # a writer without the check
            events.write(json.dumps({"e": "metric", "k": "bad@name", "v": 1, "s": 0, "t": 1}) + "\\n")
            events.write("x" * (9 * 1024 * 1024) + "\\n")  # longer than any event may be
        for step in range(3):
            run.log("loss", 1.0 / (step + 1))
    """)
    run = Experiment("bad-names").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    lines: list[str] = []
    details = run.wait_for_completion(output=lines.append)
    assert details["status"] == "Completed"
    assert any(line.startswith("refused: metric name 'top-1 acc@val' cannot be stored") for line in lines)
    assert run.get_metrics() == {"loss": [1.0, 0.5, pytest.approx(1 / 3)]}
    assert read_bookkeeping(run_tags(run.id))["dropped_events"] == 2


def test_a_slow_finalize_shows_the_state_finalizing_and_a_quick_one_only_records_when_it_began(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_script(tmp_path / "src", "print('done')")
    seen: list[str] = []
    collect = RunWatcher._upload_final

    def state(watcher: RunWatcher) -> str:
        return watcher.tracker.get_run(watcher.run_id).data.tags[Tags.STATE]

    def slow_collect(watcher: RunWatcher) -> None:  # collecting takes long: the state shows it meanwhile
        wait_until(lambda: state(watcher) == "Finalizing", timeout=60, message="the state Finalizing")
        seen.append(state(watcher))
        collect(watcher)

    monkeypatch.setattr(RunWatcher, "finalizing_shown_after", 0.2)
    monkeypatch.setattr(RunWatcher, "_upload_final", slow_collect)
    experiment = Experiment("finalizing")
    details = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py")).wait_for_completion()
    assert seen == ["Finalizing"]
    assert details["status"] == "Completed" and "Finalizing" in details["stateTimes"]

    def quick_collect(watcher: RunWatcher) -> None:
        seen.append(state(watcher))
        collect(watcher)

    seen.clear()
    monkeypatch.setattr(RunWatcher, "_upload_final", quick_collect)
    details = experiment.submit(ScriptRunConfig(tmp_path / "src", "train.py")).wait_for_completion()
    assert seen == ["Running"]  # no write for a state nobody would see
    assert details["status"] == "Completed"
    assert details["stateTimes"]["Running"] <= details["stateTimes"]["Finalizing"] <= details["stateTimes"]["Completed"]


def test_results_that_cannot_be_collected_are_kept_for_the_next_watcher(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os
        os.makedirs("outputs", exist_ok=True)
        open("outputs/model.txt", "w").write("model")
    """)
    experiment = Experiment("collect-again")
    config = ScriptRunConfig(tmp_path / "src", "train.py")
    run = experiment.submit(config, run_key="collect/again")
    # The artifact store cannot take the outputs (a file where their folder must go): a store
    # failure, not the script's, which a later watcher may get past.
    blocker = Path(url2pathname(urlparse(run.get_details()["artifactUri"]).path)) / "outputs"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    with pytest.raises(TrackingError, match="job folder is kept"):
        run.wait_for_completion()
    assert run.get_details()["status"] == "Finalizing"
    assert run.handle is not None
    work = Path(run.handle.location) / "work"
    assert (work / "outputs" / "model.txt").exists(), "the outputs were deleted"
    blocker.unlink()  # the operator fixes the store
    again = experiment.submit(config, run_key="collect/again")  # a retry collects, it does not rerun
    assert again.id == run.id
    assert again.wait_for_completion()["status"] == "Completed"
    assert "outputs/model.txt" in artifacts(run.id)


def test_a_retry_reattaches_even_when_the_script_ended_its_mlflow_run(tmp_path: Path) -> None:
    go_file = tmp_path / "go"
    write_script(tmp_path / "src", """
        import os, time
        import mlflow
        with mlflow.start_run():          # ends the MLflow run (FINISHED) while the job goes on
            mlflow.log_metric("inside", 1.0)
        open(os.environ["GO_FILE"] + ".ready", "w").close()
        while not os.path.exists(os.environ["GO_FILE"]):
            time.sleep(0.05)
    """)
    experiment = Experiment("script-ends-run")
    config = ScriptRunConfig(tmp_path / "src", "train.py", environment_variables={"GO_FILE": str(go_file)})
    first = experiment.submit(config, run_key="k/ended")
    wait_until(lambda: Path(str(go_file) + ".ready").exists(), message="the script's mlflow block")
    assert MlflowClient().get_run(first.id).info.status == "FINISHED"
    second = experiment.submit(config, run_key="k/ended")
    assert second.id == first.id and second.handle is not None
    go_file.write_text("go")
    assert second.wait_for_completion()["status"] == "Completed"


def test_a_watcher_without_live_tracking_leaves_mlflow_to_the_finalizer(tmp_path: Path) -> None:
    """What the shared triggerer does with a credentialed server: watch and stream, write nothing."""
    write_script(tmp_path / "src", """
        from airflow_provider.core import Run
        for i in range(5):
            Run.get_context().log("m", i)
        print("done")
    """)
    run = Experiment("not-live").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    lines: list[str] = []
    watcher = run.watcher(lines.append, live_tracking=False)
    status = watcher.watch(poll_interval=0.05)
    assert status.state == "ended" and lines == ["done"]
    assert MlflowClient().get_metric_history(run.id, "m") == []
    assert "events_offset" not in read_bookkeeping(run_tags(run.id))
    run.wait_for_completion(log_offset=watcher.log_offset)  # the worker finalizes and relays
    assert [m.value for m in MlflowClient().get_metric_history(run.id, "m")] == [0.0, 1.0, 2.0, 3.0, 4.0]


class _FlakyTarget(LocalTarget):
    """The local target whose polls fail ``failures`` times in a row, as a restarting daemon's would
    (or with ``error``, e.g. a tracking server that does not answer)."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.error = error or ConnectionError("the daemon is restarting")

    def poll(self, handle: JobHandle) -> JobStatus:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return super().poll(handle)


def test_watching_outlasts_a_tracking_server_outage_longer_than_its_failure_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tracking server restarting under load is away for a minute or more: the job goes on, so the
    watcher keeps trying for max_failure_seconds, past max_step_failures; other failures do not wait."""
    from airflow_provider.core.errors import TrackingUnavailableError

    write_script(tmp_path / "src", "print('done')")
    monkeypatch.setattr(RunWatcher, "max_step_failures", 1)
    monkeypatch.setattr(RunWatcher, "max_failure_seconds", 60.0)
    run = Experiment("outage").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    run.target = _FlakyTarget(failures=3, error=TrackingUnavailableError("the tracking server did not answer"))
    assert run.wait_for_completion()["status"] == "Completed"

    again = Experiment("outage").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    again.target = _FlakyTarget(failures=3)
    with pytest.raises(TargetError, match="failed 2 times in a row"):
        again.wait_for_completion()
    again.target = LocalTarget()
    assert again.wait_for_completion()["status"] == "Completed"


def test_watching_rides_out_a_few_failed_polls(tmp_path: Path) -> None:
    write_script(tmp_path / "src", "import time; time.sleep(0.5); print('done')")
    run = Experiment("flaky").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    run.target = _FlakyTarget(failures=2)
    lines: list[str] = []
    assert run.wait_for_completion(output=lines.append)["status"] == "Completed"
    assert lines == ["done"]


def test_watching_gives_up_with_a_clear_error_and_a_retry_reattaches(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_script(tmp_path / "src", "print('once')")
    experiment = Experiment("flaky-for-good")
    config = ScriptRunConfig(tmp_path / "src", "train.py")
    run = experiment.submit(config, run_key="flaky/for-good")
    monkeypatch.setattr(RunWatcher, "max_step_failures", 1)
    run.target = _FlakyTarget(failures=10)
    with pytest.raises(TargetError, match=r"failed 2 times in a row .*the daemon is restarting.*reattach"):
        run.wait_for_completion()
    assert run.get_details()["status"] == "Running"  # not finalized: nobody knows how it ended
    again = experiment.submit(config, run_key="flaky/for-good")
    assert again.id == run.id
    details = again.wait_for_completion()
    assert details["status"] == "Completed"
    assert again.download_file("system_logs/driver.log", tmp_path / "d.log").read_text().count("once") == 1
