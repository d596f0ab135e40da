"""Hostile scripts and altered run tags against real targets (issue 12): a job can never change what
another job reads, a tag rewritten by anyone never points the cleanup elsewhere, links and bad
events in what a script leaves never stop finalization nor copy the worker's files, secrets leave
no trace in kept job folders, and the local state is private whatever the umask."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import Experiment, ScriptRunConfig
from airflow_provider.core.bookkeeping import job_record
from airflow_provider.core.targets.base import JobHandle
from airflow_provider.core.targets.ssh import SSHTarget
from airflow_provider.core.targets.ssh_connection import SSHSettings
from airflow_provider.core.tracking import WARNINGS_ARTIFACT, RunState, Tags
from tests.helpers import rewrite_bookkeeping, wait_until, write_script
from tests.ssh_hosts import SSHHost

SECRET = "postgres://u:Pw-Alpha-7731@db/x"


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _ssh_target(host: SSHHost, **options: Any) -> SSHTarget:
    settings = SSHSettings(host.host, host.port, username=host.username, key_file=str(host.key_path),
                           host_key=host.host_public_key)
    return SSHTarget(settings, work_root=f"/tmp/training-runs-sec-{uuid.uuid4().hex[:8]}", **options)


def _artifacts(run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for info in MlflowClient().list_artifacts(run_id, path):
        found |= _artifacts(run_id, info.path) if info.is_dir else {info.path}
    return found


def _warnings(run_id: str, tmp_path: Path) -> str:
    local = MlflowClient().download_artifacts(run_id, WARNINGS_ARTIFACT, str(tmp_path / f"w-{uuid.uuid4().hex}"))
    return Path(local).read_text()


# ---------------------------------------------------------------- 2. the SSH blob store
def test_a_script_that_alters_its_source_files_cannot_change_the_next_run_of_the_snapshot(
        ssh_loopback: SSHHost, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "original data\n", name="data.txt")
    write_script(tmp_path / "src", """
        import os, stat
        print("read:", open("data.txt").read().strip())
        os.chmod("data.txt", stat.S_IWUSR | stat.S_IRUSR)      # what another user could do first
        with open("data.txt", "a") as altered:                 # root ignores 0444 anyway
            altered.write("poisoned\\n")
    """)
    target = _ssh_target(ssh_loopback)
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target)
    outputs: list[list[str]] = []
    for _ in range(2):
        lines: list[str] = []
        run = Experiment("blob-poison").submit(config)
        assert run.wait_for_completion(output=lines.append)["status"] == "Completed"
        outputs.append(lines)
    assert outputs == [["read: original data"], ["read: original data"]], "the second run read what the first wrote"


def test_a_blob_altered_in_the_hosts_store_is_detected_and_sent_again(ssh_loopback: SSHHost, tmp_path: Path) -> None:
    write_script(tmp_path / "src", "original data\n", name="data.txt")
    write_script(tmp_path / "src", """
        import glob, hashlib, os
        print("read:", open("data.txt").read().strip())
        digest = hashlib.sha256(open("data.txt", "rb").read()).hexdigest()
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.environ["TRAINING_RUN_EVENTS_FILE"])))
        blob = os.path.join(root, "blobs", digest[:2], digest)
        os.chmod(blob, 0o644)
        with open(blob, "a") as store:                         # another job writes to the shared store
            store.write("poisoned\\n")
    """)
    target = _ssh_target(ssh_loopback)
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target)
    seen = []
    for _ in range(2):
        lines: list[str] = []
        assert Experiment("blob-store").submit(config).wait_for_completion(output=lines.append)["status"] == "Completed"
        seen.append(lines)
    assert seen == [["read: original data"], ["read: original data"]]
    assert target.damaged_blobs_resent == 1, "the blob the first run altered was not detected"


# ---------------------------------------------------------------- 3. paths never come from tags
def _victim(folder: Path) -> Path:
    victim = folder / "victim"
    victim.mkdir()
    (victim / "job.json").write_text("{}")
    (victim / "precious.txt").write_text("do not delete")
    return victim


def _rewrite_job_tag(run_id: str, victim: Path) -> None:
    rewrite_bookkeeping(run_id, job={"target": "local", "job_id": "../" * 20 + str(victim).lstrip("/"),
                                     "location": str(victim)})


def test_a_rewritten_job_tag_never_points_the_reattach_or_cleanup_elsewhere(tmp_path: Path) -> None:
    go = tmp_path / "go"
    write_script(tmp_path / "src", """
        import os, time
        while not os.path.exists(os.environ["GO"]):
            time.sleep(0.05)
    """)
    victim = _victim(tmp_path)
    experiment = Experiment("tag-paths")
    config = ScriptRunConfig(tmp_path / "src", "train.py", environment_variables={"GO": str(go)})
    first = experiment.submit(config, run_key="k/tag")
    _rewrite_job_tag(first.id, victim)
    second = experiment.submit(config, run_key="k/tag")  # a retry reattaches by the run's id, not the tag
    assert second.id == first.id and second.handle is not None
    assert second.handle.job_id == first.id
    go.write_text("go")
    assert second.wait_for_completion()["status"] == "Completed"
    assert (victim / "precious.txt").read_text() == "do not delete"


def test_handles_with_a_job_id_that_is_a_path_are_refused(tmp_path: Path) -> None:
    from airflow_provider.core import TargetError
    from airflow_provider.core.targets.local import LocalTarget

    target = LocalTarget(jobs_root=tmp_path / "jobs")
    for job_id in ("../x", "a/b", "..", "", "x\n", "."):
        with pytest.raises(TargetError, match="refusing job id"):
            JobHandle("local", job_id, str(tmp_path / "jobs" / "x"))
        with pytest.raises(TargetError, match="refusing job id"):
            target.find(job_id)
    victim = _victim(tmp_path)
    with pytest.raises(TargetError, match="is not"):
        target.cleanup(JobHandle("local", "victim", str(victim)))
    assert victim.exists()


def test_a_rewritten_job_tag_on_the_ssh_host_removes_nothing_outside_its_jobs(ssh_loopback: SSHHost,
                                                                              tmp_path: Path) -> None:
    go = tmp_path / "go"  # the loopback host shares this machine's filesystem
    write_script(tmp_path / "src", """
        import os, time
        while not os.path.exists(os.environ["GO"]):
            time.sleep(0.05)
    """)
    victim = _victim(tmp_path)
    target = _ssh_target(ssh_loopback)
    experiment = Experiment("tag-paths-ssh")
    config = ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target, environment_variables={"GO": str(go)})
    first = experiment.submit(config, run_key="k/ssh-tag")
    _rewrite_job_tag(first.id, victim)
    second = experiment.submit(config, run_key="k/ssh-tag")
    assert second.id == first.id and second.handle is not None and second.handle.job_id == first.id
    go.write_text("go")
    assert second.wait_for_completion()["status"] == "Completed"
    assert (victim / "precious.txt").read_text() == "do not delete"


def test_a_script_cannot_set_the_providers_or_mlflows_tags(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import json, os
        from airflow_provider.core import Run
        run = Run.get_context()
        try:
            run.tag("training.state", "Completed")
        except ValueError as exc:
            print("refused:", exc)
        run.log("mlflow.source.git.repoURL", "https://evil.example/repo.git")   # a string metric is a tag
        run.tag("mlflow.note.content", "a description the user may set")
        with open(os.environ["TRAINING_RUN_EVENTS_FILE"], "a") as events:      # around the run context
            events.write(json.dumps({"e": "tag", "k": "training.job", "v": "{}"}) + "\\n")
            events.write(json.dumps({"e": "tag", "k": "mlflow.user", "v": "mallory"}) + "\\n")
        run.log("loss", 0.5)
    """)
    lines: list[str] = []
    run = Experiment("reserved-tags").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    assert run.wait_for_completion(output=lines.append)["status"] == "Completed"
    tags = MlflowClient().get_run(run.id).data.tags
    assert any(line.startswith("refused: tag 'training.state' is reserved") for line in lines), lines
    assert any("mlflow.source.git.repoURL" in line and "reserved" in line for line in lines), lines
    assert tags[Tags.STATE] == "Completed"
    assert "mlflow.source.git.repoURL" not in tags
    assert tags.get("mlflow.user") != "mallory"
    assert (job_record(tags) or {})["job_id"] == run.id
    assert tags["mlflow.note.content"] == "a description the user may set"
    warnings = _warnings(run.id, tmp_path)
    assert "'training.job' belongs to the provider" in warnings and "'mlflow.user'" in warnings
    assert run.get_metrics() == {"loss": 0.5}


# ---------------------------------------------------------------- 4. links in ./outputs
LINKS_SCRIPT = """
    import os
    os.makedirs("outputs/sub", exist_ok=True)
    open("outputs/model.txt", "w").write("model")
    os.symlink("/etc/passwd", "outputs/abs_link")
    os.symlink("../model.txt", "outputs/sub/inner_link")
    os.symlink("/nonexistent", "outputs/dangling")
    os.symlink("/etc", "outputs/dir_link")
    os.mkfifo("outputs/fifo")
    os.makedirs("logs", exist_ok=True)
    os.symlink("/etc/hostname", "logs/host")
    print("wrote outputs")
"""


def _check_links_run(run_id: str, tmp_path: Path) -> None:
    files = _artifacts(run_id)
    assert {"outputs/model.txt", "outputs/sub/inner_link"} <= files, files
    assert not {"outputs/abs_link", "outputs/dangling", "outputs/fifo", "logs/host"} & files, files
    assert not any(name.startswith("outputs/dir_link") for name in files), files
    inner = MlflowClient().download_artifacts(run_id, "outputs/sub/inner_link", str(tmp_path / "inner"))
    assert Path(inner).read_text() == "model"
    warnings = _warnings(run_id, tmp_path)
    for name in ("outputs/abs_link", "outputs/dangling", "outputs/fifo", "outputs/dir_link", "logs/host"):
        assert name in warnings, (name, warnings)


def test_links_in_outputs_are_never_followed_out_and_the_run_still_completes(tmp_path: Path) -> None:
    write_script(tmp_path / "src", LINKS_SCRIPT)
    run = Experiment("links-local").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    details = run.wait_for_completion()
    assert details["status"] == "Completed", details
    assert MlflowClient().get_run(run.id).info.status == "FINISHED"
    _check_links_run(run.id, tmp_path)
    assert run.handle is not None and not Path(run.handle.location).exists(), "the job folder was left behind"


def test_links_in_outputs_on_a_docker_target(docker_target: Any, tmp_path: Path) -> None:
    write_script(tmp_path / "src", LINKS_SCRIPT)
    run = Experiment("links-docker").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=docker_target))
    assert run.wait_for_completion()["status"] == "Completed"
    _check_links_run(run.id, tmp_path)  # the docker_target fixture fails if the container is left


def test_links_in_outputs_on_an_ssh_target(ssh_container: SSHHost, tmp_path: Path) -> None:
    write_script(tmp_path / "src", LINKS_SCRIPT)
    target = _ssh_target(ssh_container)
    run = Experiment("links-ssh").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target))
    assert run.wait_for_completion()["status"] == "Completed"
    _check_links_run(run.id, tmp_path)
    assert target.find(run.id) is None, "the job folder was left on the host"


# ---------------------------------------------------------------- 5. bad lines in the events file
def test_bad_event_lines_are_noted_and_skipped_and_the_run_completes(tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import json, os
        from airflow_provider.core import Run
        run = Run.get_context()
        run.log("loss", 1.0)
        lines = [
            "this is not json",
            "1,2",
            json.dumps({"e": "file", "a": "../../escape.txt", "src": "work/train.py"}),
            json.dumps({"e": "file", "a": "ok.txt", "src": "../../../../etc/passwd"}),
            json.dumps({"e": "row", "n": "../escape", "r": {"a": 1}}),
            json.dumps({"e": "model", "n": "m", "a": "../../x", "tg": {}}),
            json.dumps({"e": "metric", "k": "huge_step", "v": 1.0, "s": 2 ** 70, "t": 0}),
            json.dumps({"e": "metric", "k": "bad\\nname", "v": 1.0, "s": 0, "t": 0}),
            json.dumps({"e": "unknown-kind"}),
        ]
        with open(os.environ["TRAINING_RUN_EVENTS_FILE"], "a") as events:
            events.write("\\n".join(lines) + "\\n")
        run.log("loss", 0.5)
        run.log_row("folds", fold=1, auc=0.8)
    """)
    run = Experiment("bad-events").submit(ScriptRunConfig(tmp_path / "src", "train.py"))
    details = run.wait_for_completion()
    assert details["status"] == "Completed", details
    assert run.get_metrics()["loss"] == [1.0, 0.5]
    files = _artifacts(run.id)
    assert "tables/folds.json" in files and "ok.txt" not in files
    assert not any("escape" in name for name in files), files
    warnings = _warnings(run.id, tmp_path)
    for expected in ("'this is not json'", "'1,2'", "'../../escape.txt'", "'../../../../etc/passwd'",
                     "'../escape'", "'../../x'", "huge_step", "unknown-kind"):
        assert expected in warnings, (expected, warnings)
    assert int(MlflowClient().get_run(run.id).data.tags[Tags.WARNINGS].split()[0]) >= 8


# ---------------------------------------------------------------- 6. secrets in kept folders
def test_a_failed_runs_kept_folder_on_the_ssh_host_holds_no_secret(ssh_loopback: SSHHost, tmp_path: Path) -> None:
    write_script(tmp_path / "src", """
        import os, sys
        assert os.environ["DB_CONN_STR"].startswith("postgres://")
        sys.exit(3)
    """)
    target = _ssh_target(ssh_loopback, keep_failed_job_folders=True)
    run = Experiment("kept-secrets").submit(ScriptRunConfig(tmp_path / "src", "train.py", compute_target=target),
                                            secret_variables={"DB_CONN_STR": SECRET})
    assert run.wait_for_completion(raise_on_error=False)["status"] == "Failed"
    assert run.handle is not None
    kept = Path(run.handle.location)
    assert (kept / ".kept").exists(), "the failed run's folder was not kept"
    spec = json.loads((kept / "job.json").read_text())
    assert "DB_CONN_STR" not in spec["env"] and spec["secret_env"] == ["DB_CONN_STR"]
    for path in kept.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"{path} holds the secret"


def test_the_local_job_file_loses_its_secrets_once_the_job_started(tmp_path: Path) -> None:
    go = tmp_path / "go"
    write_script(tmp_path / "src", """
        import os, time
        assert os.environ["DB_CONN_STR"].startswith("postgres://")
        while not os.path.exists(os.environ["GO"]):
            time.sleep(0.05)
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py", environment_variables={"GO": str(go)})
    run = Experiment("job-json").submit(config, secret_variables={"DB_CONN_STR": SECRET})
    assert run.handle is not None
    spec = Path(run.handle.location) / "job.json"
    assert SECRET not in spec.read_text()
    go.write_text("go")
    assert run.wait_for_completion()["status"] == "Completed"


# ---------------------------------------------------------------- 7. private local state
def test_local_state_is_private_whatever_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "fresh-state"
    monkeypatch.setenv("TRAINING_RUNS_HOME", str(state))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    go = tmp_path / "go"
    write_script(tmp_path / "src", """
        import os, time
        while not os.path.exists(os.environ["GO"]):
            time.sleep(0.05)
    """)
    previous = os.umask(0o022)
    try:
        run = Experiment("private").submit(ScriptRunConfig(tmp_path / "src", "train.py",
                                                           environment_variables={"GO": str(go)}))
        assert run.handle is not None
        job_dir = Path(run.handle.location)
        modes = {"state": state, "jobs": job_dir.parent, "job": job_dir}
        for name, folder in modes.items():
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, (name, oct(folder.stat().st_mode))
        assert stat.S_IMODE((state / "mlflow.db").stat().st_mode) == 0o600
        blobs = [p for p in (state / "snapshots" / "blobs").rglob("*") if p.is_file()]
        assert blobs and all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in blobs)
        go.write_text("go")
        assert run.wait_for_completion()["status"] == "Completed"
    finally:
        os.umask(previous)
        wait_until(lambda: RunState(MlflowClient(f"sqlite:///{state / 'mlflow.db'}").get_run(run.id)
                                    .data.tags[Tags.STATE]).is_terminal, timeout=60)


def test_a_state_folder_made_earlier_with_a_loose_mode_is_tightened(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider.core.paths import state_dir

    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    monkeypatch.setenv("TRAINING_RUNS_HOME", str(loose))
    assert state_dir() == loose
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
