"""Per-rank wrapper and TensorFlow launcher of distributed runs: standard library only.

It travels in every job's ``runtime/`` folder (on ``PYTHONPATH``) as ``training_runs_launcher``:

``python -m training_runs_launcher rank -- CMD...``
    runs one rank's command (started by ``mpirun``, ``torchrun`` or the TensorFlow mode below),
    writes its output to ``$TRAINING_RUNS_RANK_LOG_DIR/rank_<N>.log`` and, for rank 0 only, also
    to its own output (so the task log shows rank 0 live), then records ``rank_<N>.exit``;
``python -m training_runs_launcher script -- SCRIPT ARGS...``
    runs a rank's Python script in-process; when it fails after initialising MPI (mpi4py), it
    aborts the MPI job, so the other ranks stop instead of waiting for it;
``python -m training_runs_launcher torchnode --master ADDR --port P -- TORCHRUN...``
    starts ``torchrun`` with this node's rank (its MPI rank: ``mpirun`` starts one per host);
``python -m training_runs_launcher tensorflow --workers W --ps P -- CMD...``
    starts W workers and P parameter servers on this machine, each with its own ``TF_CONFIG``;
    when one fails, the others are stopped and the launcher fails; when every worker has ended,
    the parameter servers are stopped;
``python -m training_runs_launcher tftask --workers W --ps P -- CMD...``
    one task of such a job spread by ``srun`` over a Slurm allocation: the tasks meet through
    their addresses in the rank folder (on the shared filesystem) to make ``TF_CONFIG``.
"""

from __future__ import annotations

import contextlib  # runpy imports it anyway
import os
import runpy  # what ``python -m`` imports anyway
import signal
import sys
import time

# Every rank imports this module: what only some modes need (subprocess, json, socket, traceback,
# typing: 5-15 ms of CPU each) is imported where it is used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any, Protocol

    class _Child(Protocol):
        """A rank's running command: its pid, its output (stdout and stderr) as a pipe, its exit."""

        pid: int
        output: int

        def send_signal(self, signum: int) -> None: ...

        def wait(self) -> int:
            """The exit code; minus the signal's number when a signal ended it."""

RANK_LOG_DIR_VARIABLE = "TRAINING_RUNS_RANK_LOG_DIR"
RANK_VARIABLE = "TRAINING_RUNS_RANK"
_RANK_SOURCES = (RANK_VARIABLE, "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "RANK")
_NODE_RANK_SOURCES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")  # of a torchnode
_SLURM_LAUNCH_NODE = "@slurm-launch-node"  # torchnode's --master on Slurm: the node srun ran on
NODE_GPUS_VARIABLE = "TRAINING_RUNS_NODE_GPUS"  # host_resources.NODE_GPUS_VARIABLE (this module imports nothing)
SYSTEM_METRICS_VARIABLE = "TRAINING_RUNS_SYSTEM_METRICS_INTERVAL"
"""Seconds between system-metrics samples of a multi-node run's nodes other than the supervisor's."""
EVENTS_HOST_VARIABLE = "TRAINING_RUNS_EVENTS_HOST"  # the supervisor's host, when nodes share the job folder
_EVENTS_FILE_VARIABLE = "TRAINING_RUN_EVENTS_FILE"  # events.EVENTS_FILE_VARIABLE (this module imports nothing)
_TF_RENDEZVOUS_SECONDS = 300.0  # for every task of a TensorFlow job on Slurm to write its address
_GRACE_SECONDS = 10.0
_PARENT_STOPS_VARIABLE = "TRAINING_RUNS_PARENT_STOPS_RANKS"  # set by the TensorFlow mode, which does


def current_rank() -> int | None:
    """This process's global rank in a distributed run, None outside one."""
    for name in _RANK_SOURCES:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def run_rank(command: list[str]) -> int:
    """Run one rank's command, teeing rank 0's output; return its exit code."""
    rank = current_rank()
    if rank is None:  # a task srun started without an MPI plugin: Slurm's task id is the rank
        rank = int(os.environ.get("SLURM_PROCID", "0") or 0)
        os.environ[RANK_VARIABLE] = str(rank)
    _events_of_this_node()
    _gpus_of_this_node(_node_index(rank))
    if "GROUP_RANK" in os.environ and "NODE_RANK" not in os.environ:  # torchrun's name for it
        os.environ["NODE_RANK"] = os.environ["GROUP_RANK"]
    folder = os.environ.get(RANK_LOG_DIR_VARIABLE) or "."
    os.makedirs(folder, exist_ok=True)
    if _is_script_of_this_interpreter(command):
        child: _Child = _ForkedScript(command[len(_SCRIPT_PREFIX) + 1:])
    else:
        child = _Spawned(command)
    sampler = _node_sampler(_node_index_if_first_on_node(rank))  # after the fork: no thread is copied
    stopped: list[int] = []

    def forward(received: int, _frame: object) -> None:
        stopped.append(received)
        child.send_signal(received)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    output = child.output
    with open(os.path.join(folder, f"rank_{rank}.log"), "ab") as log:
        for chunk in iter(lambda: os.read(output, 65536), b""):
            log.write(chunk)
            log.flush()
            if rank == 0:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
    code = child.wait()
    if sampler is not None:
        sampler.stop()
    completed = os.path.join(folder, f"rank_{rank}.completed")
    if code < 0 and not stopped and os.path.exists(completed):
        # The script returned, then a native library crashed while the interpreter shut down (gloo's
        # "terminate called without an active exception"): the training is done and was recorded.
        with open(os.path.join(folder, f"rank_{rank}.log"), "ab") as log:
            log.write(f"[training_runs_launcher] the script completed; the process then died of signal {-code} "
                      "while the interpreter shut down: counted as success\n".encode())
        code = 0
    _write_atomically(os.path.join(folder, f"rank_{rank}.exit"),  # JSON; json itself is not imported for it
                      f'{{"rank": {rank}, "exit_code": {code}, "ended_at": {time.time()!r}}}')
    if code != 0 and not stopped and not os.environ.get(_PARENT_STOPS_VARIABLE):
        if "PMI_RANK" in os.environ and "OMPI_COMM_WORLD_RANK" not in os.environ:
            # MPICH's Hydra stops every rank when one dies of a signal, not when one exits non-zero.
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        # mpirun waits for the other ranks when one exits after MPI_Finalize: stopping the launcher
        # that started this rank (mpirun, its remote daemon, torchrun's agent) stops them all. A
        # task of srun is Slurm's (its step daemon stops the step: --kill-on-bad-exit).
        if not _started_by_slurmstepd():
            with contextlib.suppress(OSError):
                os.kill(os.getppid(), signal.SIGTERM)
    return code if code >= 0 else 128 - code


def _node_index(rank: int) -> int | None:
    """This rank's node in a run whose ranks are placed by slot (``--host h1:n,h2:n``)."""
    per_node = os.environ.get("TRAINING_RUNS_PROCESSES_PER_NODE", "1")
    return rank // int(per_node) if per_node.isdigit() and int(per_node) > 0 else None


def _gpus_of_this_node(node_index: int | None) -> None:
    """The GPUs the run reserved on this node (``TRAINING_RUNS_NODE_GPUS``: ``0,1;2,3``, node 0
    first) become this process's ``CUDA_VISIBLE_DEVICES``, in ``nvidia-smi``'s order."""
    reserved = os.environ.get(NODE_GPUS_VARIABLE)
    if not reserved or node_index is None:
        return
    nodes = reserved.split(";")
    if node_index < len(nodes):
        os.environ["CUDA_VISIBLE_DEVICES"] = nodes[node_index]
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def _node_index_if_first_on_node(rank: int) -> int | None:
    """This node's index in the run when this rank is the first on its node, else None."""
    if "TORCHELASTIC_RUN_ID" in os.environ or "GROUP_RANK" in os.environ:
        return None  # a worker torchrun started: its node's torchnode samples the node
    local = next((os.environ[name] for name in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")
                  if os.environ.get(name)), None)
    if local is None or local.strip() != "0":
        return None
    if os.environ.get("SLURM_NODEID", "").isdigit() and "OMPI_COMM_WORLD_RANK" not in os.environ:
        return int(os.environ["SLURM_NODEID"])
    return _node_index(rank)


def _node_sampler(node_index: int | None) -> Any:
    """A system-metrics sampler for this node, when it is not the supervisor's (node 0, which its
    supervisor samples) of a run across several nodes; None otherwise."""
    interval = os.environ.get(SYSTEM_METRICS_VARIABLE)
    nodes = os.environ.get("TRAINING_RUNS_NODE_COUNT", "1")
    events = os.environ.get(_EVENTS_FILE_VARIABLE)
    if not interval or not node_index or not events or not nodes.isdigit() or int(nodes) <= 1:
        return None
    try:
        from airflow_provider.runtime.system_metrics import SystemMetricsSampler

        sampler = SystemMetricsSampler(events, float(interval), node_id=f"node_{node_index}", env=dict(os.environ))
        sampler.start()
        return sampler
    except Exception as exc:  # the rank runs on without this node's system metrics
        print(f"[training_runs_launcher] node {node_index}: no system metrics: {exc}", file=sys.stderr, flush=True)
        return None


def _events_of_this_node() -> None:
    """On a cluster whose nodes share the job folder (Slurm), a rank on another node than the
    supervisor's writes its metrics to ``events.<host>.jsonl``: appends from several machines to one
    file are not kept whole on every shared filesystem (NFS); the target merges them at the end."""
    first = os.environ.get(EVENTS_HOST_VARIABLE)
    events = os.environ.get(_EVENTS_FILE_VARIABLE)
    host = os.uname().nodename
    if first and events and host != first:
        os.environ[_EVENTS_FILE_VARIABLE] = os.path.join(os.path.dirname(events), f"events.{host}.jsonl")


def _started_by_slurmstepd() -> bool:
    try:
        with open(f"/proc/{os.getppid()}/comm", "rb") as comm:
            return comm.read().strip() == b"slurmstepd"
    except OSError:
        return False


_LAUNCHER_MODULE = "training_runs_launcher"
_SCRIPT_PREFIX = ("-m", _LAUNCHER_MODULE, "script", "--")


def _is_script_of_this_interpreter(command: list[str]) -> bool:
    """True when ``command`` is ``PYTHON -m training_runs_launcher script -- ...`` with this very
    interpreter: then the rank's script runs in a fork of this process, not in a new interpreter."""
    if tuple(command[1:len(_SCRIPT_PREFIX) + 1]) != _SCRIPT_PREFIX:
        return False
    import shutil

    return os.path.abspath(shutil.which(command[0]) or command[0]) == sys.executable


class _Spawned:
    """The rank's command in a process of its own."""

    def __init__(self, command: list[str]) -> None:
        import subprocess

        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        assert self.process.stdout is not None
        self.pid, self.output = self.process.pid, self.process.stdout.fileno()

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self) -> int:
        return self.process.wait()


class _ForkedScript:
    """The rank's script run by a fork of this launcher: what ``python -m training_runs_launcher
    script -- ARGV`` would do, without starting and importing a second interpreter per rank. The
    fork returns to the interpreter's top level with the script's exit code (``SystemExit``), so
    its exit handlers (mpi4py's ``MPI_Finalize``) run as in a process of its own."""

    def __init__(self, argv: list[str]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(write, 1)
            os.dup2(write, 2)
            os.close(devnull)
            os.close(write)
            raise SystemExit(run_script(argv))
        os.close(write)
        self.pid, self.output = pid, read
        self.returncode: int | None = None

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:  # never a pid that may have been reused
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def wait(self) -> int:
        if self.returncode is None:
            while True:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    break
                except InterruptedError:
                    continue
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def run_script(argv: list[str]) -> int:
    """Run a Python script in this process, as ``python script.py`` would; when it fails after
    initialising MPI through mpi4py, abort the whole MPI job (a failing rank would otherwise wait
    in ``MPI_Finalize`` for ranks that never finish), as ``python -m mpi4py`` does."""
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
    code = 0
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:
        if isinstance(exc.code, int):
            code = exc.code
        elif exc.code is not None:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    if code == 0 and current_rank() is not None and os.environ.get(RANK_LOG_DIR_VARIABLE):
        with contextlib.suppress(OSError):  # lets the rank wrapper tell a crash at shutdown from a failure
            open(os.path.join(os.environ[RANK_LOG_DIR_VARIABLE], f"rank_{current_rank()}.completed"), "w").close()
    mpi: Any = sys.modules.get("mpi4py.MPI")
    if code and mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        sys.stdout.flush()
        sys.stderr.flush()
        rank, folder = current_rank(), os.environ.get(RANK_LOG_DIR_VARIABLE)
        if rank is not None and folder:
            # The abort may stop this rank's wrapper too (srun's step daemon stops whole tasks): the
            # failure is recorded first, and the wrapper gets a moment to write out the traceback.
            with contextlib.suppress(OSError):
                _write_atomically(os.path.join(folder, f"rank_{rank}.exit"),
                                  f'{{"rank": {rank}, "exit_code": {code}, "ended_at": {time.time()!r}}}')
            time.sleep(0.2)
        mpi.COMM_WORLD.Abort(code)
    return code


def check_torch_backend(backend: str) -> str:
    """Why ``torch.distributed`` cannot use ``backend`` here ("" when it can)."""
    try:
        import torch  # only in PyTorch runs
        import torch.distributed as dist
    except ImportError as exc:
        return f"PyTorchConfiguration needs torch in the run's environment: {exc}"
    if not dist.is_available():
        return "this torch build has no torch.distributed"
    if backend == "nccl" and not (dist.is_nccl_available() and torch.cuda.is_available()):
        return ("communication_backend='nccl' needs CUDA GPUs and a torch build with NCCL, and this host has "
                f"{'no GPU' if not torch.cuda.is_available() else 'no NCCL'}: use communication_backend='gloo'")
    if backend == "gloo" and not dist.is_gloo_available():
        return "this torch build has no gloo backend"
    return ""


def run_torch_checked(backend: str, command: list[str]) -> int:
    """Check the backend, then run ``torchrun`` (one node); fail with the reason before any process starts."""
    problem = check_torch_backend(backend)
    if problem:
        print(f"training-runs: {problem}", file=sys.stderr, flush=True)
        return 2
    import subprocess

    return subprocess.call(command)


def run_torch_node(master: str, port: str, command: list[str]) -> int:
    """Start ``torchrun`` for this node of a multi-node run; ``mpirun`` (or ``srun``) started one
    such process per host, and its rank is the node's rank. On Slurm, ``--master
    @slurm-launch-node`` is the node ``srun`` ran on: the allocation's first."""
    node_rank = next((os.environ[name] for name in _NODE_RANK_SOURCES if os.environ.get(name)), "0")
    for name in _NODE_RANK_SOURCES:  # the workers' rank is torchrun's RANK
        os.environ.pop(name, None)
    if master == _SLURM_LAUNCH_NODE:
        master = os.environ.get("SLURM_LAUNCH_NODE_IPADDR") or "127.0.0.1"
    position = command.index("torch.distributed.run") + 1
    command = [*command[:position], "--node_rank", node_rank, "--master_addr", master, "--master_port", port,
               *command[position:]]
    os.environ["NODE_RANK"] = node_rank
    problem = check_torch_backend(os.environ.get("TRAINING_RUNS_COMMUNICATION_BACKEND", "gloo"))
    if problem:
        print(f"training-runs: node {node_rank}: {problem}", file=sys.stderr, flush=True)
        return 2
    import subprocess

    _events_of_this_node()
    _gpus_of_this_node(int(node_rank) if node_rank.isdigit() else None)
    sampler = _node_sampler(int(node_rank) if node_rank.isdigit() else None)
    try:
        return subprocess.call(command)
    finally:
        if sampler is not None:
            sampler.stop()


def run_tensorflow(workers: int, parameter_servers: int, command: list[str]) -> int:
    """Start every TensorFlow task with its ``TF_CONFIG``; fail fast when one fails."""
    import json
    import subprocess

    ports = _free_ports(workers + parameter_servers)
    cluster: dict[str, list[str]] = {"worker": [f"127.0.0.1:{p}" for p in ports[:workers]]}
    if parameter_servers:
        cluster["ps"] = [f"127.0.0.1:{p}" for p in ports[workers:]]
    tasks = [("worker", i) for i in range(workers)] + [("ps", i) for i in range(parameter_servers)]
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    for rank, (kind, index) in enumerate(tasks):
        environment = {**os.environ, RANK_VARIABLE: str(rank), _PARENT_STOPS_VARIABLE: "1",
                       "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})}
        children.append((kind, subprocess.Popen([sys.executable, "-m", "training_runs_launcher", "rank", "--",
                                                 *command], env=environment, stdin=subprocess.DEVNULL)))
    stopping: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: stopping.append(received))
    while True:
        if stopping:
            _stop(children)
            return 128 + stopping[0]
        codes = [(kind, child.poll()) for kind, child in children]
        failed = [code for _, code in codes if code not in (None, 0)]
        if failed:
            _stop(children)
            return failed[0] if failed[0] > 0 else 128 - failed[0]
        if all(code == 0 for kind, code in codes if kind == "worker"):
            _stop(children)  # parameter servers serve until told to stop
            return 0
        time.sleep(0.05)


def run_tensorflow_task(workers: int, parameter_servers: int, command: list[str]) -> int:
    """One task of a TensorFlow job that ``srun`` spread over a Slurm allocation (``SLURM_PROCID``
    is its index: workers first, then parameter servers). It writes its address in the rank folder
    (the job folder, on the cluster's shared filesystem), reads every other task's there, and runs
    with the ``TF_CONFIG`` they make; a parameter server is stopped once every worker has ended."""
    import json
    import socket
    import subprocess

    index = int(os.environ.get("SLURM_PROCID", "0"))
    total = workers + parameter_servers
    folder = os.environ.get(RANK_LOG_DIR_VARIABLE) or "."
    os.makedirs(folder, exist_ok=True)
    _write_atomically(os.path.join(folder, f"tf_{index}.address"),
                      f"{socket.gethostname()}:{_free_ports(1, '')[0]}")
    deadline = time.monotonic() + _TF_RENDEZVOUS_SECONDS
    while True:
        try:
            addresses = []
            for other in range(total):
                with open(os.path.join(folder, f"tf_{other}.address")) as address:
                    addresses.append(address.read().strip())
            break
        except FileNotFoundError:
            if time.monotonic() > deadline:
                print(f"training-runs: TensorFlow task {index}: not every task of the job wrote its address in "
                      f"{_TF_RENDEZVOUS_SECONDS:g} s", file=sys.stderr, flush=True)
                return 2
            time.sleep(0.1)
    cluster: dict[str, list[str]] = {"worker": addresses[:workers]}
    if parameter_servers:
        cluster["ps"] = addresses[workers:]
    kind, task_index = ("worker", index) if index < workers else ("ps", index - workers)
    os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": kind, "index": task_index}})
    os.environ[RANK_VARIABLE] = str(index)
    for name in ("PMIX_RANK", "PMI_RANK"):  # this task's rank is its index in the job
        os.environ.pop(name, None)
    if kind == "worker":
        return run_rank(command)
    server = subprocess.Popen([sys.executable, "-m", _LAUNCHER_MODULE, "rank", "--", *command],
                              env={**os.environ, _PARENT_STOPS_VARIABLE: "1"}, stdin=subprocess.DEVNULL)
    stopping: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: stopping.append(received))
    worker_exits = [os.path.join(folder, f"rank_{worker}.exit") for worker in range(workers)]
    while server.poll() is None:
        if stopping or all(os.path.exists(path) for path in worker_exits):
            _stop([("ps", server)])  # parameter servers serve until told to stop
            return 128 + stopping[0] if stopping else 0
        time.sleep(0.2)
    code = server.returncode
    return code if code >= 0 else 128 - code


def _stop(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    running = [child for _, child in children if child.poll() is None]
    for child in running:
        child.terminate()
    deadline = time.monotonic() + _GRACE_SECONDS
    while time.monotonic() < deadline and any(child.poll() is None for child in running):
        time.sleep(0.05)
    for child in running:
        if child.poll() is None:
            child.kill()
            child.wait()


def _free_ports(count: int, interface: str = "127.0.0.1") -> list[int]:
    import socket

    sockets = []
    try:
        for _ in range(count):
            candidate = socket.socket()
            candidate.bind((interface, 0))
            sockets.append(candidate)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for candidate in sockets:
            candidate.close()


def _write_atomically(path: str, text: str) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as out:
        out.write(text)
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    """Entry point; see the module docstring."""
    if "--" not in argv or len(argv) < 2:
        print("usage: training_runs_launcher rank|tensorflow [--workers W --ps P] -- CMD...", file=sys.stderr)
        return 2
    split = argv.index("--")
    mode, options, command = argv[1], argv[2:split], argv[split + 1:]
    if mode == "rank":
        return run_rank(command)
    if mode == "script":
        return run_script(command)
    if mode == "torch":
        values = dict(zip(options[::2], options[1::2]))  # noqa: B905 - runs on Python 3.9 hosts too
        return run_torch_checked(values.get("--backend", "gloo"), command)
    if mode == "torchnode":
        values = dict(zip(options[::2], options[1::2]))  # noqa: B905 - runs on Python 3.9 hosts too
        return run_torch_node(values["--master"], values["--port"], command)
    if mode in ("tensorflow", "tftask"):
        values = dict(zip(options[::2], options[1::2]))  # noqa: B905 - runs on Python 3.9 hosts too
        run = run_tensorflow if mode == "tensorflow" else run_tensorflow_task
        return run(int(values.get("--workers", "1")), int(values.get("--ps", "0")), command)
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
