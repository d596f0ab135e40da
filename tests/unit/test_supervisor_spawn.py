"""How the supervisor starts a job's command (``job_runner.spawn_in_new_session``), run for real on
Python 3.9 (the oldest a target may have): what ``subprocess.Popen(..., start_new_session=True)``
gave before, without importing ``subprocess``."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest

from airflow_provider.runtime import host_files
from tests.unit.test_runtime_package import _python39, _run

PROBE = """
import json, os, sys
print(json.dumps({"pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgid(0), "cwd": os.getcwd(),
                  "stdin": sys.stdin.read(), "marker": os.environ.get("MARKER")}))
sys.stderr.write("to stderr\\n")
"""


def _spawn(tmp_path: Path, argv: list[str], env: dict[str, str], cwd: Path, without_setsid: bool = False) -> str:
    """Spawn ``argv`` from a Python 3.9 supervisor (``without_setsid``: as where ``posix_spawn``
    cannot start a session); what the supervisor printed (``status CODE
    FOLDER`` or ``error ...``), then what the command wrote."""
    (tmp_path / "job_runner.py").write_bytes(host_files()["job_runner.py"])
    output = tmp_path / "output.log"
    done = _run(_python39(), f"""
        import os, job_runner
        if {without_setsid!r}:  # a platform whose posix_spawn cannot start a session
            def no_session(*args, **kwargs):
                raise NotImplementedError("setsid")
            os.posix_spawn = no_session
        fd = os.open({str(output)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            pid = job_runner.spawn_in_new_session({argv!r}, {str(cwd)!r}, {env!r}, fd)
        except OSError as exc:
            print("error", type(exc).__name__, exc)
            raise SystemExit(0)
        print("status", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), os.getcwd())
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout + (output.read_text() if output.exists() else "")


@pytest.mark.parametrize("without_setsid", [False, True], ids=["posix_spawn", "Popen where it cannot"])
def test_the_command_leads_a_new_session_in_its_folder_with_default_signals(tmp_path: Path,
                                                                            without_setsid: bool) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "probe.py").write_text(PROBE)
    env = {"MARKER": "here", "PATH": os.path.dirname(_python39())}
    output = _spawn(tmp_path, [os.path.basename(_python39()), "probe.py"], env, work, without_setsid)
    status_line, *written = output.splitlines()
    assert "to stderr" in written  # stdout and stderr both to the log
    probe_line = next(line for line in written if line.startswith("{"))
    assert status_line == f"status 0 {os.getcwd()}"  # the supervisor is back in its own folder
    probe = json.loads(probe_line)
    assert probe["sid"] == probe["pid"] == probe["pgid"]
    assert probe["cwd"] == str(work)
    # Python ignores SIGPIPE and SIGXFSZ; the command gets them back at their defaults (as with Popen).
    status = _spawn(tmp_path, ["cat", "/proc/self/status"], {"PATH": "/usr/bin:/bin"}, work, without_setsid)
    ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)) and not ignored & (1 << (signal.SIGXFSZ - 1))
    assert probe["stdin"] == ""
    assert probe["marker"] == "here"


def test_a_program_is_found_on_the_commands_own_path_and_a_relative_path_from_its_folder(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    tool = tools / "only-on-the-job-path"
    tool.write_text("#!/bin/sh\necho found on PATH\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    work = tmp_path / "work"
    work.mkdir()
    local = work / "local.sh"
    local.write_text("#!/bin/sh\necho found in the folder\n")
    local.chmod(local.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{tools}:/usr/bin:/bin"}
    assert "found on PATH" in _spawn(tmp_path, ["only-on-the-job-path"], env, work)
    assert "found in the folder" in _spawn(tmp_path, ["./local.sh"], env, work)


@pytest.mark.parametrize("argv", [["no-such-program-anywhere"], ["./missing.sh"]])
def test_a_missing_program_raises_in_the_supervisor(tmp_path: Path, argv: list[str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    output = _spawn(tmp_path, argv, {"PATH": "/usr/bin:/bin"}, work)
    assert output.startswith("error FileNotFoundError"), output
    assert argv[0] in output
