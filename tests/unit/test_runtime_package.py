"""The runtime package runs on the target: every module imports with the standard library alone, on
Python 3.9, and what a job and a host receive (``job_files``, ``host_files``) works there as shipped."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from airflow_provider import runtime
from tests.conftest import skip_or_fail

REPOSITORY = Path(__file__).resolve().parents[2]
RUNTIME_MODULES = sorted(p.stem for p in (REPOSITORY / "airflow_provider" / "runtime").glob("*.py")
                         if p.stem != "__init__")


def _python39() -> str:
    found = shutil.which("python3.9")
    candidates = [found] if found else []
    candidates += [*sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9")), "/usr/bin/python3.9"]
    check = "import sys; assert sys.version_info[:2] == (3, 9)"
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and not subprocess.run([candidate, "-c", check]).returncode:
            return candidate
    skip_or_fail("no Python 3.9 interpreter here (pyenv's 3.9 or /usr/bin/python3.9)")
    raise AssertionError("unreachable")


def _run(python: str, code: str, path: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``code`` isolated from every installed package (``-I -S``), with only ``path`` importable."""
    program = f"import sys; sys.path.insert(0, {str(path)!r})\n" + textwrap.dedent(code).strip() + "\n"
    return subprocess.run([python, "-I", "-S", "-c", program], capture_output=True, text=True, check=False,
                          **kwargs)  # type: ignore[call-overload]


def test_the_runtime_package_lists_every_module() -> None:
    assert RUNTIME_MODULES == ["conda_installer", "events", "gpu_reservations", "host_resources", "job_runner",
                               "rank_launcher", "remote_agent", "resource_limits", "run_context", "system_metrics",
                               "venv_builder"]


def test_every_runtime_module_imports_with_the_standard_library_alone_on_python_3_9() -> None:
    python = _python39()
    imports = "".join(f"import airflow_provider.runtime.{name}\n" for name in RUNTIME_MODULES)
    done = _run(python, imports + textwrap.dedent("""
        files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())}
        outside = sorted(name for name, file in files.items()  # builtin and frozen modules have no file
                         if file and name.split(".")[0] != "airflow_provider" and not file.startswith(sys.base_prefix))
        print(outside)
    """), REPOSITORY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"modules from outside the standard library: {done.stdout}"


def test_a_jobs_runtime_folder_works_alone_on_python_3_9(tmp_path: Path) -> None:
    python = _python39()
    folder = tmp_path / "job"
    for relative, content in runtime.job_files(azureml_compat=True).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    runtime_dir = folder / runtime.RUNTIME_DIR
    done = _run(python, f"""
        sys.path.insert(0, {str(runtime_dir / runtime.COMPAT_PATH_DIR)!r})
        from airflow_provider.core import Run
        from azureml.core import Run as V1Run
        import {runtime.LAUNCHER_MODULE}
        run = Run.get_context()
        run.log("loss", 0.5)
        print("offline", run.is_offline, V1Run.get_context().id)
    """, runtime_dir)
    assert done.returncode == 0, done.stderr
    assert "offline True" in done.stdout


def test_the_host_files_run_as_plain_files_on_python_3_9(tmp_path: Path) -> None:
    python = _python39()
    for name, content in runtime.host_files().items():
        (tmp_path / name).write_bytes(content)
    usage = subprocess.run([python, "-I", "-S", str(tmp_path / "job_runner.py")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: job_runner.py JOB_DIR" in usage.stderr
    request = json.dumps({"op": "hello", "payload_size": 0}) + "\n" + json.dumps({"op": "nope"}) + "\n"
    agent = subprocess.run([python, "-I", "-S", str(tmp_path / "remote_agent.py"), "serve"], input=request,
                           capture_output=True, text=True, timeout=60)
    assert agent.returncode == 0, agent.stderr
    hello, unknown = (json.loads(line) for line in agent.stdout.splitlines())
    assert hello["ok"] and hello["python_version"].startswith("3.9")
    assert not unknown["ok"] and "unknown operation 'nope'" in unknown["error"]


@pytest.mark.parametrize("azureml_compat", [False, True])
def test_job_files_are_the_runtime_modules_and_nothing_of_the_submitting_side(azureml_compat: bool) -> None:
    files = runtime.job_files(azureml_compat)
    shipped = {path for path in files if path.startswith("runtime/airflow_provider/runtime/")}
    assert shipped == {f"runtime/airflow_provider/runtime/{name}.py"
                       for name in ("__init__", "events", "run_context", "rank_launcher", "system_metrics")}
    assert files["runtime/airflow_provider/core/__init__.py"].count(b"import") == 1, "the core stand-in imports more"
    alias = files["runtime/airflow_provider/core/run_context.py"]
    assert b"from airflow_provider.runtime.run_context import Run" in alias
    assert any(path.startswith("runtime/azureml_compat/azureml/") for path in files) == azureml_compat
    assert set(runtime.host_files()) == {"conda_installer.py", "job_runner.py", "remote_agent.py", "venv_builder.py",
                                         "system_metrics.py", "host_resources.py", "gpu_reservations.py",
                                         "resource_limits.py"}
    assert len(runtime.host_files_version()) == 16


def test_a_ranks_script_runs_in_a_fork_of_its_launcher_with_its_output_and_exit_code(tmp_path: Path) -> None:
    python = _python39()
    for relative, content in runtime.job_files().items():
        path = tmp_path / "job" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import sys
        command = open("/proc/self/cmdline", "rb").read().split(b"\\0")
        print("arguments", sys.argv[1:], "process", command[3])
        sys.exit(3)
    """))
    ranks = tmp_path / "ranks"
    launcher = [python, "-m", runtime.LAUNCHER_MODULE]
    done = subprocess.run([*launcher, "rank", "--", *launcher, "script", "--", str(script), "--lr", "0.1"],
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path / "job" / runtime.RUNTIME_DIR),
                               "TRAINING_RUNS_RANK": "0", "TRAINING_RUNS_RANK_LOG_DIR": str(ranks),
                               "TRAINING_RUNS_PARENT_STOPS_RANKS": "1"},  # else a failing rank stops its parent
                          capture_output=True, text=True, timeout=60)
    # The script's process is the launcher's fork (its command line says "rank"), not a new interpreter.
    expected = "arguments ['--lr', '0.1'] process b'rank'\n"
    assert (done.returncode, done.stdout) == (3, expected), done.stderr
    assert (ranks / "rank_0.log").read_text() == expected
    assert json.loads((ranks / "rank_0.exit").read_text())["exit_code"] == 3
