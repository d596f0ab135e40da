"""The Docker target's container entry and the supervisor's echo, run for real on Python 3.9 (the
oldest a target may have) without a container: the entry program unpacks the job folder streamed
to its stdin and supervises the job in the same process; the supervisor echoes ``driver.log`` on
stdout and prints its exit line, with the log's size, on stderr."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

from airflow_provider.core.targets.docker_streams import END, ENTRY_PROGRAM, last_exit_line, record
from airflow_provider.runtime import host_files, job_runner
from tests.unit.test_runtime_package import _python39

# Output with no newline at its end and bytes that are not UTF-8: the echo must keep them as they are.
SCRIPT = b"import sys\nsys.stdout.buffer.write(b'first line\\n\\xff\\xfe not utf-8, no newline')\n"


def _job_folder_stream(job_json: dict[str, object], script: bytes = SCRIPT) -> bytes:
    return b"".join([
        record("d", 0o755, job_runner.UPLOADS_DIR),
        record("f", 0o644, f"{job_runner.WORK_DIR}/pkg/train.py", script),
        record("f", 0o644, "job_runner.py", host_files()["job_runner.py"]),
        record("f", 0o600, job_runner.JOB_SPEC, json.dumps(job_json).encode()),
        END,
    ])


def _enter(job_dir: Path, stream: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([_python39(), "-I", "-S", "-c", ENTRY_PROGRAM, str(job_dir)], input=stream,
                          capture_output=True, timeout=60, check=False)


def test_the_entry_unpacks_the_job_folder_and_the_supervisor_echoes_the_driver_log(tmp_path: Path) -> None:
    python = _python39()
    job_dir = tmp_path / "job"
    done = _enter(job_dir, _job_folder_stream({"argv": [python, "pkg/train.py"], "echo_output": True,
                                               "env": {"SECRET": "s3cr3t"}, "secret_env": ["SECRET"]}))
    assert done.returncode == 0, done.stderr
    driver_log = (job_dir / job_runner.DRIVER_LOG).read_bytes()
    assert driver_log == b"first line\n\xff\xfe not utf-8, no newline"
    assert done.stdout == driver_log  # stdout carries exactly the log, nothing else
    line = last_exit_line(done.stderr)
    assert line is not None, done.stderr
    assert json.loads(line) == json.loads((job_dir / job_runner.EXIT_STATE).read_bytes())
    assert json.loads(line)["driver_log_bytes"] == len(driver_log) and json.loads(line)["exit_code"] == 0
    assert (job_dir / job_runner.UPLOADS_DIR).is_dir()
    assert oct((job_dir / job_runner.JOB_SPEC).stat().st_mode & 0o777) == "0o600"
    assert b"s3cr3t" not in (job_dir / job_runner.JOB_SPEC).read_bytes()


def test_a_stream_cut_short_stops_before_the_job_starts(tmp_path: Path) -> None:
    stream = _job_folder_stream({"argv": ["true"]})
    done = _enter(tmp_path / "job", stream[: len(stream) - len(END) - 10])
    assert done.returncode != 0
    assert b"cut short" in done.stderr
    assert not (tmp_path / "job" / job_runner.RUNNER_STATE).exists()


def test_a_path_leaving_the_job_folder_is_refused(tmp_path: Path) -> None:
    done = _enter(tmp_path / "job", record("f", 0o644, "../outside.txt", b"x") + END)
    assert done.returncode != 0 and b"leaves the job folder" in done.stderr
    assert not (tmp_path / "outside.txt").exists()


def test_the_supervisor_imports_only_what_it_runs_with(tmp_path: Path) -> None:
    """A fresh container compiles every module its supervisor imports (images seldom ship compiled
    standard libraries): typing and ctypes cost tens of milliseconds there. JSON and signals (with
    ``re`` and ``enum``) come after the command has started."""
    (tmp_path / "job_runner.py").write_bytes(host_files()["job_runner.py"])
    probe = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import job_runner\n"
             "print(sorted(name for name in ('typing', 'ctypes', 'json', 're', 'enum', 'signal', 'subprocess')"
             " if name in sys.modules))")
    done = subprocess.run([_python39(), "-I", "-S", "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _stream_with_launch(job_json: dict[str, object], launch: dict[str, object], script: bytes) -> bytes:
    return b"".join([
        record("f", 0o644, f"{job_runner.WORK_DIR}/train.py", script),
        record("f", 0o644, "job_runner.py", host_files()["job_runner.py"]),
        record("f", 0o600, job_runner.JOB_SPEC, json.dumps(job_json).encode()),
        record("l", 0, "", job_runner.encode_launch(launch)),  # type: ignore[arg-type]
        END,
    ])


def test_launch_parameters_start_the_command_and_its_secrets_never_reach_the_disk(tmp_path: Path) -> None:
    python = _python39()
    script = (b"import os\nprint('secret seen' if os.environ['SECRET'][::-1] == 't3rc3s' else 'secret missing')\n"
              b"print('cwd', os.getcwd())\nopen('outputs/model.txt', 'w').write('m')\n")
    spec: dict[str, object] = {"argv": [python, "train.py"], "env": {"SECRET": "s3cr3t", "PLAIN": "a=b"},
                               "secret_env": ["SECRET"], "echo_output": True}
    public = dict(spec, env={"PLAIN": "a=b"})
    job_dir = tmp_path / "job"
    done = _enter(job_dir, _stream_with_launch(public, spec, script))
    assert done.returncode == 0, done.stderr
    log = (job_dir / job_runner.DRIVER_LOG).read_text().splitlines()
    assert log == ["secret seen", f"cwd {job_dir / job_runner.WORK_DIR}"]
    for path in job_dir.rglob("*"):
        assert not path.is_file() or b"s3cr3t" not in path.read_bytes(), path
    ending = json.loads(last_exit_line(done.stderr) or b"{}")
    assert ending["exit_code"] == 0 and ending["reason"] == job_runner.REASON_EXITED
    # What a watcher need not fetch: it did not exist when the job ended.
    assert ending["absent"] == [job_runner.EVENTS_FILE, job_runner.RANKS_DIR, f"{job_runner.WORK_DIR}/logs"]
    runner = json.loads((job_dir / job_runner.RUNNER_STATE).read_text())
    assert runner["child_pid"] > 0 and runner["started_at"] > 0


def test_a_command_the_launch_parameters_cannot_start_is_recorded_as_a_launch_failure(tmp_path: Path) -> None:
    spec: dict[str, object] = {"argv": ["no-such-program-here", "x"], "echo_output": True}
    job_dir = tmp_path / "job"
    done = _enter(job_dir, _stream_with_launch(spec, spec, b""))
    assert done.returncode == 1, done.stderr
    ending = json.loads((job_dir / job_runner.EXIT_STATE).read_text())
    assert ending["reason"] == job_runner.REASON_LAUNCH_FAILED
    assert "could not start 'no-such-program-here'" in ending["message"]


def test_launch_parameters_round_trip() -> None:
    spec: dict[str, object] = {
        "argv": ["python3", "-c", "print('a b')", ""], "cwd": "work/sub",
        "env": {"A": "x=y=z", "EMPTY": "", "UNICODE": "é \udcff"}, "unset_env": ["VIRTUAL_ENV"],
        "path_prepend": ["/opt/env/bin"],
    }
    assert job_runner.decode_launch(job_runner.encode_launch(spec)) == spec  # type: ignore[arg-type]
    minimal = job_runner.decode_launch(job_runner.encode_launch({"argv": ["true"]}))
    assert minimal == {"argv": ["true"], "cwd": job_runner.WORK_DIR, "env": {}, "unset_env": [], "path_prepend": []}


# ------------------------------------------------------------------------- the input cache's programs
def test_a_link_record_becomes_a_link_into_the_cache(tmp_path: Path) -> None:
    """A data input's file arrives as a link to its blob in the (read-only) cache volume."""
    stream = _job_folder_stream({"argv": ["true"]})
    stream = record("s", 0o444, f"{job_runner.WORK_DIR}/.inputs/train/a.csv", b"/cache/blobs/ab/abc") + stream
    done = _enter(tmp_path / "job", stream)
    assert done.returncode == 0, done.stderr
    link = tmp_path / "job" / job_runner.WORK_DIR / ".inputs" / "train" / "a.csv"
    assert link.is_symlink() and str(link.readlink()) == "/cache/blobs/ab/abc"


def _sync(cache: Path, want: list[list[object]], blobs: dict[str, bytes], *, keep_days: float = 30,
          corrupt: bool = False, job: str = "job-1",
          keep_jobs: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[bytes], list[str]]:
    """Run the sync program as the sync container does, sending what it says it lacks."""
    import hashlib

    from airflow_provider.core.targets.docker_input_cache import SYNC_PROGRAM

    process = subprocess.Popen([_python39(), "-I", "-S", "-c", SYNC_PROGRAM, str(cache), str(keep_days), job],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps({"want": want, "keep_jobs": list(keep_jobs)}).encode() + b"\n")
    process.stdin.flush()
    answer = process.stdout.readline()
    missing = json.loads(answer) if answer else []  # no answer: it refused the list
    for digest in missing:
        content = blobs[digest]
        assert hashlib.sha256(content).hexdigest() == digest
        process.stdin.write(b"b %s %d\n" % (digest.encode(), len(content)) + (content[::-1] if corrupt else content))
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(b"e\n")
        process.stdin.close()
    rest = process.stdout.read()
    stderr = process.stderr.read() if process.stderr is not None else b""
    returncode = process.wait(timeout=60)
    return subprocess.CompletedProcess([], returncode, rest, stderr), missing


def test_the_sync_program_asks_only_for_missing_blobs_checks_them_and_evicts_unused_ones(tmp_path: Path) -> None:
    import hashlib
    import os

    contents = [b"first file", b"second file" * 1000]
    blobs = {hashlib.sha256(c).hexdigest(): c for c in contents}
    want = [[digest, len(content)] for digest, content in blobs.items()]
    cache = tmp_path / "cache"
    done, missing = _sync(cache, want, blobs)
    assert done.returncode == 0, done.stderr
    assert sorted(missing) == sorted(blobs)
    for digest, content in blobs.items():
        stored = cache / "blobs" / digest[:2] / digest
        assert stored.read_bytes() == content and oct(stored.stat().st_mode & 0o777) == "0o444"
        linked = cache / "jobs" / "job-1" / digest  # the job's own folder: what its container gets
        assert linked.stat().st_ino == stored.stat().st_ino
    assert list((cache / "partial").iterdir()) == []
    done, missing = _sync(cache, want, blobs, job="job-2", keep_jobs=("job-1",))  # nothing is sent again
    assert done.returncode == 0 and missing == []
    assert sorted(p.name for p in (cache / "jobs").iterdir()) == ["job-1", "job-2"]
    # a blob nobody asked for in longer than keep_days goes, but a job that still runs keeps its link;
    # the folder of a job whose container is gone is removed
    old_digest = str(want[0][0])
    old = cache / "blobs" / old_digest[:2] / old_digest
    os.utime(old, (1_000_000, 1_000_000))
    done, _ = _sync(cache, want[1:], blobs, keep_days=1, job="job-3", keep_jobs=("job-2",))
    assert json.loads(done.stdout)["evicted"] == 1 and not old.exists()
    assert (cache / "jobs" / "job-2" / old_digest).read_bytes() == blobs[old_digest]
    # job-1's container is gone, but its folder is new: another submitter may be about to create it
    assert sorted(p.name for p in (cache / "jobs").iterdir()) == ["job-1", "job-2", "job-3"]
    os.utime(cache / "jobs" / "job-1", (1_000_000, 1_000_000))
    done, _ = _sync(cache, want[1:], blobs, job="job-3", keep_jobs=("job-2",))
    assert sorted(p.name for p in (cache / "jobs").iterdir()) == ["job-2", "job-3"]


def test_the_sync_program_refuses_a_blob_whose_content_is_not_its_digest(tmp_path: Path) -> None:
    import hashlib

    content = b"weights" * 100
    digest = hashlib.sha256(content).hexdigest()
    done, _ = _sync(tmp_path / "cache", [[digest, len(content)]], {digest: content}, corrupt=True)
    assert done.returncode != 0 and b"another content" in done.stderr
    assert not (tmp_path / "cache" / "blobs" / digest[:2] / digest).exists()
    assert list((tmp_path / "cache" / "partial").iterdir()) == []
    refused, _ = _sync(tmp_path / "cache", [["../../etc/passwd", 1]], {})
    assert refused.returncode != 0 and b"not a sha256 digest" in refused.stderr
