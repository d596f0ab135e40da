"""Locks: what installers are given, what is recorded (never credentials), where wheels come from."""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider.core.environments.locking import (
    Lock,
    LockedPackage,
    TargetPlatform,
    absolute_paths,
    lock_requirements,
    redact,
)
from airflow_provider.core.environments.wheels import WheelStore
from airflow_provider.core.errors import ConfigurationError, is_retryable
from tests.helpers import make_wheel

PLATFORM = TargetPlatform.from_facts("3.11.2", "x86_64", "glibc 2.36")


def _lock(install_from: str, *requested: str) -> Lock:
    package = LockedPackage("six", "1.17.0", "six-1.17.0-py2.py3-none-any.whl", "ab" * 32,
                            "https://files.example/six-1.17.0-py2.py3-none-any.whl")
    return Lock(PLATFORM, (package,), tuple(requested), "2026-12-05T00:00:00Z", install_from)  # type: ignore[arg-type]


def test_index_options_reach_an_installer_that_uses_an_index_and_credentials_never_reach_the_record() -> None:
    requested = ("--extra-index-url https://alice:s3cret@pkgs.example/simple", "--trusted-host pkgs.example",
                 "-f /local/wheels", "six")
    target = _lock("target", *requested)
    assert target.requirement_lines() == [
        "--extra-index-url https://alice:s3cret@pkgs.example/simple", "--trusted-host pkgs.example",
        f"six==1.17.0 --hash=sha256:{'ab' * 32}"]
    assert _lock("submitter", *requested).requirement_lines() == [f"six==1.17.0 --hash=sha256:{'ab' * 32}"]
    text = target.text()
    assert "s3cret" not in text and "alice" not in text and "https://***@pkgs.example/simple" in text
    assert redact("git+https://token@github.example/x.git") == "git+https://***@github.example/x.git"


def test_relative_paths_are_the_users_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     isolated_state: Path) -> None:
    (tmp_path / "dist").mkdir()
    make_wheel(tmp_path / "dist", "relpkg", "1.0", "V = 1\n")
    monkeypatch.chdir(tmp_path)
    assert absolute_paths(["./dist/relpkg-1.0-py3-none-any.whl", "-f ../x", "six>=1"]) == [
        f"{tmp_path}/dist/relpkg-1.0-py3-none-any.whl", f"-f {tmp_path.parent}/x", "six>=1"]
    lock = lock_requirements(["./dist/relpkg-1.0-py3-none-any.whl"], PLATFORM)
    assert [(p.name, p.version) for p in lock.packages] == [("relpkg", "1.0")]


class _Index(http.server.BaseHTTPRequestHandler):
    content = b""
    expected = ""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Basic {self.expected}":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.content)))
        self.end_headers()
        self.wfile.write(self.content)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def index_server(tmp_path: Path) -> Iterator[str]:
    wheel = make_wheel(tmp_path, "privpkg", "1.0", "V = 1\n")
    _Index.content = wheel.read_bytes()
    _Index.expected = base64.b64encode(b"alice:s3cret").decode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_a_private_index_gets_its_credentials_and_a_refusal_is_not_retried(index_server: str,
                                                                           tmp_path: Path) -> None:
    digest = hashlib.sha256(_Index.content).hexdigest()
    package = LockedPackage("privpkg", "1.0", "privpkg-1.0-py3-none-any.whl", digest,
                            f"http://{index_server}/files/privpkg-1.0-py3-none-any.whl", len(_Index.content))
    without = Lock(PLATFORM, (package,), ("privpkg",), "now")
    with pytest.raises(ConfigurationError) as caught:
        WheelStore(tmp_path / "store").fetch(without)
    assert "401" in str(caught.value) and "credentials" in str(caught.value) and not is_retryable(caught.value)

    with_login = Lock(PLATFORM, (package,), (f"--index-url http://alice:s3cret@{index_server}/simple", "privpkg"),
                      "now")
    stored = WheelStore(tmp_path / "store").fetch(with_login)
    assert stored[digest].read_bytes() == _Index.content
