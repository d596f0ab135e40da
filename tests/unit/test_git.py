"""read_git_state against real repositories made with the git binary in tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from airflow_provider.core import git as git_module
from airflow_provider.core.errors import ConfigurationError
from airflow_provider.core.git import GitState, read_git_state
from tests.conftest import skip_or_fail

GIT = shutil.which("git")


@pytest.fixture(autouse=True)
def git_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Need git; keep the user's global/system git config and any enclosing repository out."""
    if GIT is None:
        skip_or_fail("the git binary is not installed")
    empty_config = tmp_path / "empty.gitconfig"
    empty_config.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty_config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    # git must not find a repository above tmp_path (in case the temp folder is inside one)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for variable in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(variable, raising=False)


def run_git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.strip()


def make_repo(path: Path, *, commit: bool = True, branch: str = "main") -> Path:
    path.mkdir(parents=True)
    run_git(path, "init", "-q", "-b", branch)
    run_git(path, "config", "user.name", "Test User")
    run_git(path, "config", "user.email", "test@example.com")
    run_git(path, "config", "commit.gpgsign", "false")
    if commit:
        (path / "train.py").write_text("print('hello')\n")
        (path / ".gitignore").write_text("*.log\n")
        run_git(path, "add", "train.py", ".gitignore")
        run_git(path, "commit", "-q", "-m", "first")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", branch="feature/git-state")


def read(path: Path) -> GitState:
    state = read_git_state(path)
    assert state is not None, f"expected a git state for {path}"
    return state


# --- no state -------------------------------------------------------------------------------------


def test_not_a_repository_gives_none(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "train.py").write_text("x = 1\n")
    assert read_git_state(folder) is None


def test_missing_path_gives_none(tmp_path: Path) -> None:
    assert read_git_state(tmp_path / "does" / "not" / "exist") is None


def test_repository_without_commit_gives_none(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "empty", commit=False)
    (repo / "train.py").write_text("x = 1\n")
    run_git(repo, "add", "train.py")  # staged but never committed: HEAD is still unborn
    assert (repo / ".git").is_dir()
    assert read_git_state(repo) is None


def test_git_not_on_path_gives_none(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_git_state(repo) is not None  # the same repo is readable while git is found
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert read_git_state(repo) is None


def write_fake_git(folder: Path, body: str) -> None:
    folder.mkdir(exist_ok=True)
    script = folder / "git"
    script.write_text(f"#!{sys.executable}\n{body}\n")
    script.chmod(0o755)


@pytest.mark.skipif(os.name == "nt", reason="shebang scripts")
def test_git_that_hangs_gives_none_after_the_timeout(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake_git(tmp_path / "bin", "import time\ntime.sleep(30)")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(git_module, "GIT_TIMEOUT_SECONDS", 0.5)
    started = time.monotonic()
    assert read_git_state(repo) is None
    assert time.monotonic() - started < 10


@pytest.mark.skipif(os.name == "nt", reason="shebang scripts")
def test_git_printing_garbage_gives_none(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_git(tmp_path / "bin", "print('not-a-sha')\nprint('at all')\nprint('HEAD')")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert read_git_state(repo) is None


# --- clean and dirty trees ------------------------------------------------------------------------


def test_clean_repository(repo: Path) -> None:
    state = read(repo)
    assert state.commit == run_git(repo, "rev-parse", "HEAD")
    assert len(state.commit) == 40
    assert state.branch == "feature/git-state"
    assert state.dirty is False
    assert state.diff == ""
    assert state.repo_url is None
    assert Path(state.root).resolve() == repo.resolve()


def test_subdirectory_and_file_of_a_repository(repo: Path) -> None:
    sub = repo / "src" / "pkg"
    sub.mkdir(parents=True)
    (sub / "model.py").write_text("W = 1\n")
    run_git(repo, "add", "src")
    run_git(repo, "commit", "-q", "-m", "add model")
    head = run_git(repo, "rev-parse", "HEAD")
    for path in (sub, sub / "model.py"):
        state = read(path)
        assert Path(state.root).resolve() == repo.resolve()
        assert state.commit == head
        assert state.dirty is False


def test_change_outside_the_subdirectory_still_makes_it_dirty(repo: Path) -> None:
    sub = repo / "src"
    sub.mkdir()
    (sub / "a.py").write_text("a = 1\n")
    run_git(repo, "add", "src")
    run_git(repo, "commit", "-q", "-m", "src")
    (repo / "train.py").write_text("print('changed at the top')\n")
    state = read(sub)
    assert state.dirty is True
    assert "+print('changed at the top')" in state.diff
    assert "train.py" in state.diff


def test_modified_tracked_file(repo: Path) -> None:
    (repo / "train.py").write_text("print('hello')\nprint('uncommitted line')\n")
    state = read(repo)
    assert state.dirty is True
    assert "+print('uncommitted line')" in state.diff
    assert "a/train.py" in state.diff


def test_staged_change_is_in_the_diff(repo: Path) -> None:
    (repo / "staged.py").write_text("STAGED = True\n")
    run_git(repo, "add", "staged.py")
    state = read(repo)
    assert state.dirty is True
    assert "+STAGED = True" in state.diff


def test_untracked_file_is_dirty_but_not_in_the_diff(repo: Path) -> None:
    (repo / "notes.txt").write_text("untracked content\n")
    state = read(repo)
    assert state.dirty is True
    assert "untracked content" not in state.diff


def test_ignored_file_is_not_dirty(repo: Path) -> None:
    (repo / "train.log").write_text("ignored\n")
    state = read(repo)
    assert state.dirty is False
    assert state.diff == ""


def test_untracked_files_count_even_when_config_hides_them(repo: Path) -> None:
    run_git(repo, "config", "status.showUntrackedFiles", "no")
    (repo / "notes.txt").write_text("untracked\n")
    assert read(repo).dirty is True


def test_binary_change_gives_a_text_diff(repo: Path) -> None:
    data = bytes(range(256)) * 4
    (repo / "weights.bin").write_bytes(data)
    run_git(repo, "add", "weights.bin")
    run_git(repo, "commit", "-q", "-m", "weights")
    (repo / "weights.bin").write_bytes(data[::-1])
    (repo / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    run_git(repo, "add", "latin1.txt")
    state = read(repo)
    assert state.dirty is True
    assert "GIT binary patch" in state.diff
    assert "weights.bin" in state.diff
    assert "+caf\ufffd" in state.diff  # undecodable byte replaced, not an exception
    state.diff.encode("utf-8")  # storable as UTF-8 text


def test_file_named_head_in_the_tree(repo: Path) -> None:
    (repo / "HEAD").write_text("not a ref\n")
    (repo / "train.py").write_text("print('changed')\n")
    state = read(repo)
    assert state.commit == run_git(repo, "rev-parse", "HEAD")
    assert state.dirty is True
    assert "+print('changed')" in state.diff


# --- branch ---------------------------------------------------------------------------------------


def test_detached_head_has_no_branch(repo: Path) -> None:
    first = run_git(repo, "rev-parse", "HEAD")
    (repo / "train.py").write_text("print('second')\n")
    run_git(repo, "commit", "-q", "-am", "second")
    run_git(repo, "checkout", "-q", "--detach", first)
    state = read(repo)
    assert state.branch is None
    assert state.commit == first
    assert state.commit != run_git(repo, "rev-parse", "feature/git-state")
    assert "mlflow.source.git.branch" not in state.mlflow_tags()


def test_branch_is_not_confused_with_a_tag_of_the_same_name(repo: Path) -> None:
    run_git(repo, "tag", "feature/git-state")
    assert read(repo).branch == "feature/git-state"


# --- origin URL -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:secret@example.com/org/repo.git", "https://example.com/org/repo.git"),
        ("https://user:secret@example.com:8443/org/repo.git", "https://example.com:8443/org/repo.git"),
        ("https://secret@example.com/org/repo.git", "https://example.com/org/repo.git"),
        ("http://user:secret@example.com/org/repo.git", "http://example.com/org/repo.git"),
        ("ssh://git:secret@example.com:2222/org/repo.git", "ssh://git@example.com:2222/org/repo.git"),
        ("https://example.com/org/repo.git", "https://example.com/org/repo.git"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("ssh://git@example.com/org/repo.git", "ssh://git@example.com/org/repo.git"),
        ("/srv/git/repo.git", "/srv/git/repo.git"),
        # issue 12: userinfo of every scheme, and credential-looking query parameters
        ("ftp://user:secret@example.com/org/repo.git", "ftp://example.com/org/repo.git"),
        ("git+https://user:secret@example.com/org/repo.git", "git+https://example.com/org/repo.git"),
        ("git://secret@example.com/org/repo.git", "git://example.com/org/repo.git"),
        ("https://example.com/org/repo.git?private_token=secret", "https://example.com/org/repo.git"),
        ("https://example.com/org/repo.git?ref=main&access_token=secret&x=1", "https://example.com/org/repo.git?ref=main&x=1"),
        ("ssh://git:secret@example.com/org/repo.git?key=secret", "ssh://git@example.com/org/repo.git"),
    ],
)
def test_origin_url(repo: Path, url: str, expected: str) -> None:
    run_git(repo, "remote", "add", "origin", url)
    state = read(repo)
    assert state.repo_url == expected
    # (root is left out: tmp_path's name contains the test id, and so the URL)
    assert "secret" not in repr(replace(state, root=""))
    assert "secret" not in str(replace(state, root="").to_dict())
    assert state.mlflow_tags()["mlflow.source.git.repoURL"] == expected


def test_https_origin_loses_user_and_token(repo: Path) -> None:
    run_git(repo, "remote", "add", "origin", "https://user:secret@example.com/org/repo.git")
    state = read(repo)
    assert state.repo_url is not None
    assert "secret" not in state.repo_url
    assert "user" not in state.repo_url
    assert "example.com/org/repo.git" in state.repo_url


def test_other_remote_than_origin_is_ignored(repo: Path) -> None:
    run_git(repo, "remote", "add", "upstream", "https://example.com/upstream.git")
    assert read(repo).repo_url is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://u:p-secret@example.com/repo.git", "ftp://example.com/repo.git"),
        ("git+https://u:p-secret@example.com/repo.git", "git+https://example.com/repo.git"),
        ("git+ssh://git:p-secret@example.com/repo.git", "git+ssh://git@example.com/repo.git"),
        ("s3://AKIA:p-secret@bucket/repo.git", "s3://bucket/repo.git"),
        ("https://example.com/repo.git?private_token=p-secret", "https://example.com/repo.git"),
        ("https://example.com/repo.git?token=p-secret", "https://example.com/repo.git"),
        ("https://example.com/repo.git?Access_Token=p-secret", "https://example.com/repo.git"),
        ("https://example.com/repo.git?password=p-secret&user=me", "https://example.com/repo.git?user=me"),
        ("https://example.com/repo.git?key=p-secret", "https://example.com/repo.git"),
        ("https://example.com/repo.git?api_key=p-secret", "https://example.com/repo.git"),
        ("https://example.com/repo.git?sv=2024&sig=p-secret", "https://example.com/repo.git?sv=2024"),
        ("https://example.com/repo.git?X-Amz-Signature=p-secret&X-Amz-Credential=p-secret",
         "https://example.com/repo.git"),
        ("https://example.com/repo.git?client_secret=p-secret#readme", "https://example.com/repo.git#readme"),
        ("https://example.com/repo.git?ref=main", "https://example.com/repo.git?ref=main"),
        ("https://example.com/org/repo@v1.git", "https://example.com/org/repo@v1.git"),
    ],
)
def test_credentials_are_stripped_from_any_scheme_and_the_query(url: str, expected: str) -> None:
    stripped = git_module._strip_credentials(url)
    assert stripped == expected
    assert "p-secret" not in stripped


def test_unparseable_url_with_credentials_is_dropped() -> None:
    assert git_module._strip_credentials("https://user:secret@[::1/x") is None
    assert git_module._strip_credentials("https://[::1/x") == "https://[::1/x"


# --- tags and serialisation -----------------------------------------------------------------------


def test_mlflow_tags(repo: Path) -> None:
    run_git(repo, "remote", "add", "origin", "git@github.com:org/repo.git")
    state = read(repo)
    assert state.mlflow_tags() == {
        "mlflow.source.git.commit": run_git(repo, "rev-parse", "HEAD"),
        "mlflow.source.git.branch": "feature/git-state",
        "mlflow.source.git.repoURL": "git@github.com:org/repo.git",
        "training.git.dirty": "false",
    }
    (repo / "train.py").write_text("changed\n")
    assert read(repo).mlflow_tags()["training.git.dirty"] == "true"


def test_mlflow_tags_leave_out_unknown_branch_and_url() -> None:
    state = GitState(commit="a" * 40, branch=None, repo_url=None, dirty=True, diff="d", root="/r")
    assert state.mlflow_tags() == {"mlflow.source.git.commit": "a" * 40, "training.git.dirty": "true"}


def test_to_dict_round_trip(repo: Path) -> None:
    (repo / "train.py").write_text("changed\n")
    state = read(repo)
    data = state.to_dict()
    assert set(data) == {"commit", "branch", "repo_url", "dirty", "diff", "root"}
    assert data["dirty"] is True
    assert GitState.from_dict(data) == state


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"commit": None},
        {"dirty": "true"},
        {"branch": 3},
    ],
)
def test_from_dict_rejects_bad_data(change: dict[str, object]) -> None:
    data = GitState(commit="a" * 40, branch="main", repo_url=None, dirty=False, diff="", root="/r").to_dict()
    data.update(change)
    with pytest.raises(ConfigurationError):
        GitState.from_dict(data)


def test_from_dict_rejects_missing_key() -> None:
    data = GitState(commit="a" * 40, branch="main", repo_url=None, dirty=False, diff="", root="/r").to_dict()
    del data["root"]
    with pytest.raises(ConfigurationError, match="root"):
        GitState.from_dict(data)


def test_diff_is_left_out_of_repr() -> None:
    state = GitState(commit="a" * 40, branch=None, repo_url=None, dirty=True, diff="SECRET-DIFF", root="/r")
    assert "SECRET-DIFF" not in repr(state)


# --- how git is called ----------------------------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="shebang scripts")
def test_number_of_git_calls_and_environment(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    write_fake_git(
        tmp_path / "bin",
        "import os, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(repr((sys.argv[1:], os.environ.get('GIT_TERMINAL_PROMPT'), os.environ.get('LC_ALL')))"
        " + '\\n')\n"
        f"os.execv({GIT!r}, [{GIT!r}, *sys.argv[1:]])",
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))  # must not redirect git

    assert read(repo).dirty is False
    clean_calls = [eval(line) for line in log.read_text().splitlines()]
    assert len(clean_calls) == 3
    for argv, prompt, lc_all in clean_calls:
        assert argv[:2] == ["-C", str(repo)] or Path(argv[1]).resolve() == repo.resolve()
        assert "safe.directory=*" in argv
        assert prompt == "0"
        assert lc_all == "C"
    assert not any("diff" in argv for argv, _, _ in clean_calls)

    log.unlink()
    (repo / "train.py").write_text("changed\n")
    assert read(repo).dirty is True
    dirty_calls = [eval(line) for line in log.read_text().splitlines()]
    assert len(dirty_calls) == 4
    assert sum("diff" in argv for argv, _, _ in dirty_calls) == 1


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_repository_owned_by_another_user(repo: Path, tmp_path: Path) -> None:
    subprocess.run(["chown", "-R", "65534:65534", str(tmp_path)], check=True)
    # plain git refuses this checkout, so the read below really depends on safe.directory=*
    plain = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert plain.returncode != 0
    assert "dubious ownership" in plain.stderr
    state = read(repo)
    assert state.branch == "feature/git-state"
    assert state.dirty is False
