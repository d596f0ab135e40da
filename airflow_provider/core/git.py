"""The git state of a source folder, recorded with each run.

:func:`read_git_state` asks the ``git`` binary (no GitPython) which commit, branch and remote a
folder belongs to and whether it has uncommitted changes. It never raises: a folder outside any
repository, a repository without a commit, a missing ``git`` binary or a git call that fails or
times out all give ``None``, so a run is never refused because its source is not under git.

At most four git processes are started (three for a clean tree)::

    git rev-parse --show-toplevel HEAD --symbolic-full-name HEAD   root, commit, branch
    git status --porcelain --untracked-files=normal                dirty?
    git diff --binary HEAD --                                      only when dirty
    git config --get remote.origin.url                             origin URL

Every call runs with ``-c safe.directory=*`` (a checkout owned by another user, e.g. a mounted
volume, is still read), ``GIT_TERMINAL_PROMPT=0``, ``LC_ALL=C``, ``GIT_OPTIONAL_LOCKS=0`` (status
does not rewrite the index) and a timeout. Credentials in the origin URL (the userinfo of any
scheme, credential-looking query parameters) are removed before the URL is stored anywhere.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from airflow_provider.core.errors import ConfigurationError

__all__ = ["GitState", "read_git_state"]

GIT_TIMEOUT_SECONDS = 10.0
"""Seconds one git call may take before the state is given up as unreadable."""

TAG_COMMIT = "mlflow.source.git.commit"
TAG_BRANCH = "mlflow.source.git.branch"
TAG_REPO_URL = "mlflow.source.git.repoURL"
TAG_DIRTY = "training.git.dirty"

# Variables that would make git look at another repository than the one ``-C path`` points to
# (they are set, for example, when code runs inside a git hook).
_REPO_LOCATING_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_BRANCH_PREFIX = "refs/heads/"
# Schemes whose password is dropped but whose user name (not a secret, like ``git@`` in
# ``git@host:x``) is kept; every other scheme loses its whole userinfo (for http(s) the "user" is
# often the token itself).
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})
# Query parameters dropped from a URL: a name holding one of these words (case-insensitive) is taken
# for a credential (token, private_token, access_token, password, key, api_key, sig, X-Amz-Signature, ...).
_CREDENTIAL_PARAMETER = re.compile(r"token|pass|pwd|secret|key|sig|auth|credential|session", re.IGNORECASE)


@dataclass(frozen=True)
class GitState:
    """Where a source folder stands in git.

    :param commit: full sha of ``HEAD``.
    :param branch: the checked-out branch, ``None`` when ``HEAD`` is detached.
    :param repo_url: ``origin``'s URL without credentials, ``None`` when there is no ``origin``.
    :param dirty: whether there are uncommitted changes: staged, unstaged, or untracked files that
        are not ignored.
    :param diff: ``git diff --binary HEAD`` of the uncommitted changes to tracked files, decoded as
        UTF-8 (undecodable bytes replaced); ``""`` when the tree is clean.
    :param root: the repository's top-level folder.
    """

    commit: str
    branch: str | None
    repo_url: str | None
    dirty: bool
    diff: str = field(repr=False)
    root: str

    def mlflow_tags(self) -> dict[str, str]:
        """Return the MLflow tags describing this state.

        ``mlflow.source.git.commit`` and ``training.git.dirty`` (``"true"``/``"false"``) always;
        ``mlflow.source.git.branch`` and ``mlflow.source.git.repoURL`` only when known.
        """
        tags = {TAG_COMMIT: self.commit}
        if self.branch:
            tags[TAG_BRANCH] = self.branch
        if self.repo_url:
            tags[TAG_REPO_URL] = self.repo_url
        tags[TAG_DIRTY] = "true" if self.dirty else "false"
        return tags

    def to_dict(self) -> dict[str, Any]:
        """Serialise to plain JSON types (XCom, run metadata)."""
        return {
            "commit": self.commit,
            "branch": self.branch,
            "repo_url": self.repo_url,
            "dirty": self.dirty,
            "diff": self.diff,
            "root": self.root,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GitState:
        """Rebuild a state from :meth:`to_dict` output.

        :param data: the serialised state.
        :raises ConfigurationError: on unknown or missing keys or a value of the wrong type.
        """
        known = {"commit", "branch", "repo_url", "dirty", "diff", "root"}
        unknown = set(data) - known
        missing = known - set(data)
        if unknown or missing:
            problem = f"unknown keys {sorted(unknown)}" if unknown else f"missing keys {sorted(missing)}"
            raise ConfigurationError("git_state", problem, f"use exactly the keys {sorted(known)}.")
        for key in ("commit", "diff", "root"):
            if not isinstance(data[key], str):
                raise ConfigurationError(f"git_state.{key}", "must be a string.")
        for key in ("branch", "repo_url"):
            if data[key] is not None and not isinstance(data[key], str):
                raise ConfigurationError(f"git_state.{key}", "must be a string or null.")
        if not isinstance(data["dirty"], bool):
            raise ConfigurationError("git_state.dirty", "must be true or false.")
        return cls(
            commit=data["commit"],
            branch=data["branch"],
            repo_url=data["repo_url"],
            dirty=data["dirty"],
            diff=data["diff"],
            root=data["root"],
        )


def read_git_state(path: str | Path) -> GitState | None:
    """Read the git state of the repository containing ``path``.

    :param path: a folder (or a file) inside the working tree of a repository.
    :returns: the state, or ``None`` when git is not installed, ``path`` is not inside a working
        tree, the repository has no commit yet, or a git call fails or times out. Never raises.
    """
    try:
        return _read(Path(path))
    except Exception:  # never let a git problem stop a run; the state is optional metadata
        return None


def _read(path: Path) -> GitState | None:
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        return None
    env = _git_env()

    head = _git(folder, env, "rev-parse", "--show-toplevel", "HEAD", "--symbolic-full-name", "HEAD")
    if head is None:
        return None
    lines = head.split(b"\n")
    if len(lines) < 3 or not lines[0]:
        return None
    root_text = os.fsdecode(lines[0])
    commit = lines[1].decode("ascii", "replace")
    ref = lines[2].decode("utf-8", "replace")
    if not _SHA.fullmatch(commit):
        return None
    branch = ref[len(_BRANCH_PREFIX) :] if ref.startswith(_BRANCH_PREFIX) else None
    root = Path(root_text)

    status = _git(root, env, "status", "--porcelain", "--untracked-files=normal")
    if status is None:
        return None
    dirty = bool(status.strip())

    diff = ""
    if dirty:
        raw_diff = _git(
            root, env, "diff", "--binary", "--no-color", "--no-ext-diff", "--no-textconv", "HEAD", "--"
        )
        if raw_diff is None:
            return None
        diff = raw_diff.decode("utf-8", "replace")

    url = _git(root, env, "config", "--get", "remote.origin.url")  # exit 1: no origin
    url_text = url.decode("utf-8", "replace").strip() if url else ""
    return GitState(
        commit=commit,
        branch=branch,
        repo_url=_strip_credentials(url_text) if url_text else None,
        dirty=dirty,
        diff=diff,
        root=root_text,
    )


def _git_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _REPO_LOCATING_VARIABLES}
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"})
    return env


def _git(cwd: Path, env: dict[str, str], *args: str) -> bytes | None:
    """Run one git command; its stdout, or ``None`` when git is missing, fails or times out."""
    command = ["git", "-C", str(cwd), "-c", "safe.directory=*", "-c", "core.quotePath=false", *args]
    try:
        result = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout


def _strip_credentials(url: str) -> str | None:
    """Remove secrets from a remote URL; ``None`` when the URL cannot be parsed safely.

    ``https://user:token@host:8443/x`` becomes ``https://host:8443/x`` (the userinfo of every
    scheme: ``ftp://``, ``git+https://``, ...); ``ssh://git:pw@host/x`` becomes ``ssh://git@host/x``;
    query parameters that look like credentials (``?private_token=``, ``?sig=``, ...) are dropped.
    Scp-like ``git@host:x`` and local paths are kept.

    :param url: the URL as configured in ``remote.origin.url``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None if "@" in url or "?" in url else url
    if not parts.scheme or (not parts.netloc and not parts.query):
        return url  # a local path, or scp-like user@host:path (no password there)
    netloc = _strip_userinfo(parts.scheme.lower(), parts.netloc)
    return urlunsplit((parts.scheme, netloc, parts.path, _strip_query(parts.query), parts.fragment))


def _strip_userinfo(scheme: str, netloc: str) -> str:
    if "@" not in netloc:
        return netloc
    userinfo, _, hostport = netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return f"{user}@{hostport}" if scheme in _SSH_SCHEMES and user else hostport


def _strip_query(query: str) -> str:
    if not query:
        return query
    kept = [pair for pair in query.split("&") if not _CREDENTIAL_PARAMETER.search(unquote(pair.partition("=")[0]))]
    return "&".join(kept)
