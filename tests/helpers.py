"""Small helpers shared by tests: writing training scripts, inspecting processes."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import os
import textwrap
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def write_script(folder: Path, body: str, name: str = "train.py") -> Path:
    """Write a dedented training script into ``folder`` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def processes_in_group(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, message: str = "condition") -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(0.05)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(folder: Path, name: str, version: str, module: str, entry_points: str = "",
               extra_files: dict[str, str] | None = None) -> Path:
    """Write a minimal pure-Python wheel by hand (a zip with dist-info) and return its path.

    ``extra_files`` maps more paths inside the wheel (e.g. ``"azureml/core/__init__.py"``) to their text.
    """
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": module.encode(),
        **{path: text.encode() for path, text in (extra_files or {}).items()},
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: handmade\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    if entry_points:
        files[f"{dist_info}/entry_points.txt"] = entry_points.encode()
    record = [_record_line(path, data) for path, data in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return parents


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    parents = _parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier and child not in found}
        found |= frontier
    return {p for p in found if pid_alive(p)}


def stop_process_tree(pid: int, grace: float = 30.0) -> None:
    """Stop ``pid`` and everything it started, even what left its process group (an ``airflow
    standalone``'s scheduler and its executor's workers): SIGTERM to all, ``grace`` seconds, SIGKILL.
    The tree is taken before the first signal, so children re-parented to init when their parent
    exits are stopped too."""
    import signal

    tree = {pid} | descendants(pid)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for member in tree:
            with contextlib.suppress(OSError):
                os.kill(member, signum)
        deadline = time.monotonic() + (grace if signum == signal.SIGTERM else 10)
        while time.monotonic() < deadline:
            tree = {p for p in tree | {c for p in tree for c in descendants(p)} if pid_alive(p)}
            if not tree:
                return
            time.sleep(0.1)


def remove_new_images(client: Any, before: set[str]) -> None:
    """Remove the environment images made since ``before`` (image ids), newest first: an image of
    pip packages is built FROM the image of its Dockerfile, and a parent goes after its children."""
    from airflow_provider.core.environments.docker_images import IMAGE_REPOSITORY

    images = [image for image in client.images.list(IMAGE_REPOSITORY) if image.id not in before]
    for image in sorted(images, key=lambda image: str(image.attrs.get("Created", "")), reverse=True):
        client.images.remove(image.id, force=True)


class _Files(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # a new release is seen at once (uv caches pages)
        super().end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on a free loopback port (a package index, a conda channel) and
    yield its URL; nothing is cached by clients, so a file added later is seen at once."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Files, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


GROWING_LOG_SCRIPT = """
    import time
    with open("logs/progress.log", "w") as out:
        out.write("half way\\n")
    time.sleep(3)
    with open("logs/progress.log", "a") as out:
        out.write("three quarters\\n")
    time.sleep(3)
"""
"""A script whose ``./logs/progress.log`` grows while it runs (a part, then the appended bytes)."""


def assert_live_log_parts(run: Any, scratch: Path) -> None:
    """``run`` (of :data:`GROWING_LOG_SCRIPT`) uploaded its growing log while it went on as contiguous
    parts, each byte once, and the whole file at its end."""
    from mlflow.tracking import MlflowClient

    from airflow_provider.core.live_logs import LIVE_LOGS, Part

    listed = MlflowClient().list_artifacts(run.id, f"{LIVE_LOGS}/progress.log")
    parts = sorted((part for part in (Part.parse(Path(entry.path).name) for entry in listed) if part is not None),
                   key=lambda part: part.start)
    assert parts and len(parts) == len(listed), "parts uploaded while the run went on"
    assert all(part.generation == 0 for part in parts)
    assert [part.start for part in parts] == [0, *(part.end for part in parts[:-1])], "contiguous: each byte once"
    assert parts[-1].end == len("half way\nthree quarters\n")
    assert run.download_file("logs/progress.log", scratch / "p.log").read_text() == "half way\nthree quarters\n"


def rewrite_bookkeeping(run_id: str, **changes: Any) -> None:
    """Change fields of a run's bookkeeping tag the way another process (or a tampering script with
    MLflow access) would: straight through MLflow, behind this process's back."""
    import json

    from mlflow import MlflowClient

    from airflow_provider.core.bookkeeping import BOOKKEEPING_TAG, read_bookkeeping

    client = MlflowClient()
    data = {**read_bookkeeping(client.get_run(run_id).data.tags), **changes}
    client.set_tag(run_id, BOOKKEEPING_TAG, json.dumps(data, sort_keys=True))


def script_metrics(run_id: str) -> dict[str, float]:
    """The run's latest metrics without the sampler's ``system/`` ones, whose presence depends on run length."""
    from mlflow.tracking import MlflowClient

    from airflow_provider.core.run_history import SYSTEM_METRICS_PREFIX

    metrics = MlflowClient().get_run(run_id).data.metrics
    return {key: value for key, value in metrics.items() if not key.startswith(SYSTEM_METRICS_PREFIX)}
