"""The supervisor of one detached job: standard library only, runnable as a plain file.

Every target starts ``python3 job_runner.py JOB_DIR`` as the leader of a new session, on the
machine where the job runs (this machine, a container, an SSH host). It reads ``job.json``, starts
the user's command as the leader of its own process group with stdout and stderr appended to
``driver.log``, and records everything a watcher needs in files, so that any watcher, started at
any time, can find the job, read its log from a byte offset, and learn how it ended:

``runner.json``  pids, process group and start time, written atomically once the command started;
``exit.json``    how it ended (exit code, signal, reason, message), written atomically last.

The runner enforces ``max_run_duration_seconds`` itself (it holds when no watcher is alive), and on
SIGTERM (a cancel) stops the whole process tree: SIGTERM to the command's process group and every
descendant (the runner is a child subreaper, so orphaned grandchildren stay its descendants), a
grace period, then SIGKILL. When the command exits, processes it left behind are stopped the same
way: nothing of the run survives its end.
"""

from __future__ import annotations

import os
import sys
import time

# The supervisor imports only what it runs with: in a fresh container whose image holds no compiled
# standard library, every module imported is compiled first (typing alone costs ~10 ms there).
# ``json`` and ``signal`` (with ``re`` and ``enum``, ~10 ms) are imported where used: given its
# launch parameters (``main(..., launch=...)``), the supervisor starts the command before either.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping
    from typing import Any, TypedDict, cast

    class JobJson(TypedDict, total=False):
        """``job.json``: what to run (written by the submitting side, read once by the supervisor)."""

        argv: list[str]
        env: dict[str, str]
        secret_env: list[str]  # names in env whose values are removed once read
        unset_env: list[str]
        path_prepend: list[str]
        max_run_duration_seconds: float | None
        grace_seconds: float
        cwd: str
        echo_output: bool  # also copy driver.log to the supervisor's stdout as it grows (containers)
        host_resources: dict[str, Any]  # GPUs, CPUs, memory on a shared host (:mod:`host_resources`)
        node_reservations: dict[str, Any]  # GPUs on the other nodes of a multi-node run (NodeHolders)
        system_metrics_interval_seconds: float | None  # sample the node's use (:mod:`system_metrics`)

    class RunnerJson(TypedDict, total=False):
        """``runner.json``: the supervisor, and once started the command (pids, start ticks)."""

        runner_pid: int
        runner_start_ticks: int | None
        child_pid: int
        child_pgid: int
        child_start_ticks: int | None
        started_at: float
        queued: str  # before the command starts: why it waits (GPUs of the host all reserved)

    class ExitJson(TypedDict, total=False):
        """``exit.json``: how the job ended, written atomically last."""

        exit_code: int | None
        signal: int | None
        reason: str  # REASON_EXITED, REASON_TIMEOUT, REASON_CANCELED or REASON_LAUNCH_FAILED
        message: str
        ended_at: float
        driver_log_bytes: int  # with echo_output: the size of driver.log at the end
        absent: list[str]  # which of COLLECTED_PATHS did not exist at the end
else:
    JobJson = RunnerJson = ExitJson = dict

    def cast(_type: object, value: object) -> object:
        return value

JOB_SPEC = "job.json"
RUNNER_STATE = "runner.json"
EXIT_STATE = "exit.json"
EXIT_LINE_PREFIX = "training-runs-exit: "
DRIVER_LOG = "driver.log"
EVENTS_FILE = "events.jsonl"
UPLOADS_DIR = "uploads"
WORK_DIR = "work"
RANKS_DIR = "ranks"  # per-rank logs of distributed runs
COLLECTED_PATHS = (EVENTS_FILE, RANKS_DIR, f"{WORK_DIR}/outputs", f"{WORK_DIR}/logs")
"""What a watcher reads from the job folder once the job has ended; ``exit.json`` says which were
absent (or empty folders), so a watcher that must fetch each file over a connection skips those."""
RUNNER_LOG = "runner.log"  # the supervisor's own output
LAUNCH_MARKER = ".launched"  # created (exclusively) by a launch in progress or done
JOB_MARKER_VARIABLE = "TRAINING_RUN_JOB_DIR"
"""Set by the supervisor to the job folder in the command's environment; every process the command
starts inherits it, so a job's processes are found even after they left its session."""

REASON_EXITED = "exited"
REASON_TIMEOUT = "timeout"
REASON_CANCELED = "canceled"
REASON_LAUNCH_FAILED = "launch_failed"

_LAUNCHER_HINTS = {
    "mpirun": " (MpiConfiguration needs Open MPI where the job runs: install openmpi-bin there, or use an "
              "image that has it)",
}
ECHO_INTERVAL_SECONDS = 0.1
"""With ``echo_output``: the longest time between a line reaching driver.log and stdout."""
_STOP_SIGNAL_NAMES = ("SIGTERM", "SIGINT", "SIGHUP")
_PR_SET_CHILD_SUBREAPER = 36


def runtime_module(name: str) -> Any:
    """A module of the runtime shipped beside this file (imported when a job needs it: the
    supervisor runs as a plain file under ``-I -S``, or as part of the package).

    :param name: the module's name, e.g. ``"system_metrics"``.
    """
    import importlib

    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    folder = os.path.dirname(os.path.abspath(__file__))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def write_json_atomically(path: str, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    temporary = f"{path}.tmp.{os.getpid()}"
    import json

    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (from /proc); None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def is_alive(pid: int, start_ticks: int | None) -> bool:
    """True when ``pid`` runs and is the same process that started at ``start_ticks``."""
    ticks = process_start_ticks(pid)
    return ticks is not None and (start_ticks is None or ticks == start_ticks)


def _parent_and_group(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def tree_members(root_pid: int, group: int) -> set[int]:
    """Every live descendant of ``root_pid`` and every member of process group ``group``."""
    parents: dict[int, int] = {}
    members: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        facts = _parent_and_group(int(entry))
        if facts is None:
            continue
        parents[int(entry)] = facts[0]
        if facts[1] == group:
            members.add(int(entry))
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if pid not in members and (parent == root_pid or parent in members):
                members.add(pid)
                changed = True
    members.discard(root_pid)
    return members


def stop_orphaned_command(state: RunnerJson, grace_seconds: float, job_dir: str | None = None) -> str:
    """Stop the command of a job whose supervisor is gone, if it still runs (same start time), and
    every process that carries the job's marker (a daemon that left the command's session).

    :param state: the job's ``runner.json``.
    :param grace_seconds: how long SIGTERM is given before SIGKILL.
    :param job_dir: the job folder (its processes carry it in :data:`JOB_MARKER_VARIABLE`).
    :return: a note for the status message ("" when there was nothing to stop).
    """
    child = state.get("child_pid")
    marked = _marked_processes(job_dir) if job_dir else set()
    if child and is_alive(int(child), state.get("child_start_ticks")):
        marked |= tree_members(int(child), int(child)) | {int(child)}
    if not marked:
        return ""
    _stop_without_runner(marked, grace_seconds)
    return " (its command, left running, was stopped)"


def _marked_processes(job_dir: str) -> set[int]:
    """The processes whose environment names this job folder (the command and what it started)."""
    marker = f"{JOB_MARKER_VARIABLE}={os.path.abspath(job_dir)}".encode()
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if marker in handle.read().split(b"\0"):
                    found.add(int(entry))
        except OSError:
            continue
    return found


def _stop_without_runner(members: set[int], grace_seconds: float) -> None:
    import signal

    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in members:
            _kill(pid, signum)
        deadline = time.monotonic() + (grace_seconds if signum == signal.SIGTERM else 5)
        while time.monotonic() < deadline:
            members = {p for p in members if process_start_ticks(p) is not None}
            if not members:
                return
            time.sleep(0.05)


def read_job_json(job_dir: str) -> JobJson | None:
    """The job folder's ``job.json`` (None when missing or half-written)."""
    return cast("JobJson | None", read_json(os.path.join(job_dir, JOB_SPEC)))


def read_runner_json(job_dir: str) -> RunnerJson | None:
    """The job folder's ``runner.json`` (None when missing or half-written)."""
    return cast("RunnerJson | None", read_json(os.path.join(job_dir, RUNNER_STATE)))


def read_exit_json(job_dir: str) -> ExitJson | None:
    """The job folder's ``exit.json`` (None while the job has not ended)."""
    return cast("ExitJson | None", read_json(os.path.join(job_dir, EXIT_STATE)))


def read_json(path: str) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing or half-written."""
    import json

    try:
        with open(path) as stream:
            data: dict[str, Any] = json.load(stream)
            return data
    except (OSError, ValueError):
        return None


def cancel_job(job_dir: str, grace_seconds: float, wait: bool) -> None:
    """Stop a job's whole process tree, on the machine where it runs.

    SIGTERM to its supervisor, which stops the tree (its own grace period, then SIGKILL) and
    records the ending; with ``wait``, wait for that, and when the supervisor is gone or stuck,
    stop the command's tree directly and record the cancel in ``exit.json``.

    :param job_dir: the job folder.
    :param grace_seconds: time between SIGTERM and SIGKILL.
    :param wait: wait until the job has ended (False: signal the supervisor and return).
    """
    exit_path = os.path.join(job_dir, EXIT_STATE)
    if os.path.exists(exit_path) or not os.path.isdir(job_dir):
        return  # ended, or never staged here: nothing to stop
    import signal

    state: RunnerJson = read_runner_json(job_dir) or {}
    runner_pid = state.get("runner_pid")
    if runner_pid and is_alive(int(runner_pid), state.get("runner_start_ticks")):
        os.kill(int(runner_pid), signal.SIGTERM)  # the runner stops the tree and writes exit.json
        if not wait:
            return
        deadline = time.monotonic() + grace_seconds + 10
        while time.monotonic() < deadline:
            if os.path.exists(exit_path) or not is_alive(int(runner_pid), state.get("runner_start_ticks")):
                if os.path.exists(exit_path):
                    return
                break
            time.sleep(0.02)
    # The supervisor is gone or stuck: stop the command's tree ourselves and record it.
    stop_orphaned_command(state, grace_seconds, job_dir)
    if not os.path.exists(exit_path):
        write_json_atomically(exit_path, {
            "exit_code": None, "signal": None, "reason": REASON_CANCELED,
            "message": "the run was canceled (its supervisor was not running)", "ended_at": time.time(),
        })


def runner_log_tail(job_dir: str) -> str:
    """The end of the supervisor's own log (what it printed before it could record anything)."""
    try:
        with open(os.path.join(job_dir, RUNNER_LOG), errors="replace") as log:
            return log.read()[-2000:] or "(runner.log is empty)"
    except OSError:
        return "(no runner.log)"


def start_supervisor(job_dir: str, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Start ``python3 job_runner.py JOB_DIR`` as the leader of a new session, with this
    interpreter, and wait until it has started the command (``runner.json``).

    :param job_dir: a job folder holding ``job.json``.
    :param timeout: seconds the supervisor may take to start the command.
    :raises RuntimeError: the supervisor exited at once or did not start in time (the message says why).
    """
    import subprocess  # here: the supervisor itself starts its command without it

    with open(os.path.join(job_dir, RUNNER_LOG), "ab") as runner_log:
        runner = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), job_dir],
                                  stdin=subprocess.DEVNULL, stdout=runner_log, stderr=subprocess.STDOUT,
                                  start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(job_dir, RUNNER_STATE)):
        if runner.poll() is not None and not os.path.exists(os.path.join(job_dir, EXIT_STATE)):
            raise RuntimeError(f"the job supervisor exited at once: {runner_log_tail(job_dir)}")
        if time.monotonic() > deadline:
            runner.kill()
            runner.wait()
            raise RuntimeError(f"the job supervisor did not start within {timeout:g}s")
        time.sleep(0.002)
    return runner


def job_state(job_dir: str) -> dict[str, Any]:
    """How the job in ``job_dir`` is doing, on the machine where it runs: ``{"state": "ended",
    "exit": <exit.json>}``, ``running``, ``not_found``, or ``lost`` with a ``message``. A
    supervisor that died (OOM killer, kill -9) leaves its command stopped and the job lost."""
    exit_state = read_exit_json(job_dir)
    if exit_state is not None:
        return {"state": "ended", "exit": exit_state}
    if not os.path.isdir(job_dir):
        return {"state": "not_found"}
    state = read_runner_json(job_dir)
    if state is None:
        if os.path.exists(os.path.join(job_dir, LAUNCH_MARKER)):
            return {"state": "running"}  # a launch is starting it right now
        return {"state": "lost", "message": "the job was staged but its supervisor never started"}
    if is_alive(int(state["runner_pid"]), state.get("runner_start_ticks")):
        if state.get("queued") and "child_pid" not in state:
            return {"state": "queued", "message": state["queued"]}
        return {"state": "running"}
    exit_state = read_exit_json(job_dir)  # it may have just finished
    if exit_state is not None:
        return {"state": "ended", "exit": exit_state}
    stopped = stop_orphaned_command(state, grace_seconds=5, job_dir=job_dir)
    return {"state": "lost", "message": f"the job supervisor died{stopped}: {runner_log_tail(job_dir)}"}


class OutputEcho:
    """Copies what the command appends to ``driver.log`` onto this process's stdout as it comes
    (``echo_output``): a container's output stream then carries the driver log, and a watcher
    attached to it needs no copy of the file. The file stays the record; the echo never blocks the
    supervisor (a full pipe is retried at the next pump, and given up on at the end).

    :param path: the driver log.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._source: int | None = None
        self._pending = b""
        self._given_up = False

    def pump(self, chunk_bytes: int = 1 << 20) -> None:
        """Copy the new part of the log (up to ``chunk_bytes`` read at a time), without blocking."""
        if self._given_up:
            return
        if self._source is None:
            try:
                self._source = os.open(self.path, os.O_RDONLY)
                os.set_blocking(1, False)
            except OSError:
                return  # not created yet (or no stdout: then nothing is ever copied)
        while True:
            if not self._pending:
                self._pending = os.read(self._source, chunk_bytes)
                if not self._pending:
                    return
            try:
                written = os.write(1, self._pending)
            except BlockingIOError:
                return
            except OSError:  # nobody reads stdout any more: the watcher reads the file instead
                self._pending = b""
                self._given_up = True
                return
            self._pending = self._pending[written:]

    def finish(self, timeout: float = 10.0) -> int:
        """Copy the rest (for up to ``timeout`` seconds); return the log's final size, which a
        watcher compares with what it received."""
        deadline = time.monotonic() + timeout
        self.pump()
        while (self._pending or self._unread()) and not self._given_up and time.monotonic() < deadline:
            time.sleep(0.01)
            self.pump()
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    def _unread(self) -> bool:
        return self._source is not None and os.lseek(self._source, 0, os.SEEK_CUR) < os.fstat(self._source).st_size


def encode_launch(spec: JobJson) -> bytes:
    """The part of ``spec`` that starts the command (argv, working folder, environment), in a form
    read without any import (NUL-separated: no argument or variable can hold a NUL). A container's
    supervisor gets it beside ``job.json`` and starts the command before it parses JSON.

    :param spec: the job's ``job.json`` content, with its secrets.
    """
    fields = [spec.get("cwd", WORK_DIR)]
    for section in (spec["argv"], [f"{k}={v}" for k, v in spec.get("env", {}).items()],
                    spec.get("unset_env", []), spec.get("path_prepend", [])):
        fields += [str(len(section)), *section]
    return "\0".join(fields).encode("utf-8", "surrogateescape")


def decode_launch(data: bytes) -> JobJson:
    """What :func:`encode_launch` encoded, as the fields of ``job.json`` it came from.

    :param data: the encoded launch parameters.
    :raises ValueError: ``data`` is not such an encoding.
    """
    fields = data.decode("utf-8", "surrogateescape").split("\0")
    position = 1

    def section() -> list[str]:
        nonlocal position
        count = int(fields[position])
        items = fields[position + 1 : position + 1 + count]
        if len(items) != count:
            raise ValueError("the launch parameters are cut short")
        position += 1 + count
        return items

    argv, env, unset_env, path_prepend = section(), section(), section(), section()
    return {"cwd": fields[0], "argv": argv, "env": dict(item.split("=", 1) for item in env),
            "unset_env": unset_env, "path_prepend": path_prepend}


class Child:
    """The command the supervisor started.

    :param pid: its process id (the leader of its own session and process group).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None


_POPEN_KEPT: list[object] = []
"""The ``Popen`` objects of :func:`spawn_in_new_session`'s fallback, never finalized before exit."""


def spawn_in_new_session(argv: list[str], cwd: str, env: dict[str, str], output: int) -> int:
    """Start ``argv`` (found on ``env``'s ``PATH``) in ``cwd`` as the leader of a new session, its
    stdin ``/dev/null``, stdout and stderr ``output``; return its pid. As ``subprocess.Popen(...,
    start_new_session=True)`` does, without importing ``subprocess`` (milliseconds at every start).

    The supervisor is single-threaded: it may change its own working folder for the spawn. Where
    ``posix_spawn`` cannot start a session (no ``POSIX_SPAWN_SETSID``, as on older macOS), it is
    ``Popen`` after all.

    :param argv: the command.
    :param cwd: its working folder.
    :param env: its environment.
    :param output: a file descriptor for its stdout and stderr.
    :raises OSError: the program is missing or cannot be run.
    """
    program = _find_program(argv[0], env, cwd)
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return os.posix_spawn(
            program, argv, env, setsid=True,
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, output, 1), (os.POSIX_SPAWN_DUP2, output, 2)],
            setsigdef=_signals_python_ignores(),
        )
    except NotImplementedError:
        import subprocess

        process = subprocess.Popen(argv, executable=program, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        # Kept alive: a Popen object's finalizer reaps its child when the child has already ended,
        # and the caller's own waitpid would then find no child and lose the exit status.
        _POPEN_KEPT.append(process)
        return process.pid
    finally:
        os.chdir(previous)


def _signals_python_ignores() -> list[int]:
    """SIGPIPE and SIGXFSZ, which Python ignores and a child gets back at their defaults (as with
    ``Popen``). Their numbers come from ``_signal``, the built-in module ``signal`` wraps: ``signal``
    itself imports ``enum``, milliseconds the command would wait for at every start."""
    import _signal

    return [signum for signum in (_signal.SIGPIPE, getattr(_signal, "SIGXFSZ", None)) if signum is not None]


def _find_program(name: str, env: dict[str, str], cwd: str) -> str:
    """``name`` as ``execvpe`` finds it: a path as it is (relative to ``cwd``), else the first
    executable file of that name on ``env``'s ``PATH``."""
    if os.sep in name:
        return name
    for folder in os.get_exec_path(env):
        candidate = os.path.join(cwd, folder, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(2, "No such file or directory (not on the PATH)", name)


class JobRunner:
    """Runs one job described by ``JOB_DIR/job.json``; see the module docstring.

    :param job_dir: the job folder.
    :param launch: the command's launch parameters (:func:`encode_launch`), when they come beside
        ``job.json`` (a container's supervisor): the command then starts before ``job.json`` is read.
    """

    def __init__(self, job_dir: str, launch: bytes | None = None) -> None:
        self.job_dir = os.path.abspath(job_dir)
        self._launch = launch
        self.stop_reason: str | None = None
        self.child: Child | None = None
        self.child_status: int | None = None
        self.spec: JobJson = {}
        self.echo: OutputEcho | None = None
        self._started_at = 0.0
        self.host_resources: Any = None  # a host_resources.HostResourceSession while it holds them
        self.sampler: Any = None  # a system_metrics.SystemMetricsSampler while the command runs
        self.command_environment: dict[str, str] = {}
        if launch is None:
            self._read_spec()

    def _read_spec(self) -> None:
        import json

        with open(os.path.join(self.job_dir, JOB_SPEC)) as handle:
            self.spec = json.load(handle)
        self._remove_secrets_from_spec_file()
        self.echo = OutputEcho(self.path(DRIVER_LOG)) if self.spec.get("echo_output") else None

    def path(self, name: str) -> str:
        return os.path.join(self.job_dir, name)

    def _remove_secrets_from_spec_file(self) -> None:
        """Rewrite ``job.json`` without the secret values (they stay in memory for the command's
        environment only): a job folder kept for debugging, or read by another user of the host,
        holds no secret."""
        secret = set(self.spec.get("secret_env", ()))
        if not secret & set(self.spec.get("env", {})):
            return
        write_json_atomically(self.path(JOB_SPEC),
                              dict(self.spec, env={k: v for k, v in self.spec["env"].items() if k not in secret}))

    def run(self) -> int:
        """Run the job to its end; see the module docstring. What it reserved on the host is given
        back even when the supervisor itself fails."""
        try:
            return self._run()
        except BaseException:
            if self.host_resources is not None:
                self.host_resources.release()
                self.host_resources = None
            raise

    def _run(self) -> int:
        launch = decode_launch(self._launch) if self._launch is not None else None
        failure = self._start(launch) if launch is not None else None  # a container's: the command first
        import signal

        stop_signals = _stop_signals()
        for signum in stop_signals:
            signal.signal(signum, self._on_stop_signal)
        _become_subreaper()
        if launch is None:
            write_json_atomically(self.path(RUNNER_STATE), {
                "runner_pid": os.getpid(), "runner_start_ticks": process_start_ticks(os.getpid()),
            })
            unavailable = self._acquire_host_resources()
            if unavailable is not None:
                self._finish(None, None, *unavailable)
                return 1
            failure = self._start(self.spec)
        else:
            self._read_spec()
        if failure is not None or self.child is None:
            program = (launch or self.spec)["argv"][0]
            hint = _LAUNCHER_HINTS.get(os.path.basename(program), "")
            self._finish(None, None, REASON_LAUNCH_FAILED, f"could not start {program!r}: {failure}{hint}")
            return 1
        write_json_atomically(self.path(RUNNER_STATE), {
            "runner_pid": os.getpid(),
            "runner_start_ticks": process_start_ticks(os.getpid()),
            "child_pid": self.child.pid,
            "child_pgid": self.child.pid,
            "child_start_ticks": process_start_ticks(self.child.pid),
            "started_at": self._started_at,
        })
        limit = self.spec.get("max_run_duration_seconds")
        # The deadline runs on the monotonic clock: a wall-clock jump neither ends a run early nor late.
        deadline = time.monotonic() + float(limit) if limit else None
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, *stop_signals})
        self._start_sampler()  # its thread inherits the blocked signals: they still reach sigtimedwait
        while True:
            self._reap()
            if self.child_status is not None:
                break
            if self.stop_reason is None and deadline is not None and time.monotonic() >= deadline:
                self.stop_reason = REASON_TIMEOUT
            if self.stop_reason is not None:
                self._stop_tree(float(self.spec.get("grace_seconds", 10)))
                continue
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            if self.echo is not None:
                self.echo.pump()
                wait = min(wait, ECHO_INTERVAL_SECONDS)
            received = signal.sigtimedwait({signal.SIGCHLD, *stop_signals}, wait)
            if received is not None and received.si_signo in stop_signals:
                self.stop_reason = REASON_CANCELED
        # The command ended: stop whatever it left behind, then record how it ended.
        self._stop_tree(grace=2.0)
        status = self.child_status
        code = os.waitstatus_to_exitcode(status) if status is not None else None
        exit_code = code if code is not None and code >= 0 else None
        killed_by = -code if code is not None and code < 0 else None
        reason = self.stop_reason or REASON_EXITED
        message = ""
        if reason == REASON_TIMEOUT:
            message = f"the run exceeded max_run_duration_seconds={limit} and was stopped"
        elif reason == REASON_CANCELED:
            message = "the run was canceled"
        elif killed_by is not None:
            message = f"the command was killed by signal {signal.Signals(killed_by).name}"
        elif exit_code:
            message = f"the command exited with code {exit_code}"
        if reason == REASON_EXITED and (killed_by is not None or exit_code) and self.host_resources is not None:
            message = self.host_resources.out_of_memory_message(killed_by, _log_tail(self.path(DRIVER_LOG))) or message
        self._finish(exit_code, killed_by, reason, message)
        return 0

    # ------------------------------------------------------------------ helpers
    def _acquire_host_resources(self) -> tuple[str, str] | None:
        """Reserve the host's share the run asked for (``host_resources``), waiting while its GPUs
        are held by other jobs (shown as ``queued`` in ``runner.json``); None once it holds it, else
        the ending's reason and message."""
        request = self.spec.get("host_resources")
        nodes = self.spec.get("node_reservations")
        if not request and not nodes:
            return None
        state: RunnerJson = {"runner_pid": os.getpid(), "runner_start_ticks": process_start_ticks(os.getpid())}

        def show_queued(reason: str) -> None:
            write_json_atomically(self.path(RUNNER_STATE), dict(state, queued=reason))

        module: Any = None
        try:
            module = runtime_module("host_resources")
            session = module.HostResourceSession(self.job_dir, request or {})
            if nodes:
                session.acquire_across(nodes, show_queued, lambda: self.stop_reason is not None)
            else:
                session.acquire(show_queued, lambda: self.stop_reason is not None)
        except Exception as exc:
            if module is not None and isinstance(exc, module.ResourcesUnavailable):
                return (REASON_CANCELED if exc.canceled else REASON_LAUNCH_FAILED), str(exc)
            ledger = (request or {}).get("ledger") or "/var/tmp/training-runs/reservations.json"
            return REASON_LAUNCH_FAILED, (
                f"could not reserve the run's resources on this host ({type(exc).__name__}: {exc}); check that the "
                f"reservation file {ledger} and its folder are writable by this user, or set the connection's "
                "reservations_file (a retry helps only once that is fixed)")
        self.host_resources = session
        write_json_atomically(self.path(RUNNER_STATE), state)
        if self.stop_reason is not None:
            return REASON_CANCELED, "the run was canceled"
        _append_line(self.path(DRIVER_LOG), f"[training-runs] {session.describe()}")
        return None

    def _start_sampler(self) -> None:
        """Sample the node's CPU, memory, disk, network and the run's GPUs into the events file,
        as MLflow's ``system/...`` metrics, while the command runs."""
        interval = self.spec.get("system_metrics_interval_seconds")
        if not interval:
            return
        environment = self.command_environment
        node_count = max(_whole(environment.get("TRAINING_RUNS_NODE_COUNT")),
                         _whole(environment.get("SLURM_JOB_NUM_NODES")))
        given_gpus = bool(self.host_resources is not None and self.host_resources.gpus)
        log = self.path(DRIVER_LOG)

        def ready(description: str) -> None:  # in the sampler's thread: NVML may take its time
            if given_gpus and "no GPU metrics" in description:
                _append_line(log, f"[training-runs] {description}")

        try:
            module = runtime_module("system_metrics")
            self.sampler = module.SystemMetricsSampler(self.path(EVENTS_FILE), float(interval),
                                                       node_id="node_0" if node_count > 1 else None, env=environment,
                                                       on_ready=ready)
            self.sampler.start()
        except Exception as exc:  # the run goes on without system metrics
            self.sampler = None
            _append_line(log, f"[training-runs] no system metrics: {exc}")

    def _start(self, launch: JobJson) -> OSError | None:
        """Start the command (:meth:`_start_child`); the error when it could not be started."""
        try:
            self.child = self._start_child(launch)
        except OSError as exc:
            return exc
        self._started_at = time.time()
        return None

    def _start_child(self, launch: JobJson) -> Child:
        """Start the command.

        :param launch: its argv, working folder and environment (``job.json`` or the launch parameters).
        """
        environment = dict(os.environ)
        environment.update(launch.get("env", {}))
        prepend = launch.get("path_prepend", [])
        if prepend:
            environment["PATH"] = os.pathsep.join([*prepend, environment.get("PATH", os.defpath)])
        for name in launch.get("unset_env", []):
            environment.pop(name, None)
        if self.host_resources is not None:
            environment.update(self.host_resources.command_environment(environment))
        environment[JOB_MARKER_VARIABLE] = self.job_dir  # inherited: finds a daemon even once it has left
        _make_output_dirs(environment.get("TRAINING_RUNS_OUTPUT_DIRS"))
        cwd = self.path(launch.get("cwd", WORK_DIR))
        _make_run_folders(cwd)
        self.command_environment = environment
        log = os.open(self.path(DRIVER_LOG), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if self.host_resources is None:
                return Child(spawn_in_new_session(launch["argv"], cwd, environment, log))
            with self.host_resources.around_spawn() as window:  # born inside the run's CPU and memory limits
                child = Child(spawn_in_new_session(launch["argv"], cwd, environment, log))
                try:
                    window.limit_child(child.pid)
                except OSError as exc:  # the command runs: supervised, without the memory limit it asked for
                    _append_line(self.path(DRIVER_LOG), f"[training-runs] the memory limit could not be applied to "
                                 f"the command ({exc}): it runs without it")
                return child
        finally:
            os.close(log)

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        if self.stop_reason is None:
            self.stop_reason = REASON_CANCELED

    def _reap(self) -> None:
        """Collect every exited child (the command and adopted orphans)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.child is not None and pid == self.child.pid:
                self.child_status = status
                self.child.returncode = os.waitstatus_to_exitcode(status)

    def _stop_tree(self, grace: float) -> None:
        """SIGTERM to every process of the run, wait up to ``grace`` seconds, then SIGKILL."""
        import signal

        assert self.child is not None
        group = self.child.pid
        members = tree_members(os.getpid(), group)
        if not members:
            return
        _signal_all(members, group, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self._reap()
            members = tree_members(os.getpid(), group)
            if not members:
                return
            time.sleep(0.05)
        _signal_all(members, group, signal.SIGKILL)
        for _ in range(100):
            self._reap()
            if not tree_members(os.getpid(), group):
                return
            time.sleep(0.02)

    def _finish(self, exit_code: int | None, killed_by: int | None, reason: str, message: str) -> None:
        if self.sampler is not None:  # its last line is written before exit.json, the final record
            self.sampler.stop()
            self.sampler = None
        if self.host_resources is not None:
            self.host_resources.release()
            self.host_resources = None
        ending: ExitJson = {"exit_code": exit_code, "signal": killed_by, "reason": reason, "message": message,
                            "ended_at": time.time()}
        if self.echo is not None:
            ending["driver_log_bytes"] = self.echo.finish()
        ending["absent"] = [name for name in COLLECTED_PATHS if _absent_or_empty(self.path(name))]
        write_json_atomically(self.path(EXIT_STATE), ending)
        # Also the supervisor's last output line: a container target reads it from the container's
        # log without copying a file out of its filesystem (on stderr when stdout echoes driver.log).
        stream = sys.stderr if self.echo is not None else sys.stdout
        import json

        try:
            stream.write(EXIT_LINE_PREFIX + json.dumps(ending) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # no one reads this process's output: exit.json is enough


def _whole(text: str | None) -> int:
    return int(text) if text and text.strip().isdigit() else 1


def _log_tail(path: str, size: int = 8192) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(max(0, os.path.getsize(path) - size))
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _append_line(path: str, line: str) -> None:
    """Append one line to a log the job's watchers show (the driver log), never failing the job."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, (line + "\n").encode())
        finally:
            os.close(descriptor)
    except OSError:
        pass


def _stop_signals() -> tuple[int, ...]:
    import signal

    return tuple(getattr(signal, name) for name in _STOP_SIGNAL_NAMES)


def _signal_all(members: set[int], group: int, signum: int) -> None:
    # Each process by pid, never killpg: once the group's leader is reaped its id may be reused.
    for pid in members:
        _kill(pid, signum)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        return  # gone already


def _become_subreaper() -> None:
    if os.getpid() == 1:
        return  # a container's first process: orphans of its namespace are its children already
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


EXIT_WITH_RUN = "--exit-with-run"
"""The supervisor's flag: exit with the run's code, so a scheduler's accounting shows a failed run
as failed (Slurm: ``FAILED`` with the code); without it the supervisor exits 0 once it recorded
the ending."""


def run_exit_code(ending: ExitJson | None) -> int:
    """The code a supervisor run with :data:`EXIT_WITH_RUN` exits with: 0 for a run that succeeded,
    the command's code, 128 + the signal that killed it, 124 for a timeout, 143 for a cancel, 1 else.

    :param ending: the run's ``exit.json``.
    """
    if ending is None:
        return 1
    if ending.get("reason") == REASON_TIMEOUT:
        return 124
    if ending.get("reason") == REASON_CANCELED:
        return 143
    code = ending.get("exit_code")
    if code is not None:
        if int(code) == 0:
            return 0 if ending.get("reason") == REASON_EXITED else 1
        return int(code) & 0xFF or 1
    signal_number = ending.get("signal")
    if signal_number is not None:
        return 128 + int(signal_number)
    return 1


def main(argv: list[str], launch: bytes | None = None) -> int:
    """Entry point: ``python3 job_runner.py JOB_DIR [--exit-with-run]``.

    :param argv: the command line.
    :param launch: the command's launch parameters (see :class:`JobRunner`).
    """
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != EXIT_WITH_RUN):
        print(f"usage: job_runner.py JOB_DIR [{EXIT_WITH_RUN}]", file=sys.stderr)
        return 2
    code = JobRunner(argv[1], launch).run()
    if len(argv) == 3 and code == 0:
        return run_exit_code(read_exit_json(argv[1]))
    return code


def _absent_or_empty(path: str) -> bool:
    """Nothing to collect at ``path``: missing, or an empty folder (``./outputs`` and ``./logs`` are
    made for every run)."""
    if not os.path.lexists(path):
        return True
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _make_run_folders(cwd: str) -> None:
    """Create ``./outputs`` and ``./logs`` in the command's working folder, as Azure ML does: v1
    scripts write ``outputs/model.pkl`` without creating the folder. A file of that name in the
    snapshot is left as it is (the script sees it, as before)."""
    for name in ("outputs", "logs"):
        try:  # noqa: SIM105 - contextlib is an import the supervisor's start does without
            os.mkdir(os.path.join(cwd, name))
        except OSError:
            pass


def _make_output_dirs(listed: str | None) -> None:
    """Create the run's declared output folders (JSON list, ``TRAINING_RUNS_OUTPUT_DIRS``) before
    the command starts, as Azure ML does: a script writes into them without creating them."""
    if not listed:
        return
    import json  # only for a run with outputs: the supervisor's start stays lean

    try:
        folders = json.loads(listed)
    except ValueError:
        return
    for folder in folders if isinstance(folders, list) else []:
        if isinstance(folder, str):
            os.makedirs(folder, exist_ok=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

