"""Hyperparameter sweeps on real targets with a real MLflow store: scripts whose metric curves are
known in advance prove which trials each policy stops, and at which interval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import ConfigurationError, Experiment, ScriptRunConfig
from airflow_provider.core.bookkeeping import job_record
from airflow_provider.core.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    HyperDriveRun,
    MedianStoppingPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    TruncationSelectionPolicy,
    choice,
    quniform,
    uniform,
)
from airflow_provider.core.hyperdrive.parameter_expressions import Quantized
from airflow_provider.core.hyperdrive.sampling import TrialSampler
from airflow_provider.core.submit import StagedRun
from airflow_provider.core.tracking import Tags
from tests.helpers import wait_until, write_script
from tests.ssh_hosts import SSHHost

pytestmark = pytest.mark.usefixtures("tracking_uri", "nothing_left_behind")

CURVE_SCRIPT = """
    import argparse, json, os, time
    from airflow_provider.core import Run
    parser = argparse.ArgumentParser()
    parser.add_argument("--curve", type=int, required=True)
    parser.add_argument("--pause", type=float, default=0.3)
    args = parser.parse_args()
    curve = json.loads(os.environ["CURVES"])[args.curve]
    starts = os.environ.get("STARTS")
    if starts:
        with open(starts, "a") as out:
            out.write(json.dumps({"curve": args.curve, "start": time.time()}) + "\\n")
    run = Run.get_context()
    for value in curve:
        run.log("score", value)
        time.sleep(args.pause)
    if starts:
        with open(starts, "a") as out:
            out.write(json.dumps({"curve": args.curve, "end": time.time()}) + "\\n")
"""


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def curve_config(tmp_path: Path, curves: list[list[float]], pause: float = 0.3) -> ScriptRunConfig:
    source = tmp_path / "src"
    write_script(source, CURVE_SCRIPT)
    return ScriptRunConfig(source, "train.py", arguments=["--pause", pause], environment_variables={
        "CURVES": json.dumps(curves), "STARTS": str(tmp_path / "starts.jsonl")})


def trials_by_curve(run: HyperDriveRun) -> dict[int, dict[str, Any]]:
    client = MlflowClient()
    found = {}
    for trial in run.get_details()["trials"]:
        tags = client.get_run(trial["run_id"]).data.tags
        history = [m.value for m in client.get_metric_history(trial["run_id"], "score")]
        found[trial["hyperparameters"]["--curve"]] = {**trial, "tags": tags, "history": history}
    return found


def run_policy_sweep(tmp_path: Path, curves: list[list[float]], policy: Any, goal: str = "MAXIMIZE") -> HyperDriveRun:
    sampling = GridParameterSampling({"--curve": choice(*range(len(curves)))})
    config = HyperDriveConfig(curve_config(tmp_path, curves), sampling, "score", goal, max_concurrent_runs=1,
                              policy=policy)
    run = Experiment("policies").submit(config)
    run.wait_for_completion()
    return run


def assert_stopped(trial: dict[str, Any], interval: int, policy: str, curve_length: int) -> None:
    assert trial["status"] == "Canceled", trial
    assert trial["tags"][Tags.ERROR].startswith(f"terminated early by {policy} at interval {interval}:"), trial["tags"]
    assert interval <= len(trial["history"]) < curve_length, "stopped at once, long before its last report"


def assert_ran_to_the_end(trial: dict[str, Any], curve: list[float]) -> None:
    assert trial["status"] == "Completed", trial
    assert trial["history"] == curve
    assert Tags.SWEEP_TERMINATED not in trial["tags"]


def test_bandit_policy_stops_exactly_the_trials_outside_the_slack(tmp_path: Path) -> None:
    curves = [
        [0.5, 0.6, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8],    # the best: runs to the end
        [0.45, 0.55, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7],  # within 0.8 / 1.2 = 0.667 at every interval
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],    # interval 2: 0.2 < 0.6 / 1.2 = 0.5
        [0.5, 0.55, 0.58, 0.6, 0.9, 0.9, 0.9, 0.9],  # 2: 0.55 >= 0.5; 3: 0.58 < 0.7 / 1.2 = 0.583
    ]
    run = run_policy_sweep(tmp_path, curves, BanditPolicy(slack_factor=0.2, evaluation_interval=1, delay_evaluation=2))
    trials = trials_by_curve(run)
    assert_ran_to_the_end(trials[0], curves[0])
    assert_ran_to_the_end(trials[1], curves[1])
    assert_stopped(trials[2], 2, "BanditPolicy", 8)
    assert "this trial's best 0.2 is below 0.5 = best 0.6 / (1 + slack_factor 0.2)" in trials[2]["tags"][Tags.ERROR]
    assert_stopped(trials[3], 3, "BanditPolicy", 8)
    details = run.get_details()
    assert details["status"] == "Completed" and details["bestRun"]["hyperparameters"] == {"--curve": 0}


def test_median_stopping_policy_compares_with_the_median_of_running_averages(tmp_path: Path) -> None:
    # Minimizing a loss. Interval 3 (delay 3, every 3rd report): running averages of the first 3.
    curves = [
        [1.0, 0.8, 0.6, 0.5, 0.4, 0.3],   # average 0.8
        [1.2, 1.0, 0.9, 0.8, 0.7, 0.6],   # average 1.033; best 0.9 > median(0.8, 1.033) = 0.917? no: 0.9 < 0.917
        [2.0, 1.9, 1.8, 1.7, 1.6, 1.5],   # best 1.8 > median(0.8, 1.033, 1.9) = 1.033: stopped at 3
        [1.1, 1.0, 0.95, 0.2, 0.1, 0.1],  # 3: best 0.95 <= median(0.8, 1.033, 1.9, 1.017) = 1.025; 6: best 0.1
    ]
    run = run_policy_sweep(tmp_path, curves, MedianStoppingPolicy(evaluation_interval=3, delay_evaluation=3),
                           goal="MINIMIZE")
    trials = trials_by_curve(run)
    assert_ran_to_the_end(trials[0], curves[0])
    assert_ran_to_the_end(trials[1], curves[1])
    assert_stopped(trials[2], 3, "MedianStoppingPolicy", 6)
    assert_ran_to_the_end(trials[3], curves[3])
    assert run.get_details()["bestRun"]["hyperparameters"] == {"--curve": 3}


def test_truncation_selection_policy_stops_the_lowest_percentage(tmp_path: Path) -> None:
    # 25 %: with n trials at an interval, the floor(n / 4) worst stop. Evaluated every 2nd report.
    curves = [
        [0.5, 0.6, 0.7, 0.8, 0.9, 0.9],
        [0.4, 0.5, 0.6, 0.7, 0.8, 0.8],
        [0.3, 0.4, 0.5, 0.6, 0.7, 0.8],   # interval 2: n=3, floor(0.75)=0: nobody stops; runs on
        [0.2, 0.3, 0.9, 0.9, 0.9, 0.9],   # interval 2: n=4, 1 stops: the worst (best 0.3) is this one
        [0.6, 0.7, 0.8, 0.2, 0.2, 0.2],   # 2 and 4: the best so far (0.7, 0.8 vs 0.7...): runs on
    ]
    run = run_policy_sweep(tmp_path, curves, TruncationSelectionPolicy(25, evaluation_interval=2))
    trials = trials_by_curve(run)
    for index in (0, 1, 2, 4):
        assert_ran_to_the_end(trials[index], curves[index])
    assert_stopped(trials[3], 2, "TruncationSelectionPolicy", 6)
    assert "ranks 4 of 4, among the worst 1 (25 %)" in trials[3]["tags"][Tags.ERROR]


def test_concurrency_never_exceeds_the_limit_and_the_parent_records_the_best(tmp_path: Path) -> None:
    curves = [[float(i)] * 3 for i in range(7)]
    config = HyperDriveConfig(curve_config(tmp_path, curves, pause=0.15),
                              GridParameterSampling({"curve": choice(*range(7))}), "score", "maximize",
                              max_concurrent_runs=3)
    run = Experiment("concurrency").submit(config, tags={"team": "search"}, run_name="grid")
    lines: list[str] = []
    details = run.wait_for_completion(output=lines.append)
    spans: dict[int, dict[str, float]] = {}
    for line in (tmp_path / "starts.jsonl").read_text().splitlines():
        event = json.loads(line)
        spans.setdefault(event["curve"], {}).update({k: v for k, v in event.items() if k != "curve"})
    assert sorted(spans) == list(range(7)), "every trial ran exactly once"
    edges = sorted([(s["start"], 1) for s in spans.values()] + [(s["end"], -1) for s in spans.values()])
    running, peak = 0, 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    assert peak == 3, f"at most 3 trials at once, and the limit was used: peak {peak}"
    client = MlflowClient()
    parent = client.get_run(run.id)
    assert parent.data.tags[Tags.STATE] == "Completed" and parent.data.tags["team"] == "search"
    best = run.get_best_run_by_primary_metric()
    assert best is not None and parent.data.tags[Tags.SWEEP_BEST_RUN_ID] == best.id
    assert json.loads(parent.data.tags[Tags.SWEEP_BEST_HYPERPARAMETERS]) == {"curve": 6}
    assert parent.data.metrics["score"] == 6.0 and parent.data.metrics["trials_completed"] == 7.0
    sorted_children = run.get_children_sorted_by_primary_metric(top=3)
    assert [c["hyperparameters"]["curve"] for c in sorted_children] == [6, 5, 4]
    worst_first = run.get_children_sorted_by_primary_metric(reverse=True)
    assert [c["hyperparameters"]["curve"] for c in worst_first][:2] == [0, 1]
    child = client.get_run(best.id)
    assert child.data.tags[Tags.PARENT_RUN_ID] == run.id and child.data.tags["team"] == "search"
    # the sampled value, and the rest of the trial's arguments (logged as params when it ended)
    assert child.data.params == {"curve": "6", "pause": "0.15"} and child.info.run_name == "grid_6"
    assert "--curve 6" in child.data.tags[Tags.COMMAND]
    assert any(line.startswith("[trial 6] ") for line in lines) or details["status"] == "Completed"


def test_random_sampling_with_a_seed_repeats_exactly(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_script(source, "from airflow_provider.core import Run\nRun.get_context().log('score', 1)\n")
    space = {"--lr": uniform(0.001, 0.1), "--batch": choice(16, 32, 64), "--dropout": quniform(0.0, 0.5, 0.1)}

    def sweep(seed: int) -> list[dict[str, Any]]:
        config = HyperDriveConfig(ScriptRunConfig(source, "train.py"), RandomParameterSampling(space, seed=seed),
                                  "score", "maximize", max_total_runs=4, max_concurrent_runs=2)
        run = Experiment("random").submit(config)
        run.wait_for_completion()
        return [t["hyperparameters"] for t in run.get_details()["trials"]]

    first, second, other = sweep(11), sweep(11), sweep(12)
    assert first == second and first != other
    assert all(0.001 <= t["--lr"] <= 0.1 and t["--batch"] in (16, 32, 64) for t in first)
    assert all(round(t["--dropout"] * 10, 9) == round(t["--dropout"] * 10) for t in first)


def test_bayesian_sampling_learns_toward_the_optimum(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_script(source, """
        import argparse
        from airflow_provider.core import Run
        parser = argparse.ArgumentParser()
        parser.add_argument("--x", type=float)
        parser.add_argument("--kind", type=str)
        args = parser.parse_args()
        Run.get_context().log("loss", (args.x - 0.7) ** 2 + (0 if args.kind == "good" else 1))
    """)
    config = HyperDriveConfig(
        ScriptRunConfig(source, "train.py"),
        BayesianParameterSampling({"--x": uniform(0.0, 1.0), "--kind": choice("good", "bad")}, seed=3),
        "loss", "minimize", max_total_runs=14, max_concurrent_runs=1)
    run = Experiment("bayesian").submit(config)
    details = run.wait_for_completion()
    assert len(details["trials"]) == 14 and all(t["status"] == "Completed" for t in details["trials"])
    best = details["bestRun"]
    assert best["hyperparameters"]["--kind"] == "good" and best["best_primary_metric"] < 0.05


def test_max_duration_stops_the_sweep_and_cancels_running_trials(tmp_path: Path) -> None:
    config = HyperDriveConfig(curve_config(tmp_path, [[1.0] * 100] * 4, pause=0.2),
                              GridParameterSampling({"--curve": choice(0, 1, 2, 3)}), "score", "maximize",
                              max_concurrent_runs=2, max_duration_minutes=2.5 / 60)
    started = time.monotonic()
    run = Experiment("duration").submit(config)
    details = run.wait_for_completion(raise_on_error=False)
    assert time.monotonic() - started < 15
    assert details["stopped"] == "the sweep's max_duration_minutes (0.0416667) was reached"
    statuses = {t["trial_index"]: t["status"] for t in details["trials"]}
    assert statuses == {0: "Canceled", 1: "Canceled", 2: "Canceled", 3: "Canceled"}
    client = MlflowClient()
    for index in (0, 1):
        stopped = client.get_run(details["trials"][index]["run_id"]).data.tags
        assert stopped[Tags.ERROR] == "the sweep's max_duration_minutes (0.0416667) was reached"
    for index in (2, 3):  # staged ahead for the next free slots, never started
        never_started = client.get_run(details["trials"][index]["run_id"]).data.tags
        assert never_started[Tags.ERROR].startswith("never started: the sweep's max_duration_minutes")
        assert job_record(never_started) is None
    assert details["status"] == "Failed" and details["error"] == "no trial completed"
    assert MlflowClient().get_run(run.id).info.status == "FAILED"


RESUMABLE_DRIVER = """
import json, os, sys
from airflow_provider.core import ConfigurationError, Experiment, ScriptRunConfig
from airflow_provider.core.hyperdrive import GridParameterSampling, HyperDriveConfig, choice
curves = [[1.0, 2.0], [2.0, 3.0], [3.0] * 40, [4.0, 5.0]]
config = HyperDriveConfig(
    ScriptRunConfig(sys.argv[1], "train.py", arguments=["--pause", 0.1],
                    environment_variables={"CURVES": json.dumps(curves), "STARTS": sys.argv[2]}),
    GridParameterSampling({"--curve": choice(0, 1, 2, 3)}), "score", "maximize", max_concurrent_runs=1)
run = Experiment("resume").submit(config, run_key="dag/sweep/run-1")
print("PARENT", run.id, flush=True)
run.wait_for_completion()
"""


def test_a_sweep_resumed_after_its_driver_died_does_not_rerun_finished_trials(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_script(source, CURVE_SCRIPT)
    starts = tmp_path / "starts.jsonl"
    driver = subprocess.Popen([sys.executable, "-c", RESUMABLE_DRIVER, str(source), str(starts)],
                              env={**os.environ}, stdout=subprocess.PIPE, text=True)

    def started(curve: int) -> bool:
        return starts.exists() and any(json.loads(line).get("curve") == curve and "start" in line
                                       for line in starts.read_text().splitlines())

    wait_until(lambda: started(2), timeout=60, message="the third trial started")
    driver.send_signal(signal.SIGKILL)  # the worker dies: no cleanup of any kind
    driver.wait()
    parent_id = driver.stdout.read().split("PARENT ", 1)[1].split()[0] if driver.stdout else ""

    curves = [[1.0, 2.0], [2.0, 3.0], [3.0] * 40, [4.0, 5.0]]
    config = HyperDriveConfig(
        ScriptRunConfig(source, "train.py", arguments=["--pause", 0.1],
                        environment_variables={"CURVES": json.dumps(curves), "STARTS": str(starts)}),
        GridParameterSampling({"--curve": choice(0, 1, 2, 3)}), "score", "maximize", max_concurrent_runs=1)
    run = Experiment("resume").submit(config, run_key="dag/sweep/run-1")
    assert run.id == parent_id, "the retry picks up the same sweep"
    details = run.wait_for_completion()
    starts_per_curve: dict[int, int] = {}
    for line in starts.read_text().splitlines():
        event = json.loads(line)
        if "start" in event:
            starts_per_curve[event["curve"]] = starts_per_curve.get(event["curve"], 0) + 1
    assert starts_per_curve == {0: 1, 1: 1, 2: 1, 3: 1}, "no trial ran twice; the running one was reattached"
    assert [t["status"] for t in details["trials"]] == ["Completed"] * 4
    assert len(MlflowClient().get_metric_history(details["trials"][2]["run_id"], "score")) == 40
    assert details["bestRun"]["hyperparameters"] == {"--curve": 3}
    again = Experiment("resume").submit(config, run_key="dag/sweep/run-1")
    assert again.id == parent_id and again.wait_for_completion()["status"] == "Completed"
    assert sum(1 for line in starts.read_text().splitlines() if "start" in line) == 4, "a finished sweep reruns nothing"


def _ssh_target(host: SSHHost) -> Any:
    import uuid

    from airflow_provider.core.targets.ssh import SSHTarget
    from airflow_provider.core.targets.ssh_connection import SSHSettings

    settings = SSHSettings(host.host, host.port, username=host.username, key_file=str(host.key_path),
                           host_key=host.host_public_key)
    return SSHTarget(settings, work_root=f"/tmp/training-runs-test-{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize("kind", ["docker", "ssh", "slurm"])
def test_a_sweep_runs_on_remote_targets_with_early_termination(kind: str, tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    """On Slurm every trial is a Slurm job, at most two queued or running at once; the trial stopped
    early is its job canceled."""
    if kind == "docker":
        target = request.getfixturevalue("docker_target")
    elif kind == "slurm":
        target = request.getfixturevalue("slurm")
    else:
        target = _ssh_target(request.getfixturevalue("ssh_container"))
    curves = [[0.5, 0.6, 0.7, 0.8, 0.8, 0.8], [0.6, 0.7, 0.7, 0.7, 0.7, 0.7], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    source = tmp_path / "src"
    write_script(source, CURVE_SCRIPT)
    base = ScriptRunConfig(source, "train.py", arguments=["--pause", 0.4], compute_target=target,
                           environment_variables={"CURVES": json.dumps(curves)})
    # Trial 2 starts only when a slot frees, so a whole curve of a sibling is in MLflow by then.
    config = HyperDriveConfig(base, GridParameterSampling({"--curve": choice(0, 1, 2)}), "score", "MAXIMIZE",
                              max_concurrent_runs=2, policy=BanditPolicy(slack_amount=0.3, delay_evaluation=2))
    lines: list[str] = []
    details = Experiment(f"sweep-{kind}").submit(config).wait_for_completion(output=lines.append)
    statuses = {t["trial_index"]: t["status"] for t in details["trials"]}
    assert statuses == {0: "Completed", 1: "Completed", 2: "Canceled"}, details
    stopped = MlflowClient().get_run(details["trials"][2]["run_id"]).data.tags
    assert stopped[Tags.ERROR].startswith("terminated early by BanditPolicy at interval 2:"), stopped[Tags.ERROR]
    assert kind in stopped[Tags.TARGET]
    assert details["bestRun"]["hyperparameters"] == {"--curve": 0}
    if kind == "slurm":
        from tests.integration.slurm_support import accounted

        cluster = request.getfixturevalue("slurm_cluster")
        jobs = {t["trial_index"]: accounted(cluster, t["run_id"], "State,Start,End")[0] for t in details["trials"]}
        assert [jobs[i][0] for i in range(3)] == ["COMPLETED", "COMPLETED", "CANCELLED by 0"], jobs
        # A trial's job ends a moment after its run recorded its ending (Slurm's own epilog): a
        # second of overlap is that moment, not a third trial at once.
        started, first_end = (datetime.fromisoformat(jobs[2][1]),
                              min(datetime.fromisoformat(jobs[0][2]), datetime.fromisoformat(jobs[1][2])))
        assert started >= first_end - timedelta(seconds=1), f"a third job ran while two did: {jobs}"


def test_a_sweep_stopped_by_a_task_kill_resumes_and_reruns_only_the_stopped_trials(tmp_path: Path) -> None:
    curves = [[1.0, 2.0], [2.0] * 60, [3.0, 4.0]]
    config = HyperDriveConfig(curve_config(tmp_path, curves, pause=0.1),
                              GridParameterSampling({"--curve": choice(0, 1, 2)}), "score", "maximize",
                              max_concurrent_runs=1)
    first = Experiment("killed").submit(config, run_key="dag/sweep/run-2")
    starts = tmp_path / "starts.jsonl"

    def curve_started(curve: int) -> int:
        lines = starts.read_text().splitlines() if starts.exists() else []
        return sum(1 for line in lines if json.loads(line).get("curve") == curve and "start" in json.loads(line))

    driver = first.driver
    wait_until(lambda: (driver.step() or True) and curve_started(1) == 1, timeout=60, message="trial 1 to run")
    stopped = first.abort("the sweep's task was killed")  # what the operator's on_kill does
    assert [run.id for run in stopped] == [driver.active[1].run.id]
    for run in stopped:  # what the detached finalizer does
        run.wait_for_completion(raise_on_error=False)
    client = MlflowClient()
    parent = client.get_run(first.id)
    assert parent.data.tags[Tags.STATE] == "Canceled" and parent.data.tags[Tags.SWEEP_STOPPED] == (
        "the sweep's task was killed")
    staged = [t for t in first.get_details()["trials"] if t["trial_index"] == 2]
    assert [t["status"] for t in staged] == ["Canceled"], "the trial staged ahead never started"

    again = Experiment("killed").submit(config, run_key="dag/sweep/run-2")  # the task's retry
    assert again.id == first.id
    details = again.wait_for_completion()
    assert [curve_started(c) for c in range(3)] == [1, 2, 1], "trial 0 kept; the stopped trial 1 ran again"
    assert [t["status"] for t in details["trials"]] == ["Completed"] * 3
    assert client.get_run(again.id).info.status == "FINISHED"
    assert Tags.SWEEP_STOPPED not in client.get_run(again.id).data.tags


def test_resuming_a_sweep_with_other_settings_is_refused(tmp_path: Path) -> None:
    config = HyperDriveConfig(curve_config(tmp_path, [[1.0], [2.0]], pause=0.0),
                              GridParameterSampling({"--curve": choice(0, 1)}), "score", "maximize")
    Experiment("changed").submit(config, run_key="dag/sweep/run-3").wait_for_completion()
    changed = HyperDriveConfig(config.run_config, GridParameterSampling({"--curve": choice(0, 1)}), "score",
                               "maximize", policy=BanditPolicy(slack_amount=0.1))
    with pytest.raises(ConfigurationError, match=r"HyperDriveConfig\.policy: differs from the sweep .* with the "
                                                  r"same run key"):
        Experiment("changed").submit(changed, run_key="dag/sweep/run-3")


def test_the_policy_applies_to_a_script_that_logs_with_mlflow_directly(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_script(source, """
        import argparse, json, os, time
        import mlflow
        parser = argparse.ArgumentParser()
        parser.add_argument("--curve", type=int)
        curve = json.loads(os.environ["CURVES"])[parser.parse_args().curve]
        for step, value in enumerate(curve):
            mlflow.log_metric("score", value, step=step)
            time.sleep(0.5)
    """)
    curves = [[0.5, 0.6, 0.7, 0.8, 0.8, 0.8], [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]
    config = HyperDriveConfig(ScriptRunConfig(source, "train.py", environment_variables={"CURVES": json.dumps(curves)}),
                              GridParameterSampling({"--curve": choice(0, 1)}), "score", "maximize",
                              max_concurrent_runs=1, policy=BanditPolicy(slack_amount=0.2, delay_evaluation=2))
    details = Experiment("direct").submit(config).wait_for_completion()
    assert [t["status"] for t in details["trials"]] == ["Completed", "Canceled"]
    error = MlflowClient().get_run(details["trials"][1]["run_id"]).data.tags[Tags.ERROR]
    assert error.startswith("terminated early by BanditPolicy at interval 2:"), error


def test_bayesian_sampling_cannot_be_planned_for_mapped_tasks_and_leaves_no_parent(tmp_path: Path) -> None:
    from airflow_provider.core.hyperdrive import plan_sweep

    experiment = Experiment("plan-bayesian")
    with pytest.raises(ConfigurationError, match=r"hyperparameter_sampling: BayesianParameterSampling picks each "
                                                  r"trial from the results of earlier ones"):
        plan_sweep(experiment, BayesianParameterSampling({"--x": uniform(0, 1)}), "score", "maximize",
                   max_total_runs=4)
    assert MlflowClient().search_runs([experiment.id]) == [], "no parent run was created"


def test_a_resumed_sweep_reattaches_a_trial_launched_just_before_its_driver_died(tmp_path: Path) -> None:
    curves = [[1.0] * 12, [1.5] * 12, [2.0] * 12, [3.0, 3.0]]
    config = HyperDriveConfig(curve_config(tmp_path, curves, pause=0.1),
                              GridParameterSampling({"--curve": choice(0, 1, 2, 3)}), "score", "maximize",
                              max_concurrent_runs=2)
    first = Experiment("launch-window").submit(config, run_key="dag/sweep/run-4")
    staged = list(first.driver._staged)  # trials 2 and 3, staged ahead while trials 0 and 1 run
    assert [p.index for p in staged] == [2, 3]
    trial_2, trial_3 = staged[0].staged, staged[1].staged
    assert isinstance(trial_2, StagedRun) and isinstance(trial_3, StagedRun)
    trial_2.target.launch(trial_2.handle, trial_2.spec)  # the driver dies before it records this launch
    starts = tmp_path / "starts.jsonl"

    def started(curve: int) -> int:
        lines = starts.read_text().splitlines() if starts.exists() else []
        return sum(1 for line in lines if json.loads(line).get("curve") == curve and "start" in json.loads(line))

    wait_until(lambda: started(2) == 1, timeout=30, message="trial 2's job to start")
    again = Experiment("launch-window").submit(config, run_key="dag/sweep/run-4")
    details = again.wait_for_completion()
    assert [started(c) for c in range(4)] == [1, 1, 1, 1], "trials 0-2 were reattached, none ran twice"
    assert [t["status"] for t in details["trials"]] == ["Completed"] * 4
    assert details["trials"][2]["run_id"] == trial_2.id
    assert len(MlflowClient().get_metric_history(trial_2.id, "score")) == 12
    assert details["trials"][3]["run_id"] != trial_3.id, "trial 3 never started: it was staged afresh"
    never_started = MlflowClient().get_run(trial_3.id).data.tags
    assert never_started[Tags.ERROR] == "never started: the sweep's driver stopped first"
    assert never_started[Tags.STATE] == "Canceled"


def test_the_policy_is_consulted_when_its_metric_arrives_not_for_every_event(tmp_path: Path) -> None:
    from airflow_provider.core.watcher import RunWatcher

    write_script(tmp_path / "src", """
        import time
        from airflow_provider.core import Run
        run = Run.get_context()
        for i in range(30):
            run.log("loss", 1.0 / (i + 1))
            if i in (10, 20):
                run.log("score", i)
            time.sleep(0.1)
    """)
    run = Experiment("monitor-cadence").submit(ScriptRunConfig(tmp_path / "src", "train.py"))

    class CountingPolicy:  # the RunMonitor protocol: what a sweep's TrialMonitor offers the watcher
        metric = "score"
        checks = 0

        def check(self) -> str | None:
            CountingPolicy.checks += 1
            return None

    assert run.target is not None and run.handle is not None
    watcher = RunWatcher(run.tracker, run.target, run.handle, run.id, monitor=CountingPolicy())
    steps = 0
    while True:
        status = watcher.step()
        steps += 1
        if status.state != "running":
            break
        time.sleep(0.01)
    watcher.finalize(status)
    assert steps > 20, "the watcher stepped while many loss events arrived"
    assert 1 <= CountingPolicy.checks <= 2, f"consulted {CountingPolicy.checks} times in {steps} steps"


# ---------------------------------------------------------------------- issue 12: no sweep left Running
class _BrokenSampler(TrialSampler):
    """Draws what its inner sampler draws, except for trial ``fail_at``: there it raises (a sampler bug)."""

    def __init__(self, inner: TrialSampler, fail_at: int) -> None:
        self.inner = inner
        self.fail_at = fail_at

    def suggest(self, index: int) -> dict[str, Any] | None:
        if index == self.fail_at:
            raise ZeroDivisionError(f"sampler bug at trial {index}")
        return self.inner.suggest(index)


class _BrokenGridSampling(GridParameterSampling):
    def __init__(self, parameter_space: dict[str, Any], fail_at: int) -> None:
        super().__init__(parameter_space)
        self.fail_at = fail_at

    def sampler(self, seed: int, goal: PrimaryMetricGoal) -> TrialSampler:
        return _BrokenSampler(super().sampler(seed, goal), self.fail_at)


def _parents() -> list[Any]:
    experiment = MlflowClient().get_experiment_by_name("broken")
    if experiment is None:
        return []
    return MlflowClient().search_runs([experiment.experiment_id], filter_string="tags.`training.sweep.role` = 'sweep'")


def _broken_sweep(tmp_path: Path, fail_at: int) -> HyperDriveConfig:
    curves = [[0.1, 0.2], [0.1] * 40, [0.3]]  # trial 1 runs for ~8 s: it is still running when the sweep fails
    return HyperDriveConfig(curve_config(tmp_path, curves, pause=0.2),
                            _BrokenGridSampling({"--curve": choice(0, 1, 2)}, fail_at), "score", "MAXIMIZE",
                            max_concurrent_runs=1)


def _assert_failed_parent(words: str) -> Any:
    parents = _parents()
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FAILED" and parent.data.tags[Tags.STATE] == "Failed", parent.data.tags
    assert words in parent.data.tags[Tags.ERROR]
    return parent


@pytest.mark.parametrize("fail_at", [0, 1])
def test_a_sampler_error_while_the_sweep_starts_ends_the_parent_failed(tmp_path: Path, fail_at: int) -> None:
    with pytest.raises(ConfigurationError, match=f"trial {fail_at} failed: ZeroDivisionError") as caught:
        Experiment("broken").submit(_broken_sweep(tmp_path, fail_at))
    assert caught.value.field == "_BrokenGridSampling.parameter_space"
    parent = _assert_failed_parent(f"sampler bug at trial {fail_at}")
    trials = MlflowClient().search_runs([parent.info.experiment_id],
                                        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert [t.data.tags[Tags.STATE] for t in trials] == ["Canceled"] * fail_at, "trial 0 was stopped"


def test_a_sampler_error_in_the_middle_of_a_sweep_stops_its_trials_and_ends_the_parent_failed(tmp_path: Path) -> None:
    run = Experiment("broken").submit(_broken_sweep(tmp_path, fail_at=2))
    with pytest.raises(ConfigurationError, match="trial 2 failed"):
        run.wait_for_completion()
    _assert_failed_parent("sampler bug at trial 2")
    states = {trial["trial_index"]: trial["status"] for trial in run.get_details()["trials"]}
    assert states == {0: "Completed", 1: "Canceled"}


def test_an_overflowing_expression_is_refused_before_the_parent_run_exists(tmp_path: Path) -> None:
    sampling = RandomParameterSampling({"--curve": choice(0), "--lr": uniform(0, 1)}, seed=3)
    sampling.parameter_space["--lr"] = Quantized("loguniform", 0.0, 1000.0)  # changed after it was made
    config = HyperDriveConfig(curve_config(tmp_path, [[0.1]]), sampling, "score", "MAXIMIZE", max_total_runs=4)
    with pytest.raises(ConfigurationError) as caught:
        Experiment("broken").submit(config)
    assert caught.value.field == "RandomParameterSampling.parameter_space['--lr']"
    assert "exp(1000)" in caught.value.problem and "natural-log bounds" in caught.value.problem
    assert _parents() == []


def test_a_sampler_error_while_planning_a_mapped_sweep_ends_the_parent_failed(tmp_path: Path) -> None:
    from airflow_provider.core.hyperdrive import plan_sweep

    with pytest.raises(ConfigurationError, match="trial 1 failed: ZeroDivisionError"):
        plan_sweep(Experiment("broken"), _BrokenGridSampling({"--curve": choice(0, 1, 2)}, 1), "score", "maximize")
    _assert_failed_parent("sampler bug at trial 1")
