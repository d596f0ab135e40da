"""The example DAGs, run end to end through ``dag.test()``; assertions on what landed in MLflow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core.tracking import Tags, resolve_tracking_uri


@pytest.fixture
def client(isolated_state: Path) -> MlflowClient:
    return MlflowClient(resolve_tracking_uri())


def test_train_local(run_dag: Callable[..., dict[str, Any]], client: MlflowClient) -> None:
    outcome = run_dag("train_local")
    assert outcome["state"] == "success", outcome["output"][-3000:]
    result = outcome["xcom"]["train"]
    assert set(result) == {"run_id", "experiment_id", "status", "metrics", "artifact_uri", "tracking_url", "outputs"}
    assert result["outputs"] == {}
    assert result["status"] == "Completed" and result["tracking_url"] is None
    assert "[run] epoch 29: loss=" in outcome["output"], "the script's output streams into the task log"
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["airflow.dag_id"] == "train_local"
    assert run.data.tags[Tags.RUN_KEY].startswith("train_local/train/")
    assert run.data.tags["model_type"] == "logistic_regression"
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "loss")]
    assert len(losses) == 30 and losses[-1] < losses[0]
    assert result["metrics"]["accuracy"] > 0.8
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "outputs")}
    assert artifacts == {"outputs/metrics.json", "outputs/model.npz"}


def test_scheduled_retraining_promotes_only_a_better_challenger(
    run_dag: Callable[..., dict[str, Any]], client: MlflowClient
) -> None:
    first = run_dag("scheduled_retraining", logical_date="2026-03-01T00:00:00+00:00")
    assert first["state"] == "success", first["output"][-3000:]
    decision = first["xcom"]["promote_if_better"]
    assert decision["promoted"] is True and decision["challenger_version"] == "1"
    champion = client.get_model_version_by_alias("churn-classifier", "champion")
    assert str(champion.version) == "1"

    second = run_dag("scheduled_retraining", logical_date="2026-03-02T00:00:00+00:00")
    assert second["state"] == "success", second["output"][-3000:]
    decision = second["xcom"]["promote_if_better"]
    assert decision["challenger_version"] == "2"
    champion_now = client.get_model_version_by_alias("churn-classifier", "champion")
    scores = {v: float(client.get_run(client.get_model_version("churn-classifier", v).run_id).data.metrics["accuracy"])
              for v in ("1", "2")}
    best = max(scores, key=lambda v: (scores[v], v == "1"))  # a tie keeps the old champion
    assert str(champion_now.version) == best
    assert decision["promoted"] is (best == "2")
    run = client.get_run(second["xcom"]["train_challenger"]["run_id"])
    assert run.data.tags["retraining.decision"] == ("promoted" if best == "2" else "kept champion")


DEFERRABLE_DAG = '''
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider.operators import SubmitTrainingRunOperator

with DAG("deferrable_dag_test", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SubmitTrainingRunOperator(task_id="train", source_directory={source!r}, script="train.py",
                              deferrable=True, defer_after_seconds=0, poll_interval=0.5,
                              experiment_name="deferrable")
'''


def test_deferrable_mode_end_to_end_in_dag_test(run_dag: Callable[..., dict[str, Any]], client: MlflowClient,
                                                tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text(
        "import time\nfrom airflow_provider.core import Run\nrun = Run.get_context()\n"
        "for i in range(20):\n    run.log('step_metric', i)\n    print('line', i, flush=True)\n    time.sleep(0.1)\n"
    )
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "deferrable.py").write_text(DEFERRABLE_DAG.format(source=str(source)))
    outcome = run_dag("deferrable_dag_test", dags_folder=dags)
    assert outcome["state"] == "success", outcome["output"][-3000:]
    assert "running trigger in line" in outcome["output"], "the task did not defer"
    result = outcome["xcom"]["train"]
    assert result["status"] == "Completed"
    history = client.get_metric_history(result["run_id"], "step_metric")
    assert sorted(m.value for m in history) == [float(i) for i in range(20)]
    printed = [line for line in outcome["output"].splitlines() if "[run] line " in line]
    assert len(printed) == 20, "every output line is shown exactly once across trigger and worker"


FROM_YAML_DAG = '''
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider.operators import SubmitTrainingRunOperator

with DAG("from_yaml", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SubmitTrainingRunOperator.from_yaml("train", {job!r}, overrides={{"inputs.epochs": 4}}, retries=0)
'''


def test_a_task_from_a_job_yaml_file(run_dag: Callable[..., dict[str, Any]], client: MlflowClient,
                                      tmp_path: Path) -> None:
    """``SubmitTrainingRunOperator.from_yaml``: the job file ``training-runs submit`` takes, as a task."""
    jobs = tmp_path / "jobs"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "jobs", jobs)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "from_yaml.py").write_text(FROM_YAML_DAG.format(job=str(jobs / "train.yml")))
    outcome = run_dag("from_yaml", dags_folder=dags)
    assert outcome["state"] == "success", outcome["output"][-3000:]
    result = outcome["xcom"]["train"]
    run = client.get_run(result["run_id"])
    assert result["status"] == "Completed" and run.info.run_name is not None
    assert run.data.tags["example"] == "job-yaml" and run.data.tags["model"] == "linear"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 4
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "job-yaml-examples"

    (jobs / "broken.yml").write_text("code: src\ncommand: python train.py\nlimits:\n  timeout: soon\n")
    (dags / "from_yaml.py").write_text(FROM_YAML_DAG.format(job=str(jobs / "broken.yml")).replace(
        '"from_yaml"', '"from_yaml_broken"'))
    broken = subprocess.run([sys.executable, "-c", (dags / "from_yaml.py").read_text()], capture_output=True,
                            text=True, timeout=120)
    assert broken.returncode != 0 and "broken.yml:4" in broken.stderr and "limits.timeout" in broken.stderr


SERVER_DAG = '''
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider.operators import SubmitTrainingRunOperator

from airflow_provider.core.hyperdrive import GridParameterSampling, choice
from airflow_provider.operators import HyperparameterSweepOperator

with DAG("tracked_on_server", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SubmitTrainingRunOperator(task_id="train", source_directory={source!r}, script="train.py",
                              tracking_conn_id="mlflow_live", experiment_name="on-server")
    HyperparameterSweepOperator(task_id="sweep", source_directory={source!r}, script="train.py",
                                tracking_conn_id="mlflow_live", experiment_name="on-server-sweep",
                                hyperparameter_sampling=GridParameterSampling({{"--lr": choice(0.1, 0.2)}}),
                                primary_metric_name="score", primary_metric_goal="MAXIMIZE", max_concurrent_runs=2)
'''


def test_operator_with_an_mlflow_connection_links_to_the_server(
    run_dag: Callable[..., dict[str, Any]], mlflow_server: str, tmp_path: Path
) -> None:
    import json

    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("from airflow_provider.core import Run\nRun.get_context().log('score', 0.75)\n")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "server.py").write_text(SERVER_DAG.format(source=str(source)))
    connection = json.dumps({"conn_type": "mlflow", "host": mlflow_server})
    outcome = run_dag("tracked_on_server", dags_folder=dags, extra_env={"AIRFLOW_CONN_MLFLOW_LIVE": connection})
    assert outcome["state"] == "success", outcome["output"][-3000:]
    result = outcome["xcom"]["train"]
    client = MlflowClient(mlflow_server)
    assert client.get_run(result["run_id"]).data.metrics["score"] == 0.75
    assert result["tracking_url"] == f"{mlflow_server}/#/experiments/{result['experiment_id']}/runs/{result['run_id']}"
    assert f"MLflow run: {result['tracking_url']}" in outcome["output"]
    links = outcome["xcom_links"]["train"]
    assert links == {"_link_MLflowRunLink": result["tracking_url"]}

    sweep = outcome["xcom"]["sweep"]
    experiment_id = client.get_run(sweep["parent_run_id"]).info.experiment_id
    sweep_url = f"{mlflow_server}/#/experiments/{experiment_id}/runs/{sweep['parent_run_id']}"
    assert outcome["xcom_links"]["sweep"] == {"_link_MLflowRunLink": sweep_url}, "the sweep task links its parent"
    assert f"MLflow sweep run: {sweep_url}" in outcome["output"]
    assert "seed" not in client.get_run(sweep["parent_run_id"]).data.params, "a grid samples nothing"
    assert "Downloading artifacts" not in outcome["output"], "MLflow's progress bars stay out of task logs"
    assert "View run" not in outcome["output"], "and its 'View run' lines"


def test_train_docker(run_dag: Callable[..., dict[str, Any]], client: MlflowClient) -> None:
    import json

    import docker

    from airflow_provider.core.targets.docker import DEFAULT_IMAGE
    from tests.conftest import skip_or_fail

    try:
        docker.from_env().images.get(DEFAULT_IMAGE)
    except Exception as exc:
        skip_or_fail(f"no Docker engine or base image (run scripts/components.sh): {exc}")
    connection = json.dumps({"conn_type": "training_docker", "host": "unix:///var/run/docker.sock",
                             "extra": {"image": DEFAULT_IMAGE}})
    outcome = run_dag("train_docker", extra_env={"AIRFLOW_CONN_TRAINING_DOCKER_DEFAULT": connection})
    assert outcome["state"] == "success", outcome["output"][-3000:]
    result = outcome["xcom"]["train"]
    run = client.get_run(result["run_id"])
    assert run.data.tags["training.target"] == "docker (unix:///var/run/docker.sock)"
    assert len(client.get_metric_history(result["run_id"], "accuracy")) == 20
    assert [a.path for a in client.list_artifacts(result["run_id"], "outputs")] == ["outputs/weights.json"]
    assert "[run] epoch 19: accuracy=" in outcome["output"]
    assert not docker.from_env().containers.list(all=True, filters={"label": "training.managed=true"})


def test_train_ssh(run_dag: Callable[..., dict[str, Any]], client: MlflowClient) -> None:
    import json
    import socket

    from tests.conftest import skip_or_fail
    from tests.ssh_hosts import container_host

    host = container_host()
    if host is None:
        skip_or_fail("no SSH host container (run scripts/components.sh as root)")
    assert host is not None
    connection = json.dumps({"conn_type": "training_ssh", "host": host.host, "port": host.port,
                             "login": host.username,
                             "extra": {"key_file": str(host.key_path), "host_key": host.host_public_key}})
    outcome = run_dag("train_ssh", extra_env={"AIRFLOW_CONN_TRAINING_SSH_DEFAULT": connection})
    assert outcome["state"] == "success", outcome["output"][-3000:]
    result = outcome["xcom"]["train"]
    run = client.get_run(result["run_id"])
    assert run.data.tags["training.target"] == f"ssh (root@{host.host}:{host.port})"
    assert len(client.get_metric_history(result["run_id"], "accuracy")) == 20
    assert [a.path for a in client.list_artifacts(result["run_id"], "outputs")] == ["outputs/weights.json"]
    assert "[run] epoch 19: accuracy=" in outcome["output"]
    assert socket.gethostname() not in run.data.tags.get("training.target", "")


def test_train_mpi(run_dag: Callable[..., dict[str, Any]], client: MlflowClient) -> None:
    import shutil

    from tests.conftest import skip_or_fail

    if shutil.which("mpirun") is None:
        skip_or_fail("no mpirun (run scripts/components.sh as root)")
    outcome = run_dag("train_mpi")
    assert outcome["state"] == "success", outcome["output"][-3000:]
    run_id = outcome["xcom"]["train"]["run_id"]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["loss"] < 0.05
    assert {f"rank_{r}/shard_loss" for r in (1, 2, 3)} <= set(metrics)
    artifacts = {a.path for a in client.list_artifacts(run_id, "system_logs")}
    assert {f"system_logs/rank_{r}.log" for r in range(4)} <= artifacts
    assert "[run] 4 ranks: loss" in outcome["output"]


def test_train_slurm(run_dag: Callable[..., dict[str, Any]], client: MlflowClient) -> None:
    """The MPI example's script, unchanged, as one Slurm job of 2 nodes x 2 ranks, in an environment
    built on the cluster's shared root from wheels sent there (the nodes reach no package index)."""
    import json
    import uuid

    from tests.conftest import skip_or_fail
    from tests.ssh_hosts import SLURM_SHARED, slurm_login

    host = slurm_login()
    if host is None:
        skip_or_fail("no Slurm cluster (run scripts/components.sh as root)")
    assert host is not None
    root = f"tr-example-{uuid.uuid4().hex[:8]}"
    connection = json.dumps({"conn_type": "training_slurm", "host": host.host, "login": host.username,
                             "extra": {"key_file": str(host.key_path), "host_key": host.host_public_key,
                                       "work_root": f"/shared/{root}"}})
    try:
        outcome = run_dag("train_slurm", extra_env={"AIRFLOW_CONN_TRAINING_SLURM_DEFAULT": connection})
        assert outcome["state"] == "success", outcome["output"][-3000:]
        run_id = outcome["xcom"]["train"]["run_id"]
        run = client.get_run(run_id)
        assert run.data.tags["training.target"] == f"slurm (login node {host.host}:22)"
        assert run.data.metrics["loss"] < 0.05
        assert {f"rank_{r}/shard_loss" for r in (1, 2, 3)} <= set(run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run_id, "system_logs")}
        assert {f"system_logs/rank_{r}.log" for r in range(4)} <= artifacts
        assert [a.path for a in client.list_artifacts(run_id, "outputs")] == ["outputs/weights.json"]
        assert "[run] 4 ranks: loss" in outcome["output"]
    finally:
        shutil.rmtree(SLURM_SHARED / root, ignore_errors=True)


def test_train_pytorch_ddp(run_dag: Callable[..., dict[str, Any]], client: MlflowClient) -> None:
    from tests.conftest import skip_or_fail

    torch_python = Path("/var/lib/training-runs-components/torch-venv/bin/python")
    if not torch_python.exists():
        skip_or_fail("no torch venv (run scripts/components.sh as root)")
    outcome = run_dag("train_pytorch_ddp", extra_env={"TRAINING_RUNS_TORCH_PYTHON": str(torch_python)})
    assert outcome["state"] == "success", outcome["output"][-3000:]
    run_id = outcome["xcom"]["train"]["run_id"]
    history = [m.value for m in client.get_metric_history(run_id, "loss")]
    assert len(history) == 20 and history[-1] < history[0]
    assert len(client.get_metric_history(run_id, "rank_1/loss")) == 20
    assert [a.path for a in client.list_artifacts(run_id, "outputs")] == ["outputs/weights.json"]
    assert "[run] 2 processes: loss" in outcome["output"]


def _children(client: MlflowClient, parent: Any) -> list[Any]:
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{Tags.PARENT_RUN_ID}` = '{parent.info.run_id}'")


def _best(client: MlflowClient, run_id: str, metric: str) -> float:
    return max(m.value for m in client.get_metric_history(run_id, metric))


def test_sweep_local_runs_every_trial_as_a_child_and_returns_the_best(
    run_dag: Callable[..., dict[str, Any]], client: MlflowClient
) -> None:
    outcome = run_dag("sweep_local")
    assert outcome["state"] == "success", outcome["output"][-3000:]
    result = outcome["xcom"]["sweep"]
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags[Tags.STATE] == "Completed"
    children = _children(client, parent)
    assert len(children) == result["trials"] == 6
    assert {c.data.tags[Tags.SWEEP_TRIAL_INDEX] for c in children} == {str(i) for i in range(6)}
    for child in children:
        # the sampled values, and the trial's other arguments (logged as params when it ended)
        assert set(child.data.params) == {"learning-rate", "samples", "epochs", "epoch-seconds"}
        assert child.data.params["epochs"] == "20" and child.data.params["epoch-seconds"] == "0.1"
        assert f"--learning-rate {child.data.params['learning-rate']}" in child.data.tags[Tags.COMMAND]
        assert child.data.tags[Tags.STATE] in ("Completed", "Canceled")
        if child.data.tags[Tags.STATE] == "Canceled":
            assert "BanditPolicy at interval" in child.data.tags[Tags.ERROR]
    scores = {c.info.run_id: _best(client, c.info.run_id, "accuracy") for c in children}
    best_id = max(scores, key=lambda run_id: scores[run_id])
    assert result["best_primary_metric"] == scores[best_id]
    assert parent.data.tags[Tags.SWEEP_BEST_RUN_ID] == result["best_run_id"]
    assert scores[result["best_run_id"]] == scores[best_id]
    assert parent.data.metrics["accuracy"] == scores[best_id]
    assert "[trial 0] epoch 0: loss=" in outcome["output"], "every trial's output streams into the task log"


def test_sweep_mapped_runs_one_task_per_trial_and_selects_the_best(
    run_dag: Callable[..., dict[str, Any]], client: MlflowClient
) -> None:
    outcome = run_dag("sweep_mapped")
    assert outcome["state"] == "success", outcome["output"][-3000:]
    best = outcome["xcom"]["best"]
    parent = client.get_run(best["parent_run_id"])
    assert parent.data.tags[Tags.STATE] == "Completed"
    children = {int(c.data.tags[Tags.SWEEP_TRIAL_INDEX]): c for c in _children(client, parent)}
    assert sorted(children) == list(range(6)), "a 3 x 2 grid: every combination once"
    grid = [(lr, epochs) for lr in ("0.001", "0.05", "0.5") for epochs in ("10", "25")]
    for index, child in children.items():
        assert (child.data.params["learning-rate"], child.data.params["epochs"]) == grid[index]
        assert f"--epochs {grid[index][1]}" in child.data.tags[Tags.COMMAND], "the grid's epochs override 20"
        assert child.data.tags[Tags.RUN_KEY].endswith(f"/{index}"), "map index i runs trial i"
        if child.data.tags[Tags.STATE] == "Canceled":
            assert "MedianStoppingPolicy at interval" in child.data.tags[Tags.SWEEP_TERMINATED]
        else:
            assert child.data.tags[Tags.STATE] == "Completed"
    completed = {i: _best(client, c.info.run_id, "accuracy") for i, c in children.items()}
    best_index = max(completed, key=lambda i: (completed[i], -i))
    assert best["best_run"]["trial_index"] == best_index
    assert parent.data.tags[Tags.SWEEP_BEST_RUN_ID] == children[best_index].info.run_id
    for index, child in children.items():
        assert child.info.run_name == f"{parent.info.run_name}_{index}", "named as a sweep's own trials are"
    labels = outcome["rendered_map_index"]["trial"]
    assert labels["2"] == "trial 2: learning-rate=0.05, epochs=10", labels
    assert len(set(labels.values())) == 6, "each trial's values in the grid"


MAPPED_SWEEP_DAG = '''
import json
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider.core.hyperdrive import BanditPolicy, GridParameterSampling, choice
from airflow_provider.operators import (
    PlanHyperparameterSweepOperator, SelectBestTrialOperator, SubmitTrainingRunOperator)

CURVES = {curves!r}
with DAG("mapped_sweep_test", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    plan = PlanHyperparameterSweepOperator(
        task_id="plan", experiment_name="mapped-sweep", primary_metric_name="score", primary_metric_goal="MAXIMIZE",
        hyperparameter_sampling=GridParameterSampling({{"--curve": choice(*range(len(CURVES)))}}),
        policy=BanditPolicy(slack_amount=0.2, delay_evaluation=2))
    trials = SubmitTrainingRunOperator.partial(
        task_id="trial", source_directory={source!r}, script="train.py", arguments=["--curve", 0],
        environment_variables={{"CURVES": json.dumps(CURVES)}}, poll_interval=0.1,
    ).expand(sweep_trial=plan.output)
    trials >> SelectBestTrialOperator(task_id="best", sweep_trials=plan.output)
'''
MAPPED_CURVES = [[0.5, 0.6, 0.7, 0.8, 0.8, 0.8], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.5, 0.6, 0.75, 0.85, 0.9, 0.9],
                 [0.05, 0.05, 0.05, 0.05, 0.05, 0.05]]


def test_mapped_trials_apply_the_policy_from_their_siblings_in_mlflow_and_a_stopped_trial_is_skipped(
    run_dag: Callable[..., dict[str, Any]], client: MlflowClient, tmp_path: Path
) -> None:
    from airflow_provider.core.hyperdrive import BanditPolicy, PrimaryMetricGoal

    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text(
        "import argparse, json, os, time\nfrom airflow_provider.core import Run\n"
        "parser = argparse.ArgumentParser()\nparser.add_argument('--curve', type=int)\n"
        "curve = json.loads(os.environ['CURVES'])[parser.parse_args().curve]\nrun = Run.get_context()\n"
        "for value in curve:\n    run.log('score', value)\n    time.sleep(0.5)\n")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "mapped_sweep_test.py").write_text(MAPPED_SWEEP_DAG.format(source=str(source), curves=MAPPED_CURVES))
    outcome = run_dag("mapped_sweep_test", dags_folder=dags)
    assert outcome["state"] == "success", outcome["output"][-3000:]
    best = outcome["xcom"]["best"]
    runs = {t["trial_index"]: client.get_run(t["run_id"]) for t in best["trials"]}
    # dag.test() runs mapped tasks one at a time, in no set order: a trial's siblings are the
    # trials that ran before it, each with its whole curve. What the policy decides from those:
    order = sorted(runs, key=lambda i: runs[i].info.start_time)
    policy = BanditPolicy(slack_amount=0.2, delay_evaluation=2)
    expected: dict[int, tuple[int, str] | None] = {}
    for position, index in enumerate(order):
        earlier = [MAPPED_CURVES[i] for i in order[:position]]
        expected[index] = policy.first_stop(MAPPED_CURVES[index], earlier, PrimaryMetricGoal.MAXIMIZE)
    assert outcome["mapped"]["trial"] == {str(i): "skipped" if expected[i] else "success" for i in runs}, order
    for index, stop in expected.items():
        tags = runs[index].data.tags
        if stop is None:
            assert tags[Tags.STATE] == "Completed" and Tags.SWEEP_TERMINATED not in tags
            history = client.get_metric_history(runs[index].info.run_id, "score")
            assert [m.value for m in history] == MAPPED_CURVES[index]
        else:
            assert tags[Tags.STATE] == "Canceled", (index, order)
            assert tags[Tags.ERROR].startswith(f"terminated early by BanditPolicy at interval {stop[0]}:")
            assert len(client.get_metric_history(runs[index].info.run_id, "score")) < 6
    assert best["status"] == "Completed"
    completed = {i: max(MAPPED_CURVES[i]) for i in runs if expected[i] is None}
    assert best["best_run"]["trial_index"] == max(completed, key=lambda i: completed[i])
    parent = client.get_run(best["parent_run_id"])
    assert parent.data.tags[Tags.SWEEP_BEST_RUN_ID] == best["best_run"]["run_id"]
    assert parent.data.metrics["score"] == max(completed.values())


def test_retrain_on_new_data_trains_from_the_partitions_and_registers_the_output(
    run_dag: Callable[..., dict[str, Any]], client: MlflowClient, tmp_path: Path, airflow_home: Path
) -> None:
    """A partition lands (an asset event), the training run reads every partition as its input, writes
    its model to the output folder, and the next task registers that folder as a model version."""
    import json
    import sqlite3

    data, models = tmp_path / "churn", tmp_path / "models"
    env = {"TRAINING_EXAMPLE_DATA": str(data), "TRAINING_EXAMPLE_MODELS": str(models)}
    for day in ("2026-04-01", "2026-04-02"):
        prepared = run_dag("prepare_churn_data", logical_date=f"{day}T00:00:00+00:00", extra_env=env)
        assert prepared["state"] == "success", prepared["output"][-3000:]
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        events = db.execute("SELECT a.uri FROM asset_event e JOIN asset a ON a.id = e.asset_id").fetchall()
    assert [uri for (uri,) in events].count(f"file://{data}") == 2, events
    outcome = run_dag("retrain_on_new_data", extra_env=env)
    assert outcome["state"] == "success", outcome["output"][-3000:]
    result = outcome["xcom"]["train"]
    assert result["outputs"] == {"model": str(models / result["run_id"])}
    model = json.loads((models / result["run_id"] / "model.json").read_text())
    assert model["trained_on"] == ["2026-04-01.csv", "2026-04-02.csv"]
    run = client.get_run(result["run_id"])
    assert run.data.metrics["rows"] == 1000 and run.data.metrics["accuracy"] > 0.8
    (dataset_input,) = run.inputs.dataset_inputs
    assert json.loads(dataset_input.dataset.profile)["num_files"] == 2
    registered = outcome["xcom"]["register_model"]
    version = client.get_model_version("churn-from-data", registered["version"])
    assert version.source == str(models / result["run_id"]) and version.run_id == result["run_id"]
