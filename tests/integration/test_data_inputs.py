"""Data bound to runs on real servers and targets: inputs from local folders, an HTTP server, the SSH
hosts over SFTP and a real MLflow server (runs:/, models:/); outputs copied to their URI on success
and on failure; lineage in MLflow; a second run sends only the changed bytes to a remote host."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from airflow_provider.core import (
    ConfigurationError,
    Experiment,
    Input,
    MpiConfiguration,
    Output,
    RunFailedError,
    ScriptRunConfig,
)
from airflow_provider.core.data.outputs import MARKER
from airflow_provider.core.targets.ssh import SSHTarget
from airflow_provider.core.targets.ssh_connection import SSHSettings
from airflow_provider.core.tracking import WARNINGS_ARTIFACT
from tests.helpers import serve_folder, write_script
from tests.ssh_hosts import SSHHost

READER = """
    import hashlib, json, os, sys
    from airflow_provider.core import Run
    run = Run.get_context()
    source, out = sys.argv[1], sys.argv[2]
    found = {}
    if os.path.isfile(source):
        found[os.path.basename(source)] = hashlib.sha256(open(source, "rb").read()).hexdigest()
    else:
        for folder, _, names in os.walk(source):
            for name in names:
                path = os.path.join(folder, name)
                found[os.path.relpath(path, source)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert run.input_datasets["train"] == source, (run.input_datasets, source)
    assert run.output_datasets["model"] == out, (run.output_datasets, out)
    with open(os.path.join(out, "seen.json"), "w") as handle:
        json.dump(found, handle)
    run.log("files", len(found))
    if os.environ.get("FAIL_AFTER_WRITING"):
        sys.exit(3)
"""


@pytest.fixture(autouse=True)
def _mlflow_env(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)


def _data(folder: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def _sha(content: bytes) -> str:
    import hashlib

    return hashlib.sha256(content).hexdigest()


def _config(source: Path, train: Input, out_uri: str, **kwargs: Any) -> ScriptRunConfig:
    write_script(source, READER)
    return ScriptRunConfig(source_directory=source, script="train.py",
                           arguments=["${{inputs.train}}", "${{outputs.model}}"],
                           inputs={"train": train}, outputs={"model": Output(out_uri)}, **kwargs)


def _seen(out_root: Path, run_id: str) -> dict[str, str]:
    return dict(json.loads((out_root / run_id / "seen.json").read_text()))


def test_local_folder_in_output_out_lineage_recorded(tmp_path: Path) -> None:
    """A local folder arrives whole, the output lands at its URI with a marker, and MLflow records the
    input's source, digest, size and file count, and the output's URI and digest."""
    files = {"a.csv": b"1,2\n", "sub/b.csv": b"3,4\n" * 100}
    data = _data(tmp_path / "data", files)
    out = tmp_path / "models"
    run = Experiment("data").submit(_config(tmp_path / "src", Input(str(data)), f"{out}/{{run_id}}/"))
    run.wait_for_completion()
    assert _seen(out, run.id) == {name: _sha(content) for name, content in files.items()}
    marker = json.loads((out / run.id / MARKER).read_text())
    assert marker["run_id"] == run.id and [f[0] for f in marker["files"]] == ["seen.json"]
    recorded = MlflowClient().get_run(run.id)
    (dataset_input,) = recorded.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == "train" and json.loads(dataset.source) == {"uri": str(data)}
    assert json.loads(dataset.profile) == {"mode": "download", "num_files": 2, "total_bytes": 404}
    assert len(dataset.digest) == 32
    assert recorded.data.tags["training.data.output.model.uri"] == f"{out}/{run.id}"  # absolute, normalized
    assert recorded.data.tags["training.data.output.model.digest"] == marker["digest"]
    manifest = json.loads(Path(MlflowClient().download_artifacts(run.id, "data/outputs/model.json",
                                                                 str(tmp_path / "dl"))).read_text())
    assert manifest["digest"] == marker["digest"]


def test_output_copied_when_the_run_fails_and_digest_changes_with_content(tmp_path: Path) -> None:
    """A failing run's output is copied all the same; a changed input changes the recorded digest."""
    data = _data(tmp_path / "data", {"x.txt": b"first"})
    out = tmp_path / "models"
    config = _config(tmp_path / "src", Input(str(data)), f"{out}/{{run_id}}/",
                     environment_variables={"FAIL_AFTER_WRITING": "1"})
    run = Experiment("data").submit(config)
    with pytest.raises(RunFailedError):
        run.wait_for_completion()
    assert _seen(out, run.id) == {"x.txt": _sha(b"first")}
    (data / "x.txt").write_bytes(b"second")
    second = Experiment("data").submit(config)
    with pytest.raises(RunFailedError):
        second.wait_for_completion()
    digests = [MlflowClient().get_run(r.id).inputs.dataset_inputs[0].dataset.digest for r in (run, second)]
    assert digests[0] != digests[1]
    assert _seen(out, second.id) == {"x.txt": _sha(b"second")}


def test_an_output_holding_another_runs_data_is_refused_before_the_job(tmp_path: Path) -> None:
    """A fixed output URI already written by another run is refused (naming the output and the fix)
    before the job starts; overwrite=True replaces it."""
    data = _data(tmp_path / "data", {"x.txt": b"x"})
    out = tmp_path / "fixed"
    experiment = Experiment("data")
    first = experiment.submit(_config(tmp_path / "src", Input(str(data)), str(out)))
    first.wait_for_completion()
    with pytest.raises(ConfigurationError, match=r"outputs\['model'\].*already holds data written by run"):
        experiment.submit(_config(tmp_path / "src", Input(str(data)), str(out)))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "someone.txt").write_text("not a run")
    with pytest.raises(ConfigurationError, match="something other than a training run"):
        experiment.submit(_config(tmp_path / "src", Input(str(data)), str(tmp_path / "other")))
    config = _config(tmp_path / "src", Input(str(data)), str(out))
    config.outputs = {"model": Output(str(out), overwrite=True)}
    third = experiment.submit(config)
    third.wait_for_completion()
    assert json.loads((out / MARKER).read_text())["run_id"] == third.id


def test_http_folder_and_file_inputs_and_unchanged_files_not_read_again(tmp_path: Path) -> None:
    """A folder served over HTTP (listed through its index page) and a single file arrive; a second
    run reads from the server only the file that changed (Last-Modified / size)."""
    served = _data(tmp_path / "www" / "set", {"a.txt": b"alpha", "b.txt": b"beta"})
    out = tmp_path / "models"
    with serve_folder(tmp_path / "www") as url:
        run = Experiment("data").submit(_config(tmp_path / "src", Input(f"{url}/set/"), f"{out}/{{run_id}}/"))
        run.wait_for_completion()
        assert _seen(out, run.id) == {"a.txt": _sha(b"alpha"), "b.txt": _sha(b"beta")}
        single = Experiment("data").submit(_config(tmp_path / "src", Input(f"{url}/set/a.txt"), f"{out}/{{run_id}}/"))
        single.wait_for_completion()
        assert _seen(out, single.id) == {"a.txt": _sha(b"alpha")}
        os.utime(served / "b.txt", (1_700_000_000, 1_700_000_000))
        (served / "b.txt").write_bytes(b"beta, changed")
        again = Experiment("data").submit(_config(tmp_path / "src", Input(f"{url}/set/"), f"{out}/{{run_id}}/"))
        again.wait_for_completion()
        assert MlflowClient().get_run(again.id).data.tags["training.data.input.train.bytes_read"] == "13"
        assert _seen(out, again.id)["b.txt"] == _sha(b"beta, changed")
    with pytest.raises(ConfigurationError, match=r"inputs\['train'\].*does not exist"), \
            serve_folder(tmp_path / "www") as url:
        Experiment("data").submit(_config(tmp_path / "src", Input(f"{url}/missing.txt"), f"{out}/{{run_id}}/"))


def _sftp_options(host: SSHHost) -> dict[str, Any]:
    return {"username": host.username, "key_file": str(host.key_path), "host_key": host.host_public_key}


def test_sftp_input_and_output_on_an_ssh_host(ssh_container: SSHHost, tmp_path: Path) -> None:
    """Data on the SSH host is read over SFTP with its pinned host key, and the output is written back
    there; an unknown host key is refused before any compute is used."""
    import paramiko

    folder = f"/tmp/data-{uuid.uuid4().hex[:8]}"
    key = paramiko.Ed25519Key.from_private_key_file(str(ssh_container.key_path))
    client = paramiko.SSHClient()
    client.get_host_keys().add(ssh_container.host, ssh_container.host_public_key.split()[0],
                               paramiko.PKey.from_type_string(ssh_container.host_public_key.split()[0],
                                                              __import__("base64").b64decode(
                                                                  ssh_container.host_public_key.split()[1])))
    client.connect(ssh_container.host, ssh_container.port, username=ssh_container.username, pkey=key)
    try:
        sftp = client.open_sftp()
        sftp.mkdir(folder)
        with sftp.open(f"{folder}/rows.csv", "wb") as handle:
            handle.write(b"remote rows")
        options = _sftp_options(ssh_container)
        base = f"sftp://{ssh_container.host}:{ssh_container.port}"
        config = _config(tmp_path / "src", Input(f"{base}{folder}/", storage_options=options), "/unused")
        config.outputs = {"model": Output(f"{base}{folder}/out/{{run_id}}/", storage_options=options)}
        run = Experiment("data").submit(config)
        run.wait_for_completion()
        with sftp.open(f"{folder}/out/{run.id}/seen.json") as handle:
            assert json.loads(handle.read()) == {"rows.csv": _sha(b"remote rows")}
        unpinned = {k: v for k, v in options.items() if k != "host_key"} | {"known_hosts": str(tmp_path / "none")}
        (tmp_path / "none").write_text("")
        with pytest.raises(ConfigurationError, match=r"host key of .* is unknown"):
            Experiment("data").submit(_config(tmp_path / "src", Input(f"{base}{folder}/", storage_options=unpinned),
                                              str(tmp_path / "o" / "{run_id}")))
    finally:
        client.exec_command(f"rm -rf {folder}")[1].channel.recv_exit_status()
        client.close()


def test_runs_and_models_inputs_from_a_real_mlflow_server(mlflow_server: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A DAG chains runs: runs:/<id>/<path> and models:/<name>@<alias> of an earlier run are inputs, read
    from the tracking server (models:/ resolved to its version's artifacts, recorded in the lineage)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(f"producer-{uuid.uuid4().hex[:8]}")
    producer = client.create_run(experiment_id)
    prepared = _data(tmp_path / "prepared", {"train.csv": b"a,b\n1,2\n", "meta/info.txt": b"v1"})
    client.log_artifacts(producer.info.run_id, str(prepared), "prepared")
    client.set_terminated(producer.info.run_id)
    name = f"clf-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{producer.info.run_id}/prepared", producer.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    out = tmp_path / "models"
    run = Experiment("consumer", tracking_uri=mlflow_server).submit(
        _config(tmp_path / "src", Input(f"runs:/{producer.info.run_id}/prepared"), f"{out}/{{run_id}}/"))
    run.wait_for_completion()
    expected = {"train.csv": _sha(b"a,b\n1,2\n"), "meta/info.txt": _sha(b"v1")}
    assert _seen(out, run.id) == expected
    by_model = Experiment("consumer", tracking_uri=mlflow_server).submit(
        _config(tmp_path / "src", Input(f"models:/{name}@champion"), f"{out}/{{run_id}}/"))
    by_model.wait_for_completion()
    assert _seen(out, by_model.id) == expected
    (recorded,) = client.get_run(by_model.id).inputs.dataset_inputs
    tags = {tag.key: tag.value for tag in recorded.tags}
    assert tags["source"] == f"models:/{name}@champion"
    resolved = tags["resolved_source"]
    assert producer.info.run_id in resolved and resolved.endswith("prepared"), resolved
    with pytest.raises(ConfigurationError, match="cannot be read from MLflow"):
        Experiment("consumer", tracking_uri=mlflow_server).submit(
            _config(tmp_path / "src", Input(f"models:/{name}@nope"), f"{out}/{{run_id}}/")).wait_for_completion()
    # MLflow's process-wide registry URI is exported to every later process: staging must not set it
    assert "MLFLOW_REGISTRY_URI" not in os.environ


def _ssh_target(host: SSHHost, root: str) -> SSHTarget:
    settings = SSHSettings(host.host, host.port, username=host.username, key_file=str(host.key_path),
                           host_key=host.host_public_key)
    return SSHTarget(settings, work_root=root)


def test_ssh_target_second_run_sends_only_the_changed_bytes(ssh_container: SSHHost, tmp_path: Path) -> None:
    """On an SSH host the input arrives; a second run with one of 20 files changed sends only that
    file's bytes (the host keeps the blobs), and outputs come back to this machine's URI."""
    files = {f"part-{i:02d}.bin": os.urandom(64 * 1024) for i in range(20)}
    data = _data(tmp_path / "data", files)
    out = tmp_path / "models"
    target = _ssh_target(ssh_container, f"/tmp/tr-data-{uuid.uuid4().hex[:8]}")
    config = _config(tmp_path / "src", Input(str(data)), f"{out}/{{run_id}}/", compute_target=target)
    first = Experiment("data").submit(config)
    first.wait_for_completion()
    sent_first = target.blob_bytes_sent
    assert sent_first >= 20 * 64 * 1024
    (data / "part-07.bin").write_bytes(os.urandom(64 * 1024))
    second = Experiment("data").submit(config)
    second.wait_for_completion()
    sent_second = target.blob_bytes_sent - sent_first
    assert 64 * 1024 <= sent_second < 2 * 64 * 1024, sent_second
    assert _seen(out, second.id)["part-07.bin"] == _sha((data / "part-07.bin").read_bytes())
    with pytest.raises(ConfigurationError, match=r"inputs\['train'\].mode.*cannot mount"):
        Experiment("data").submit(_config(tmp_path / "src", Input(str(data), mode="mount"), f"{out}/{{run_id}}/",
                                          compute_target=target))


def test_docker_target_download_and_read_only_mount(docker_target: Any, tmp_path: Path) -> None:
    """In a container the downloaded input arrives, and a mount input is the host folder bound
    read-only (the script cannot write into it)."""
    large = os.urandom(3 << 20)  # sent from its blob file while the job folder streams, never held whole
    data = _data(tmp_path / "data", {"d.txt": b"docker data", "big/weights.bin": large})
    out = tmp_path / "models"
    run = Experiment("data").submit(_config(tmp_path / "src", Input(str(data)), f"{out}/{{run_id}}/",
                                            compute_target=docker_target))
    run.wait_for_completion()
    assert _seen(out, run.id) == {"d.txt": _sha(b"docker data"), "big/weights.bin": _sha(large)}
    write_script(tmp_path / "mount_src", """
        import os, sys
        path = sys.argv[1]
        assert path == "/mnt/inputs/train", path
        print("READ", open(os.path.join(path, "d.txt")).read())
        try:
            open(os.path.join(path, "new.txt"), "w")
        except OSError as exc:
            print("READ-ONLY", exc.errno)
    """)
    mounted = Experiment("data").submit(ScriptRunConfig(
        tmp_path / "mount_src", "train.py", arguments=["${{inputs.train}}"], compute_target=docker_target,
        inputs={"train": Input(str(data), mode="mount")}))
    mounted.wait_for_completion()
    log = mounted.get_details()
    text = json.dumps(log)
    assert "READ docker data" in text or "READ docker data" in _driver_log(mounted.id, tmp_path)
    assert "READ-ONLY 30" in _driver_log(mounted.id, tmp_path)
    assert not (data / "new.txt").exists()


def test_docker_target_second_run_sends_only_the_changed_bytes(docker_target: Any, tmp_path: Path) -> None:
    """The daemon's input cache volume keeps the input files by content: a second run with one of 20
    files changed sends only that file; the script reads them through read-only links into the
    volume and cannot change what another run reads."""
    from airflow_provider.core.targets.docker import DockerTarget

    volume = f"training-runs-test-{uuid.uuid4().hex[:8]}"
    target = DockerTarget(input_cache_volume=volume)
    files = {f"part-{i:02d}.bin": os.urandom(64 * 1024) for i in range(20)}
    data = _data(tmp_path / "data", files)
    out = tmp_path / "models"
    write_script(tmp_path / "src", """
        import hashlib, json, os, sys
        source, out = sys.argv[1], sys.argv[2]
        found = {name: hashlib.sha256(open(os.path.join(source, name), "rb").read()).hexdigest()
                 for name in sorted(os.listdir(source))}
        cache = "/var/cache/training-runs/inputs"  # only this job's files: another run's data is not there
        found["cache"] = len(os.listdir(cache)) if os.path.isdir(cache) else -1
        try:
            open(os.path.join(source, "part-00.bin"), "ab").write(b"changed")
            found["written"] = "yes"
        except OSError as exc:
            found["written"] = "refused %d" % exc.errno
        json.dump(found, open(os.path.join(out, "seen.json"), "w"))
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py", arguments=["${{inputs.train}}", "${{outputs.model}}"],
                             inputs={"train": Input(str(data))}, outputs={"model": Output(f"{out}/{{run_id}}/")},
                             compute_target=target)
    try:
        first = Experiment("data").submit(config)
        first.wait_for_completion()
        seen = _seen(out, first.id)
        assert seen.pop("written") in ("refused 30", "refused 13")  # read-only file system / permission
        assert seen.pop("cache") == 20
        assert seen == {name: _sha(content) for name, content in files.items()}
        assert 20 * 64 * 1024 <= target.blob_bytes_sent < 21 * 64 * 1024
        sent_first = target.blob_bytes_sent
        (data / "part-07.bin").write_bytes(os.urandom(64 * 1024))
        second = Experiment("data").submit(config)
        second.wait_for_completion()
        assert target.blob_bytes_sent - sent_first == 64 * 1024
        assert _seen(out, second.id)["part-07.bin"] == _sha((data / "part-07.bin").read_bytes())
        assert _seen(out, second.id)["cache"] == 20
        uncached = DockerTarget(input_cache_volume=None)  # every job gets the whole input
        third = Experiment("data").submit(dataclasses.replace(config, compute_target=uncached))
        third.wait_for_completion()
        assert uncached.blob_bytes_sent == 20 * 64 * 1024
        assert _seen(out, third.id)["written"] == "yes"  # its own copy: writable, and nobody else reads it
        assert _seen(out, third.id)["cache"] == -1
        # a volume with options (tmpfs, NFS) has no folder while no container uses it: inputs go with the job
        tmpfs = DockerTarget(input_cache_volume=f"{volume}-tmpfs")
        target.client.volumes.create(f"{volume}-tmpfs", driver_opts={"type": "tmpfs", "device": "tmpfs"})
        fourth = Experiment("data").submit(dataclasses.replace(config, compute_target=tmpfs))
        fourth.wait_for_completion()
        assert tmpfs.blob_bytes_sent == 20 * 64 * 1024 and _seen(out, fourth.id)["written"] == "yes"
    finally:
        for name in (volume, f"{volume}-tmpfs"):
            with contextlib.suppress(Exception):
                target.client.volumes.get(name).remove(force=True)


def _driver_log(run_id: str, tmp_path: Path) -> str:
    folder = tmp_path / f"log-{run_id}"
    path = MlflowClient().download_artifacts(run_id, "system_logs/driver.log", str(folder))
    return Path(path).read_text()


def test_mpi_ranks_on_every_host_read_the_input(mpi_hosts: list[SSHHost], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Across MPI hosts every rank finds the downloaded input at the same path; a second run with one
    of its files changed sends each host only that file."""
    from airflow_provider.hooks.compute import compute_hook_for

    first = mpi_hosts[0]
    connection = {"conn_type": "training_mpi", "login": first.username, "port": first.port,
                  "extra": {"hosts": ",".join(f"{h.host}:2" for h in mpi_hosts[:2]), "key_file": str(first.key_path),
                            "host_key": first.host_public_key, "work_root": "/root/mpi-data-runs",
                            "mpirun_options": "--mca btl_tcp_if_include 172.28.0.0/24 "
                                              "--mca oob_tcp_if_include 172.28.0.0/24"}}
    monkeypatch.setenv("AIRFLOW_CONN_TEST_MPI_DATA", json.dumps(connection))
    target = compute_hook_for("test_mpi_data").get_target()
    data = _data(tmp_path / "data", {"shard.txt": b"every rank reads this",
                                     **{f"part-{i}.bin": os.urandom(64 * 1024) for i in range(8)}})
    write_script(tmp_path / "src", """
        import os, socket, sys
        from airflow_provider.core import Run
        rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
        text = open(os.path.join(sys.argv[1], "shard.txt")).read()
        assert text == "every rank reads this", text
        Run.get_context().log("read_ok", 1)
        print("rank", rank, "on", socket.gethostname(), "read", len(text))
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py", arguments=["${{inputs.train}}"], compute_target=target,
                             distributed_job_config=MpiConfiguration(process_count_per_node=1, node_count=2),
                             inputs={"train": Input(str(data))})
    run = Experiment("data").submit(config)
    run.wait_for_completion()
    metrics = MlflowClient().get_run(run.id).data.metrics
    assert metrics.get("read_ok") == 1 and metrics.get("rank_1/read_ok") == 1, metrics
    sent = [node.blob_bytes_sent for node in target.nodes[:2]]
    assert all(count >= 8 * 64 * 1024 for count in sent), sent
    (data / "part-3.bin").write_bytes(os.urandom(64 * 1024))
    second = Experiment("data").submit(config)
    second.wait_for_completion()
    again = [node.blob_bytes_sent - before for node, before in zip(target.nodes[:2], sent, strict=True)]
    assert all(64 * 1024 <= count < 2 * 64 * 1024 for count in again), again


@pytest.fixture
def bucket(s3_server: dict[str, str]) -> Any:
    """A fresh bucket on the S3 server, removed after the test; yields (filesystem, bucket name)."""
    import s3fs

    filesystem = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server)
    name = f"test-{uuid.uuid4().hex[:12]}"
    filesystem.mkdir(name)
    yield filesystem, name
    filesystem.rm(name, recursive=True)


def test_s3_input_and_output_through_an_airflow_connection(s3_server: dict[str, str], bucket: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """On a real S3 server (Ceph RGW) with the keys in an Airflow connection: the input prefix arrives,
    the output lands under the run's id, a second run reads only the changed object (by ETag), a
    wrong secret is refused naming the connection, and another run's output is not overwritten."""
    from airflow_provider.core.data.credentials import register_resolver
    from airflow_provider.hooks.data_connections import register_data_connections

    filesystem, name = bucket
    filesystem.pipe({f"{name}/data/day=1/a.csv": b"a" * 1000, f"{name}/data/day=2/b.csv": b"b" * 2000})
    connection = {"conn_type": "aws", "login": s3_server["key"], "password": s3_server["secret"],
                  "extra": {"endpoint_url": s3_server["endpoint_url"]}}
    monkeypatch.setenv("AIRFLOW_CONN_TEST_S3", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW_CONN_TEST_S3_WRONG", json.dumps({**connection, "password": "wrong"}))
    register_data_connections()
    try:
        config = _config(tmp_path / "src", Input(f"s3://{name}/data/", connection="test_s3"), "/unused")
        config.outputs = {"model": Output(f"s3://{name}/models/{{run_id}}/", connection="test_s3")}
        first = Experiment("data").submit(config)
        first.wait_for_completion()
        seen = json.loads(filesystem.cat(f"{name}/models/{first.id}/seen.json"))
        assert seen == {"day=1/a.csv": _sha(b"a" * 1000), "day=2/b.csv": _sha(b"b" * 2000)}
        assert filesystem.exists(f"{name}/models/{first.id}/{MARKER}")
        recorded = MlflowClient().get_run(first.id)
        assert recorded.inputs.dataset_inputs[0].dataset.source_type == "s3"
        assert recorded.data.tags["training.data.output.model.uri"] == f"s3://{name}/models/{first.id}/"
        filesystem.pipe(f"{name}/data/day=2/b.csv", b"c" * 2000)
        second = Experiment("data").submit(config)
        second.wait_for_completion()
        assert MlflowClient().get_run(second.id).data.tags["training.data.input.train.bytes_read"] == "2000"
        assert json.loads(filesystem.cat(f"{name}/models/{second.id}/seen.json"))["day=2/b.csv"] == _sha(b"c" * 2000)
        wrong = _config(tmp_path / "src", Input(f"s3://{name}/data/", connection="test_s3_wrong"), "/unused")
        wrong.outputs = {"model": Output(f"s3://{name}/models/{{run_id}}/", connection="test_s3")}
        with pytest.raises(ConfigurationError, match=r"inputs\['train'\].connection.*refused"):
            Experiment("data").submit(wrong)
        fixed = _config(tmp_path / "src", Input(f"s3://{name}/data/", connection="test_s3"), "/unused")
        fixed.outputs = {"model": Output(f"s3://{name}/models/{first.id}/", connection="test_s3")}
        with pytest.raises(ConfigurationError, match="already holds data written by run"):
            Experiment("data").submit(fixed)
        _direct_s3_binding_reaches_the_script(name, s3_server, tmp_path, monkeypatch)
    finally:
        register_resolver(None)


def _direct_s3_binding_reaches_the_script(bucket: str, s3_server: dict[str, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A direct input's connection reaches the script as AWS's standard variables (s3fs, boto3 and
    pandas read them), as secrets: not in the job folder, not in MLflow."""
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(variable, raising=False)
    write_script(tmp_path / "direct_src", """
        import os, sys
        import s3fs
        print("READ", s3fs.S3FileSystem().cat(sys.argv[1] + "day=1/a.csv")[:3].decode())
        with s3fs.S3FileSystem().open(sys.argv[2] + "written.txt", "wb") as out:
            out.write(b"direct")
    """)
    config = ScriptRunConfig(tmp_path / "direct_src", "train.py", arguments=["${{inputs.raw}}", "${{outputs.scores}}"],
                             inputs={"raw": Input(f"s3://{bucket}/data/", mode="direct", connection="test_s3")},
                             outputs={"scores": Output(f"s3://{bucket}/scores/{{run_id}}/", mode="direct",
                                                       connection="test_s3")})
    run = Experiment("data").submit(config)
    run.wait_for_completion()
    assert "READ aaa" in _driver_log(run.id, tmp_path)
    import s3fs

    written = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server).cat(f"{bucket}/scores/{run.id}/written.txt")
    assert written == b"direct"
    recorded = MlflowClient().get_run(run.id)
    assert s3_server["secret"] not in json.dumps([recorded.data.tags, recorded.data.params])
    job_json = tmp_path / "state" / "local" / "jobs" / run.id / "job.json"
    assert not job_json.exists() or s3_server["secret"] not in job_json.read_text()


def test_azureml_v1_dataset_arguments_run_unchanged(tmp_path: Path) -> None:
    """A v1 submission's dataset arguments (as_named_input().as_download(), OutputFileDatasetConfig with
    {run-id}) become the run's input and output; the v1 script reads run.input_datasets as in Azure ML."""
    from airflow_provider.core.data.azureml_v1 import Dataset, OutputFileDatasetConfig

    data = _data(tmp_path / "data", {"iris.csv": b"5.1,3.5,1.4,0.2,setosa\n"})
    write_script(tmp_path / "src", """
        import argparse, os, shutil
        from azureml.core import Run
        parser = argparse.ArgumentParser()
        parser.add_argument("--data")
        parser.add_argument("--out")
        args = parser.parse_args()
        run = Run.get_context()
        assert run.input_datasets["iris"] == args.data, (run.input_datasets, args.data)
        rows = open(os.path.join(run.input_datasets["iris"], "iris.csv")).read().splitlines()
        run.log("rows", len(rows))
        os.makedirs(args.out, exist_ok=True)
        shutil.copy(os.path.join(args.data, "iris.csv"), os.path.join(args.out, "copy.csv"))
    """)
    output = OutputFileDatasetConfig(name="prepared", destination=str(tmp_path / "out" / "{run-id}" / "{output-name}"))
    config = ScriptRunConfig(tmp_path / "src", "train.py", azureml_compat=True, arguments=[
        "--data", Dataset.File.from_files(str(data)).as_named_input("iris").as_download(),
        "--out", output.as_upload(overwrite=False)])
    run = Experiment("v1-data").submit(config)
    run.wait_for_completion()
    assert (tmp_path / "out" / run.id / "prepared" / "copy.csv").read_bytes() == b"5.1,3.5,1.4,0.2,setosa\n"
    assert MlflowClient().get_run(run.id).data.metrics["rows"] == 1
    with pytest.raises(ConfigurationError, match="datastores"):
        Dataset.File.from_files(path=[("workspaceblobstore", "iris/")])


@pytest.mark.parametrize("client", ["openssh", "paramiko"])
def test_a_large_input_goes_through_the_system_ssh_client_or_paramiko(client: str, ssh_container: SSHHost,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A 70 MiB input reaches the SSH host through the system's ssh client (the connection's key file
    and the host key the provider verified), or through paramiko when that is turned off; the host's
    job gets read-only links to the checked blobs either way."""
    from airflow_provider.core.targets.ssh import OPENSSH_VARIABLE

    if client == "paramiko":
        monkeypatch.setenv(OPENSSH_VARIABLE, "0")
    parts = {f"shard-{i}.bin": os.urandom(10 << 20) for i in range(7)}
    data = _data(tmp_path / "data", parts)
    target = _ssh_target(ssh_container, f"/tmp/tr-data-{uuid.uuid4().hex[:8]}")
    out = tmp_path / "models"
    run = Experiment("data").submit(_config(tmp_path / "src", Input(str(data)), f"{out}/{{run_id}}/",
                                            compute_target=target))
    run.wait_for_completion()
    assert _seen(out, run.id) == {name: _sha(content) for name, content in parts.items()}
    assert target.blob_bytes_sent >= 70 << 20
    assert (target.openssh_bytes_sent > 0) is (client == "openssh")


def test_a_sweeps_trials_each_read_the_input_and_write_their_own_output(tmp_path: Path) -> None:
    """Every trial of a sweep gets the input (copied once here) and writes its own output folder."""
    from airflow_provider.core.hyperdrive import GridParameterSampling, HyperDriveConfig, choice

    data = _data(tmp_path / "data", {"rows.csv": b"1\n2\n3\n"})
    write_script(tmp_path / "src", """
        import argparse, os
        from airflow_provider.core import Run
        parser = argparse.ArgumentParser()
        parser.add_argument("--data")
        parser.add_argument("--out")
        parser.add_argument("--lr", type=float)
        args = parser.parse_args()
        rows = len(open(os.path.join(args.data, "rows.csv")).read().split())
        open(os.path.join(args.out, "model.txt"), "w").write(f"lr={args.lr} rows={rows}")
        Run.get_context().log("score", args.lr * rows)
    """)
    config = ScriptRunConfig(tmp_path / "src", "train.py",
                             arguments=["--data", "${{inputs.train}}", "--out", "${{outputs.model}}"],
                             inputs={"train": Input(str(data))},
                             outputs={"model": Output(str(tmp_path / "out" / "{run_id}"))})
    sweep = HyperDriveConfig(config, GridParameterSampling({"--lr": choice(0.1, 0.2)}), "score", "maximize",
                             max_total_runs=2, max_concurrent_runs=2)
    run = Experiment("data-sweep").submit(sweep)
    run.wait_for_completion()
    trials = run.get_details()["trials"]
    assert sorted(t["status"] for t in trials) == ["Completed", "Completed"]
    written = sorted((tmp_path / "out" / t["run_id"] / "model.txt").read_text() for t in trials)
    assert written == ["lr=0.1 rows=3", "lr=0.2 rows=3"]


def test_an_interrupted_download_is_never_used_and_the_next_try_reads_it_whole(tmp_path: Path) -> None:
    """A server that drops the connection half-way through a file: staging fails with a retryable
    error naming the input, nothing half-read is kept, and the next submit reads the file whole."""
    import functools
    import http.server
    import threading

    from airflow_provider.core.data.inputs import DataTransferError
    from airflow_provider.core.errors import is_retryable

    content = os.urandom(3 << 20)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "big.bin").write_bytes(content)
    state = {"cut": True}

    class CuttingHandler(http.server.SimpleHTTPRequestHandler):
        def copyfile(self, source: Any, outputfile: Any) -> None:
            if self.command == "GET" and state["cut"]:
                outputfile.write(source.read(len(content) // 2))  # then the connection drops
                self.close_connection = True
                return
            super().copyfile(source, outputfile)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(CuttingHandler, directory=str(tmp_path / "www")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/big.bin"
    out = tmp_path / "models"
    try:
        with pytest.raises(DataTransferError, match=r"inputs\['train'\]") as raised:
            Experiment("data").submit(_config(tmp_path / "src", Input(url), f"{out}/{{run_id}}/"))
        assert is_retryable(raised.value)
        blobs = tmp_path / "state" / "snapshots" / "blobs"
        kept = [p for p in blobs.rglob("*") if p.is_file() and p.stat().st_size == len(content) // 2]
        assert kept == [], "a half-read file was kept"
        state["cut"] = False
        run = Experiment("data").submit(_config(tmp_path / "src", Input(url), f"{out}/{{run_id}}/"))
        run.wait_for_completion()
        assert _seen(out, run.id) == {"big.bin": _sha(content)}
    finally:
        server.shutdown()
        server.server_close()


def test_a_script_rewriting_its_outputs_tag_cannot_send_its_data_elsewhere(tmp_path: Path) -> None:
    """The run's tags are a record its script can rewrite: a script that points the outputs' tag at
    another folder (and forges a digest) changes nothing; the output goes where it was submitted to."""
    elsewhere = tmp_path / "elsewhere"
    write_script(tmp_path / "src", f"""
        import json, os, sys
        from mlflow.tracking import MlflowClient
        open(os.path.join(sys.argv[1], "model.txt"), "w").write("weights")
        forged = {{"uri": {str(elsewhere)!r}, "mode": "upload", "connection": None, "overwrite": True}}
        client = MlflowClient()
        client.set_tag(os.environ["MLFLOW_RUN_ID"], "training.data.outputs",
                       json.dumps({{"model": forged, "extra": forged}}))
        client.set_tag(os.environ["MLFLOW_RUN_ID"], "training.data.output.model.digest", "forged")
    """)
    out = tmp_path / "models"
    run = Experiment("data").submit(ScriptRunConfig(tmp_path / "src", "train.py", arguments=["${{outputs.model}}"],
                                                    outputs={"model": Output(f"{out}/{{run_id}}/")}))
    run.wait_for_completion()
    assert (out / run.id / "model.txt").read_text() == "weights"
    assert not elsewhere.exists()
    tags = MlflowClient().get_run(run.id).data.tags
    marker = json.loads((out / run.id / MARKER).read_text())
    assert tags["training.data.output.model.digest"] == marker["digest"] != "forged"
    assert "training.data.output.extra.digest" not in tags


def test_a_run_rebuilt_without_its_outputs_keeps_them_in_its_artifacts(tmp_path: Path) -> None:
    """A process given a run by its id alone does not know where its outputs go (its tags are not
    trusted for that): the output's files go to the run's artifacts, and the run says so."""
    from airflow_provider.core.script_run import ScriptRun

    write_script(tmp_path / "src", """
        import os, sys, time
        open(os.path.join(sys.argv[1], "model.txt"), "w").write("weights")
        time.sleep(1)
    """)
    out = tmp_path / "models"
    config = ScriptRunConfig(tmp_path / "src", "train.py", arguments=["${{outputs.model}}"],
                             outputs={"model": Output(f"{out}/{{run_id}}/")})
    submitted = Experiment("data").submit(config)
    assert submitted.outputs is not None and [o.name for o in submitted.outputs] == ["model"]
    rebuilt = ScriptRun(submitted.experiment, submitted.id, submitted.target, submitted.handle)
    details = rebuilt.wait_for_completion()
    assert not (out / submitted.id / "model.txt").exists()
    kept = MlflowClient().download_artifacts(submitted.id, "outputs_not_copied/model", str(tmp_path / "dl"))
    assert (Path(kept) / "model.txt").read_text() == "weights"
    assert details["status"] == "Completed"
    warnings = Path(MlflowClient().download_artifacts(submitted.id, WARNINGS_ARTIFACT, str(tmp_path / "w"))).read_text()
    assert "output 'model' was not copied to its URI: this process was given the run by its id alone" in warnings
    assert MlflowClient().get_run(submitted.id).data.tags["training.data.output.model.digest"] == ""


def test_a_canceled_runs_output_is_copied(tmp_path: Path) -> None:
    """What the script wrote before it was canceled reaches the output's URI."""
    from airflow_provider.core.errors import RunCanceledError
    from tests.helpers import wait_until

    write_script(tmp_path / "src", """
        import os, sys, time
        open(os.path.join(sys.argv[1], "checkpoint.txt"), "w").write("epoch 1")
        time.sleep(300)
    """)
    out = tmp_path / "models"
    run = Experiment("data").submit(ScriptRunConfig(tmp_path / "src", "train.py", arguments=["${{outputs.model}}"],
                                                    outputs={"model": Output(f"{out}/{{run_id}}/")}))
    job_output = tmp_path / "state" / "local" / "jobs" / run.id / "work" / ".outputs" / "model" / "checkpoint.txt"
    wait_until(job_output.exists, timeout=60, message="the script to write its checkpoint")
    run.cancel()
    with pytest.raises(RunCanceledError):
        run.wait_for_completion()
    assert (out / run.id / "checkpoint.txt").read_text() == "epoch 1"


def test_a_reattached_run_copies_its_outputs_where_the_retry_says_unless_that_holds_another_runs_data(
        tmp_path: Path) -> None:
    """A retry reattaches with the task's own outputs, checked and claimed as at staging: a new,
    empty URI is used; one holding another run's data is refused, and the run keeps its files in its
    artifacts."""
    go = tmp_path / "go"
    write_script(tmp_path / "src", f"""
        import os, sys, time
        open(os.path.join(sys.argv[1], "model.txt"), "w").write("weights")
        while not os.path.exists({str(go)!r}):
            time.sleep(0.1)
    """)

    def config(uri: str) -> ScriptRunConfig:
        return ScriptRunConfig(tmp_path / "src", "train.py", arguments=["${{outputs.model}}"],
                               outputs={"model": Output(uri)})

    go.write_text("go")
    taken = Experiment("data").submit(config(str(tmp_path / "taken")))  # a fixed URI, now another run's data
    taken.wait_for_completion()
    go.unlink()
    first = Experiment("data").submit(config(f"{tmp_path}/models/{{run_id}}/"), run_key="reattach-outputs")
    same = Experiment("data").submit(config(f"{tmp_path}/models/{{run_id}}/"), run_key="reattach-outputs")
    assert same.id == first.id and same.outputs == first.outputs
    moved = Experiment("data").submit(config(f"{tmp_path}/elsewhere/{{run_id}}/"), run_key="reattach-outputs")
    assert moved.id == first.id and moved.outputs is not None
    assert moved.outputs[0].uri == f"{tmp_path}/elsewhere/{first.id}"
    refused = Experiment("data").submit(config(str(tmp_path / "taken")), run_key="reattach-outputs")
    assert refused.id == first.id and refused.outputs is None
    go.write_text("go")
    refused.wait_for_completion()
    assert json.loads((tmp_path / "taken" / MARKER).read_text())["run_id"] == taken.id
    kept = MlflowClient().download_artifacts(first.id, "outputs_not_copied/model", str(tmp_path / "dl"))
    assert (Path(kept) / "model.txt").read_text() == "weights"
