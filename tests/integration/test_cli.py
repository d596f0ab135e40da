"""The ``training-runs`` command line end to end: the installed console script in its own process,
against the embedded store and a real ``mlflow server``, submitting the example job files
(``examples/jobs``) that ``docs/job-yaml.md`` documents."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "jobs"
CLI = str(Path(sys.executable).parent / "training-runs")


@pytest.fixture(params=["embedded", "server"])
def cli_env(request: pytest.FixtureRequest, isolated_state: Path) -> dict[str, str]:
    """The command line's environment: this test's state folder, and the embedded store or a real server."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AIRFLOW_CONN_"))}
    if request.param == "server":
        environment["MLFLOW_TRACKING_URI"] = request.getfixturevalue("mlflow_server")
    return environment


def _cli(environment: dict[str, str], *args: str, timeout: float = 180, cwd: Path | None = None,
         check: int | None = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, env=environment, cwd=cwd)
    if check is not None:
        assert done.returncode == check, (args, done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    return done


def _jobs(tmp_path: Path) -> Path:
    """A copy of the examples (a test's experiment name is its own: the server is shared)."""
    folder = tmp_path / "jobs"
    shutil.copytree(EXAMPLES, folder)
    return folder


def test_submit_stream_then_list_show_logs_and_download(cli_env: dict[str, str], tmp_path: Path) -> None:
    jobs = _jobs(tmp_path)
    experiment = f"cli-{uuid.uuid4().hex[:8]}"
    done = _cli(cli_env, "submit", str(jobs / "train.yml"), "--stream", "--set", "inputs.epochs=3",
                "--experiment", experiment)
    run_id, *output = done.stdout.splitlines()
    assert [line.split(":")[0] for line in output] == ["epoch 0", "epoch 1", "epoch 2"]
    assert f"run {run_id}: Completed" in done.stderr

    listed = json.loads(_cli(cli_env, "list", "--experiment", experiment, "--json").stdout)
    assert [(row["run_id"], row["status"], row["name"]) for row in listed] == [(run_id, "Completed", "train-linear")]
    table = _cli(cli_env, "list").stdout.splitlines()
    assert table[0].split()[:3] == ["RUN_ID", "EXPERIMENT", "STATUS"] and any(run_id in line for line in table)

    details = json.loads(_cli(cli_env, "show", run_id, "--metrics").stdout)
    assert details["status"] == "Completed" and details["displayName"] == "train-linear"
    assert details["runDefinition"]["arguments"][2:4] == ["--epochs", "3"]
    assert details["tags"]["example"] == "job-yaml" and len(details["metrics"]["loss"]) == 3
    assert [row["name"] for row in details["inputDatasets"]] == ["training_data"]

    assert _cli(cli_env, "logs", run_id).stdout.splitlines() == output
    downloaded = Path(_cli(cli_env, "download", run_id, "outputs", "--to", str(tmp_path / "dl")).stdout.strip())
    assert (downloaded / "summary.json").is_file()
    missing = _cli(cli_env, "download", run_id, "outputs/nope.bin", check=2)
    assert "has no artifact 'outputs/nope.bin'" in missing.stderr and "retrying will not help" in missing.stderr


def test_a_run_submitted_without_stream_is_taken_to_its_end_in_the_background(cli_env: dict[str, str],
                                                                              tmp_path: Path) -> None:
    jobs = _jobs(tmp_path)
    done = _cli(cli_env, "submit", str(jobs / "train.yml"), "--set", "inputs.epochs=2",
                "--experiment", f"cli-bg-{uuid.uuid4().hex[:8]}")
    run_id = done.stdout.strip()
    assert f"training-runs logs --follow {run_id}" in done.stderr

    def status() -> str:
        return str(json.loads(_cli(cli_env, "show", run_id).stdout)["status"])

    followed = _cli(cli_env, "logs", "--follow", run_id, timeout=120)
    assert [line.split(":")[0] for line in followed.stdout.splitlines()] == ["epoch 0", "epoch 1"]
    wait_until(lambda: status() == "Completed", timeout=60, message="the background watcher to finalize the run")


def test_cancel_from_another_terminal_ends_a_streamed_run_with_status_130(cli_env: dict[str, str],
                                                                          tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "slow.yml").write_text(
        "code: src\ncommand: python -c \"import time; print('sleeping', flush=True); time.sleep(120)\"\n"
        f"experiment_name: cli-cancel-{uuid.uuid4().hex[:8]}\n")
    streaming = subprocess.Popen([CLI, "submit", str(tmp_path / "slow.yml"), "--stream"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=cli_env)
    try:
        assert streaming.stdout is not None
        run_id = streaming.stdout.readline().strip()
        assert streaming.stdout.readline().strip() == "sleeping"
        canceled = _cli(cli_env, "cancel", run_id)
        assert canceled.stdout.strip() == f"run {run_id}: Canceled"
        assert streaming.wait(timeout=120) == 130
        assert "Canceled" in streaming.stderr.read()
    finally:
        if streaming.poll() is None:
            streaming.kill()
            streaming.wait()
    assert _cli(cli_env, "cancel", run_id).stdout.strip() == f"run {run_id} already ended Canceled"


def test_a_failing_run_exits_1_and_a_bad_job_file_exits_2_naming_every_problem(tmp_path: Path,
                                                                                isolated_state: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    (tmp_path / "src").mkdir()
    (tmp_path / "fails.yml").write_text("code: src\ncommand: python -c \"import sys; sys.exit(3)\"\n")
    failed = _cli(environment, "submit", str(tmp_path / "fails.yml"), "--stream", check=1)
    assert "ended Failed" in failed.stderr

    (tmp_path / "bad.yml").write_text("code: nowhere\ncomand: python train.py\nlimits:\n  timeout: soon\n")
    bad = _cli(environment, "submit", str(tmp_path / "bad.yml"), check=2)
    for expected in ("bad.yml:1", "code", "bad.yml:2", "comand", "command", "bad.yml:4", "limits.timeout"):
        assert expected in bad.stderr, (expected, bad.stderr)
    assert "retrying will not help" in bad.stderr
    assert _cli(environment, "list", "--json").stdout.count('"run_id"') == 1, "a bad file starts nothing"
    assert _cli(environment, "submit", str(EXAMPLES / "train.yml"), "--validate").stdout.strip().endswith(
        "valid command job")


def test_sweep_and_mlproject_job_files(tmp_path: Path, isolated_state: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    jobs = _jobs(tmp_path)
    sweep = _cli(environment, "submit", str(jobs / "sweep.yml"), "--stream", timeout=300)
    sweep_id = sweep.stdout.splitlines()[0]
    details = json.loads(_cli(environment, "show", sweep_id).stdout)
    assert details["status"] == "Completed" and len(details["trials"]) == 4
    trials = json.loads(_cli(environment, "list", "--all", "--json", "--experiment", "job-yaml-examples").stdout)
    assert len(trials) == 5, "the sweep and its four trials"

    project = _cli(environment, "submit", str(jobs / "mlproject"), "--stream", "--set", "epochs=2")
    run_id = project.stdout.splitlines()[0]
    shown = json.loads(_cli(environment, "show", run_id).stdout)
    assert shown["parameters"]["epochs"] == "2" and shown["status"] == "Completed"
    quick = _cli(environment, "submit", str(jobs / "mlproject"), "--entry-point", "quick", check=2)
    assert "data" in quick.stderr, "a parameter without a default must be given"


def test_archive_experiments_and_environments(tmp_path: Path, isolated_state: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    (tmp_path / "src").mkdir()
    (tmp_path / "ok.yml").write_text("code: src\ncommand: echo ok\nexperiment_name: to-archive\n")
    _cli(environment, "submit", str(tmp_path / "ok.yml"), "--stream")
    assert "to-archive" in _cli(environment, "experiments").stdout.split()
    _cli(environment, "archive", "to-archive")
    assert "to-archive" not in _cli(environment, "experiments").stdout.split()
    assert "to-archive  (archived)" in _cli(environment, "experiments", "--all").stdout
    refused = _cli(environment, "submit", str(tmp_path / "ok.yml"), check=2)
    assert "is archived" in refused.stderr and "archive --undo to-archive" in refused.stderr
    _cli(environment, "archive", "--undo", "to-archive")
    assert "to-archive" in _cli(environment, "experiments").stdout.split()

    names = [row["name"] for row in json.loads(_cli(environment, "environments", "list", "--json").stdout)]
    assert {"training-minimal", "training-sklearn", "training-pytorch-cpu", "AzureML-Minimal"} <= set(names)
    shown = json.loads(_cli(environment, "environments", "show", "training-sklearn").stdout)
    assert "scikit-learn==1.7.2" in shown["python"]["pip_packages"]
    built = _cli(environment, "environments", "build", "training-minimal").stdout
    assert built.startswith("training-minimal: ") and "local" in built


def test_target_from_an_airflow_connection(docker_target: object, tmp_path: Path, isolated_state: Path) -> None:
    """``--target`` names an Airflow connection (here given as ``AIRFLOW_CONN_<ID>``, as Airflow reads it)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment["AIRFLOW_CONN_CLI_DOCKER"] = json.dumps({
        "conn_type": "training_docker", "host": "unix:///var/run/docker.sock",
        "extra": {"image": "training-runs/python:3.11"}})
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "where.py").write_text("import os\nprint('in', 'docker' if os.path.exists('/.dockerenv') "
                                               "else 'host')\n")
    (tmp_path / "job.yml").write_text("code: src\ncommand: python where.py\nexperiment_name: cli-docker\n")
    started = time.monotonic()
    done = _cli(environment, "submit", str(tmp_path / "job.yml"), "--target", "cli_docker", "--stream")
    assert done.stdout.splitlines()[1:] == ["in docker"], (done.stdout, time.monotonic() - started)
    unknown = _cli(environment, "submit", str(tmp_path / "job.yml"), "--target", "no_such_conn", check=2)
    assert "no Airflow connection 'no_such_conn'" in unknown.stderr


SLOW_SWEEP = """
type: sweep
experiment_name: {experiment}
trial:
  code: src
  command: python slow.py --lr ${{{{search_space.lr}}}}
search_space:
  lr: {{type: choice, values: [0.1, 0.2]}}
sampling_algorithm: grid
objective: {{goal: maximize, primary_metric: score}}
limits: {{max_concurrent_trials: 2}}
"""


def test_a_sweep_without_stream_runs_in_the_background_and_cancel_stops_its_trials(
        tmp_path: Path, isolated_state: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    jobs = _jobs(tmp_path)
    background = _cli(environment, "submit", str(jobs / "sweep.yml"), timeout=300)
    sweep_id = background.stdout.strip()
    assert "the sweep runs in the background" in background.stderr

    def status(run_id: str) -> str:
        return str(json.loads(_cli(environment, "show", run_id).stdout)["status"])

    wait_until(lambda: status(sweep_id) == "Completed", timeout=300, message="the background sweep to end")
    assert len(json.loads(_cli(environment, "show", sweep_id).stdout)["trials"]) == 4

    (jobs / "src" / "slow.py").write_text(
        "import time\nfrom airflow_provider.core import Run\nRun.get_context().log('score', 1.0)\n"
        "print('trial started', flush=True)\ntime.sleep(120)\n")
    (jobs / "slow.yml").write_text(SLOW_SWEEP.format(experiment=f"slow-{uuid.uuid4().hex[:6]}"))
    slow_id = _cli(environment, "submit", str(jobs / "slow.yml")).stdout.strip()

    def trials() -> list[dict[str, str]]:
        found: list[dict[str, str]] = json.loads(_cli(environment, "list", "--all", "--json", "--limit", "0").stdout)
        return [row for row in found if row["run_id"] != slow_id and row["experiment"].startswith("slow-")]

    wait_until(lambda: [row["status"] for row in trials()] == ["Running", "Running"], timeout=120,
               message="both trials to run")
    assert _cli(environment, "cancel", slow_id).stdout.strip() == f"run {slow_id}: Canceled"
    wait_until(lambda: {row["status"] for row in trials()} == {"Canceled"}, timeout=120,
               message="the background driver to stop the trials")


def test_list_limit_zero_lists_every_run(tmp_path: Path, isolated_state: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    (tmp_path / "src").mkdir()
    (tmp_path / "ok.yml").write_text("code: src\ncommand: echo ok\nexperiment_name: many\n")
    for _ in range(3):
        _cli(environment, "submit", str(tmp_path / "ok.yml"), "--stream")
    assert len(json.loads(_cli(environment, "list", "--json", "--limit", "0").stdout)) == 3
    assert len(json.loads(_cli(environment, "list", "--json", "--limit", "2").stdout)) == 2


def test_interrupting_stream_leaves_the_run_going_and_watched_in_the_background(
        tmp_path: Path, isolated_state: Path) -> None:
    import signal

    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    (tmp_path / "src").mkdir()
    (tmp_path / "job.yml").write_text(
        "code: src\ncommand: python -c \"import time; print('begun', flush=True); time.sleep(4); print('done')\"\n")
    streaming = subprocess.Popen([CLI, "submit", str(tmp_path / "job.yml"), "--stream"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=environment)
    assert streaming.stdout is not None
    run_id = streaming.stdout.readline().strip()
    assert streaming.stdout.readline().strip() == "begun"
    streaming.send_signal(signal.SIGINT)
    assert streaming.wait(timeout=60) == 4
    assert "goes on in the background" in streaming.stderr.read()
    wait_until(lambda: json.loads(_cli(environment, "show", run_id).stdout)["status"] == "Completed",
               timeout=60, message="the background watcher to finish the run")
    assert _cli(environment, "logs", run_id).stdout.split() == ["begun", "done"]
