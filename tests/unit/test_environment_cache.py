"""EnvironmentCache: real venvs built with real uv and real pip, offline, from hand-made wheels."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Literal, cast

import pytest

from airflow_provider.core.environments import local_cache as environment_cache
from airflow_provider.core.environments.local_cache import (
    EnvironmentCache,
    PreparedEnvironment,
    environment_fingerprint,
)
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError, EnvironmentBuildError, is_retryable
from tests.conftest import skip_or_fail
from tests.helpers import make_wheel

REPO_ROOT = Path(environment_cache.__file__).resolve().parents[3]
INSTALLERS = ["uv", "pip"]
InstallerName = Literal["uv", "pip"]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("wheels")
    tiny = make_wheel(
        folder,
        "tinypkg",
        "1.0",
        'VALUE = 42\n\ndef main():\n    print("tinypkg-cli says", VALUE)\n',
        "[console_scripts]\ntinypkg-cli = tinypkg:main\n",
    )
    other = make_wheel(folder, "otherpkg", "2.0", "VALUE = 7\n")
    broken = folder / "brokenpkg-1.0-py3-none-any.whl"  # a zip, but no .dist-info: not a wheel
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("brokenpkg.py", "VALUE = 0\n")
    # A real wheel (it resolves: its metadata reads fine) with a console script no installer can
    # write: the install fails.
    corrupt = make_wheel(folder, "corruptpkg", "1.0", "VALUE = 1\n", "[console_scripts]\nbad-cli = :::\n")
    return {"tiny": tiny, "other": other, "broken": broken, "corrupt": corrupt}


@pytest.fixture(params=INSTALLERS)
def installer(request: pytest.FixtureRequest) -> InstallerName:
    if request.param == "uv" and shutil.which("uv") is None:
        try:
            import uv  # noqa: F401
        except ImportError:
            skip_or_fail("uv is not installed")
    return cast(InstallerName, request.param)


def pip_env(*requirements: str | Path, name: str = "train-env") -> Environment:
    env = Environment(name)
    for requirement in requirements:
        env.add_pip_package(str(requirement))
    return env


def run_python(python: str, code: str) -> str:
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


def build_logs(root: Path, fingerprint: str) -> list[Path]:
    return sorted((root / "logs").glob(f"{fingerprint}-*.log"))


# ----------------------------------------------------------------- fingerprint
def test_fingerprint_ignores_name_version_comments_blanks_and_order(wheels: dict[str, Path]) -> None:
    first = pip_env(wheels["tiny"], wheels["other"], name="a")
    second = Environment("b")
    second.version = "7"
    second.python.pip_packages = ["# pinned", f"  {wheels['other']}  ", "", str(wheels["tiny"])]
    assert environment_fingerprint(first, "3.11.7") == environment_fingerprint(second, "3.11.7")


def test_fingerprint_changes_with_requirements_python_and_kind(wheels: dict[str, Path]) -> None:
    base = environment_fingerprint(pip_env(wheels["tiny"]), "3.11.7")
    assert environment_fingerprint(pip_env(wheels["tiny"], "numpy"), "3.11.7") != base
    assert environment_fingerprint(pip_env(wheels["other"]), "3.11.7") != base
    assert environment_fingerprint(pip_env(wheels["tiny"]), "3.12.1") != base
    assert environment_fingerprint(None, "3.11.7") != base
    assert len(base) == 64 and int(base, 16) >= 0


def test_fingerprint_of_user_managed_depends_on_interpreter_path() -> None:
    one, two = Environment("u"), Environment("u")
    one.python.user_managed_dependencies = two.python.user_managed_dependencies = True
    two.python.interpreter_path = "/opt/py/bin/python"
    assert environment_fingerprint(one, "v") != environment_fingerprint(two, "v")


# ----------------------------------------------------------------- current and user-managed
def test_no_environment_is_the_current_interpreter(tmp_path: Path) -> None:
    cache = EnvironmentCache(tmp_path / "envs")
    prepared = cache.prepare(None)
    assert prepared.kind == "current"
    assert prepared.python == sys.executable
    assert not prepared.built and prepared.build_log is None
    assert "current interpreter" in prepared.description and "no environment given" in prepared.description
    assert prepared.fingerprint == environment_fingerprint(None, sys.version)
    assert not (tmp_path / "envs").exists()
    assert cache.prepare(Environment("empty")).kind == "current"


def test_default_root_is_under_the_state_folder(isolated_state: Path, wheels: dict[str, Path]) -> None:
    prepared = EnvironmentCache(installer="uv" if shutil.which("uv") else "pip").prepare(
        pip_env(wheels["other"])
    )
    assert Path(prepared.python).parent.parent == isolated_state / "envs" / prepared.fingerprint


def test_user_managed_uses_the_given_interpreter(tmp_path: Path) -> None:
    env = Environment("mine")
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = sys.executable
    prepared = EnvironmentCache(tmp_path).prepare(env)
    assert (prepared.kind, prepared.python, prepared.built) == ("user_managed", sys.executable, False)
    env.python.interpreter_path = None  # default python3, found on PATH
    assert EnvironmentCache(tmp_path).prepare(env).python == shutil.which("python3")


@pytest.mark.parametrize("bad", ["/no/such/python3", "no-such-python-xyz", "not-executable"])
def test_user_managed_with_a_bad_interpreter_is_a_configuration_error(tmp_path: Path, bad: str) -> None:
    if bad == "not-executable":
        bad = str(tmp_path / "python")
        Path(bad).write_text("#!/bin/sh\n")
    env = Environment("mine")
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = bad
    with pytest.raises(ConfigurationError) as info:
        EnvironmentCache(tmp_path).prepare(env)
    assert info.value.field == "environment.python.interpreter_path"
    assert bad in str(info.value)


# ----------------------------------------------------------------- pip environments
def test_pip_environment_is_built_once_then_reused(
    tmp_path: Path, wheels: dict[str, Path], installer: InstallerName
) -> None:
    root = tmp_path / "envs"
    env = pip_env(wheels["tiny"])
    first = EnvironmentCache(root, installer=installer).prepare(env)
    assert first.built and first.kind == "pip"
    assert first.build_log is not None and first.build_log.is_file()
    assert first.build_log.parent == root / "logs"
    assert "install" in first.build_log.read_text()
    assert first.python == str(root / first.fingerprint / "bin" / "python")
    assert run_python(first.python, "import tinypkg, sys; print(tinypkg.VALUE, sys.prefix)") == (
        f"42 {root / first.fingerprint}"
    )
    assert run_python(sys.executable, "import importlib.util as u; print(u.find_spec('tinypkg'))") == "None"
    digest = hashlib.sha256(wheels["tiny"].read_bytes()).hexdigest()
    assert (root / first.fingerprint / "requirements.txt").read_text() == f"tinypkg==1.0 --hash=sha256:{digest}\n"
    assert first.lock is not None and f"tinypkg==1.0 --hash=sha256:{digest}" in first.lock.splitlines()

    second = EnvironmentCache(root, installer=installer).prepare(env)
    assert not second.built and second.build_log is None
    assert (second.python, second.fingerprint) == (first.python, first.fingerprint)
    assert "cache" in second.description
    assert len(build_logs(root, first.fingerprint)) == 1
    assert not list(root.glob(".tmp-*"))
    assert PreparedEnvironment.from_dict(first.to_dict()) == first


def test_environment_works_after_the_rename(
    tmp_path: Path, wheels: dict[str, Path], installer: InstallerName
) -> None:
    root = tmp_path / "envs"
    prepared = EnvironmentCache(root, installer=installer).prepare(pip_env(wheels["tiny"]))
    bin_dir = root / prepared.fingerprint / "bin"
    for path in bin_dir.iterdir():
        if path.is_file() and not path.is_symlink():
            assert b".tmp-" not in path.read_bytes(), f"{path} still names the temporary folder"
    script = bin_dir / "tinypkg-cli"
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "tinypkg-cli says 42"), done.stderr
    if installer == "pip":
        pip = subprocess.run([str(bin_dir / "pip"), "--version"], capture_output=True, text=True)
        assert pip.returncode == 0 and str(root / prepared.fingerprint) in pip.stdout, pip.stderr


def test_a_requirement_that_is_not_a_wheel_is_refused_before_any_build(
    tmp_path: Path, wheels: dict[str, Path], installer: InstallerName
) -> None:
    root = tmp_path / "envs"
    with pytest.raises(ConfigurationError) as info:
        EnvironmentCache(root, installer=installer).prepare(pip_env(wheels["broken"], name="broken-env"))
    assert not is_retryable(info.value)
    assert "environment.python.pip_packages" in str(info.value) and "brokenpkg" in str(info.value)
    assert not root.exists() or not list(root.iterdir()), "nothing is built for a requirement that cannot resolve"


def test_a_failed_build_raises_with_the_log_tail_and_leaves_nothing(
    tmp_path: Path, wheels: dict[str, Path], installer: InstallerName
) -> None:
    root = tmp_path / "envs"
    env = pip_env(wheels["corrupt"], name="corrupt-env")
    cache = EnvironmentCache(root, installer=installer)
    with pytest.raises(EnvironmentBuildError) as info:
        cache.prepare(env)
    error = info.value
    assert "'corrupt-env'" in str(error) and "pip install" in str(error)
    assert "corruptpkg" in error.log_tail and "[exit code" in error.log_tail  # the installer speaks
    assert error.log_tail in str(error)
    fingerprint = environment_fingerprint(env, sys.version, cache.lock(env))
    assert len(build_logs(root, fingerprint)) == 1
    assert error.log_tail.splitlines()[-1] in build_logs(root, fingerprint)[0].read_text()
    assert not (root / fingerprint).exists()
    assert not list(root.glob(".tmp-*"))

    with pytest.raises(EnvironmentBuildError):  # not remembered as failed: the next prepare retries
        cache.prepare(env)
    assert len(build_logs(root, fingerprint)) == 2


def test_stale_temporary_folders_are_removed_on_a_miss(tmp_path: Path, wheels: dict[str, Path]) -> None:
    root = tmp_path / "envs"
    old, fresh = root / ".tmp-aaaa-crashed", root / ".tmp-bbbb-running"
    for folder in (old, fresh):
        (folder / "bin").mkdir(parents=True)
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    EnvironmentCache(root).prepare(pip_env(wheels["other"]))
    assert not old.exists()
    assert fresh.exists()


# ----------------------------------------------------------------- concurrency
def test_four_threads_build_exactly_once(
    tmp_path: Path, wheels: dict[str, Path], installer: InstallerName
) -> None:
    root = tmp_path / "envs"
    env = pip_env(wheels["tiny"])
    barrier = threading.Barrier(4)
    results: list[PreparedEnvironment] = []
    errors: list[BaseException] = []

    def worker() -> None:
        cache = EnvironmentCache(root, installer=installer)
        barrier.wait()
        try:
            results.append(cache.prepare(env))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not errors
    assert sorted(r.built for r in results) == [False, False, False, True]
    assert len({r.python for r in results}) == 1
    assert len(build_logs(root, results[0].fingerprint)) == 1
    assert run_python(results[0].python, "import tinypkg; print(tinypkg.VALUE)") == "42"


PROCESS_SNIPPET = """
import os, sys, time
from pathlib import Path
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.environments.local_cache import EnvironmentCache
root, installer, go, requirement = sys.argv[1:]
env = Environment("proc-env")
env.add_pip_package(requirement)
cache = EnvironmentCache(Path(root), installer=installer)
cache.python_version()
while not os.path.exists(go):
    time.sleep(0.005)
prepared = cache.prepare(env)
import subprocess
value = subprocess.run([prepared.python, "-c", "import tinypkg; print(tinypkg.VALUE)"],
                       capture_output=True, text=True, check=True).stdout.strip()
print(prepared.built, prepared.python, value)
"""


def test_two_processes_build_exactly_once(
    tmp_path: Path, wheels: dict[str, Path], installer: InstallerName
) -> None:
    root, go = tmp_path / "envs", tmp_path / "go"
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-c", PROCESS_SNIPPET, str(root), installer, str(go), str(wheels["tiny"])]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)
        for _ in range(2)
    ]
    time.sleep(1.0)  # let both import and wait at the start line
    go.touch()
    outputs = [process.communicate(timeout=240) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    lines = sorted(stdout.split() for stdout, _ in outputs)
    assert [line[0] for line in lines] == ["False", "True"]
    assert lines[0][1:] == lines[1][1:] and lines[0][2] == "42"
    fingerprint = Path(lines[0][1]).parent.parent.name
    assert len(build_logs(root, fingerprint)) == 1


def test_a_build_step_that_hangs_times_out(tmp_path: Path, installer: InstallerName) -> None:
    hanging = tmp_path / "hang-1.0-py3-none-any.whl"
    os.mkfifo(hanging)  # the installer blocks opening it, as on a dead network share
    cache = EnvironmentCache(tmp_path / "envs", installer=installer, build_timeout_seconds=3)
    started = time.monotonic()
    with pytest.raises(EnvironmentBuildError) as caught:
        cache.prepare(pip_env(hanging, name="hangs"))
    assert time.monotonic() - started < 60
    assert "timed out after 3 s (build_timeout_seconds)" in caught.value.log_tail
    assert not list((tmp_path / "envs").glob(".tmp-*")), "the half-built environment was left behind"
