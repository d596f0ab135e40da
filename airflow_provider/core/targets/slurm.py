"""The Slurm target: a run is a Slurm job a cluster admin recognises, driven from the login node.

Everything but the scheduling is the SSH target's, on the cluster's login node: one paramiko
connection and the agent; a shared work root every node sees (blobs, environments and job folders
live there once for the whole cluster); environments built on the login node (offline when the
cluster reaches no index: the wheels are sent). Then:

* **launch**: the job folder is made on the shared root, and ``sbatch`` queues a batch script that
  runs our supervisor on the allocation's first node (the connection's setup lines first, e.g.
  ``module load python/3.11``). The job is named ``training-<run id>`` and commented with the run's
  id; its Slurm id is kept in the folder (``slurm.job``), so another process (a retried task, the
  triggerer) finds the same job; without that file (its launcher died as ``sbatch`` answered) the
  job is found by its name, and a retried launch never queues it twice. A distributed run's
  allocation and launch are :mod:`~airflow_provider.core.targets.slurm_layout`'s;
* **states**: ``exit.json`` in the folder says how a run ended, as on every target; until then
  ``squeue`` says whether the job waits (``queued``, with Slurm's reason: Priority, Resources...) or
  runs; a job that left the queue without ``exit.json`` ended in Slurm's hands, and ``sacct`` with
  ``slurmstepd``'s messages says how (:func:`~airflow_provider.core.targets.slurm_batch.ended_status`);
* **logs** are read from the folder on the shared root from byte offsets, through the login node;
* **cancel**: ``scancel``: a pending job is removed from the queue; a running one gets SIGTERM (our
  supervisor stops the run's tree and records it), then, after the cluster's ``KillWait``, Slurm
  kills what is left; the job is accounted ``CANCELLED``. The supervisor exits with the run's code,
  so a failed run's job is accounted ``FAILED``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from airflow_provider.core.distributed import DistributedConfig, MpiConfiguration, PyTorchConfiguration
from airflow_provider.core.environments.conda_builder import CondaMode
from airflow_provider.core.environments.prepared import PreparedEnvironment
from airflow_provider.core.environments.spec import Environment
from airflow_provider.core.errors import ConfigurationError, TargetError
from airflow_provider.core.live_logs import Grown
from airflow_provider.core.resources import Resources
from airflow_provider.core.snapshot import Snapshot, SnapshotStore
from airflow_provider.core.targets.base import Channel, ComputeTarget, JobHandle, JobSpec, JobStatus
from airflow_provider.core.targets.slurm_batch import (
    SLURM_OUTPUT,
    SlurmDefaults,
    batch_script,
    ended_status,
    sbatch_argv,
    time_limit_minutes,
)
from airflow_provider.core.targets.slurm_layout import slurm_layout
from airflow_provider.core.targets.ssh import SSHTarget
from airflow_provider.core.targets.ssh_connection import SSHSettings
from airflow_provider.runtime import job_runner

__all__ = ["SlurmTarget"]

log = logging.getLogger(__name__)

SLURM_JOB_FILE = "slurm.job"
"""The job folder's file holding the Slurm job id (written right after ``sbatch`` answered)."""
SLURM_REQUEST_FILE = "slurm.json"
"""The job folder's record of what was asked of Slurm (resources, time limit), for messages."""
_BATCH_SCRIPT = "slurm-batch.sh"
_MERGED_MARKER = ".events-merged"
_REFUSALS = ("invalid", "not available", "unrecognized", "unknown", "not allowed", "exceeded", "must be",
             "can't", "cannot", "denied", "not permitted")
_QUEUE_SECONDS = 10.0
"""How long a poll waits for ``squeue``: with the controller down it retries for half a minute, and
``sacct`` (the accounting daemon) answers meanwhile."""
_ENDING_CONFIRMED_SECONDS = 60.0
"""How long a cancel waits for Slurm's accounting to show the job's ending."""
_WAITING = ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED")


class SlurmTarget(ComputeTarget):
    """Run jobs on a Slurm cluster, through its login node.

    :param settings: the login node's SSH settings (see :class:`SSHSettings`).
    :param work_root: a folder every node of the cluster sees at the same path (the shared
        filesystem): blobs, environments and job folders.
    :param python: the interpreter on the login node and the compute nodes (same path on both).
    :param defaults: the cluster's defaults (partition, account, QOS, ``sbatch`` options, setup lines).
    :param keep_failed_job_folders: keep a failed run's job folder for debugging.
    :param cache_limits: as the SSH target's.
    :param build_timeout_seconds: an environment build step that runs longer fails.
    :param conda: how conda specifications are built (see :class:`SSHTarget`).
    """

    kind: ClassVar[str] = "slurm"
    wakes_on_end: ClassVar[bool] = True
    supported_resources: ClassVar[frozenset[str]] = frozenset(
        {"gpus", "gpu_type", "cpus", "memory_gb", "partition", "nodes", "tasks_per_node"})
    max_nodes: ClassVar[int] = 1 << 16  # what the cluster has: Slurm refuses more, with its own message

    def __init__(self, settings: SSHSettings, work_root: str, python: str = "python3",
                 defaults: SlurmDefaults | None = None, keep_failed_job_folders: bool = True,
                 cache_limits: dict[str, float] | None = None, build_timeout_seconds: float = 1800.0,
                 conda: CondaMode = "auto") -> None:
        self.login = SSHTarget(settings, work_root, python, keep_failed_job_folders, cache_limits,
                               build_timeout_seconds, conda)
        self.defaults = defaults or SlurmDefaults()
        self._slurm_ids: dict[str, str] = {}
        self._requests: dict[str, dict[str, Any]] = {}
        self._ended: dict[str, JobStatus] = {}
        self._merged: set[str] = set()

    # ------------------------------------------------------------------ spec
    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "login": self.login.to_spec(),
                "defaults": {"partition": self.defaults.partition, "account": self.defaults.account,
                             "qos": self.defaults.qos, "sbatch_options": list(self.defaults.sbatch_options),
                             "setup": list(self.defaults.setup), "mpi_launcher": self.defaults.mpi_launcher,
                             "srun_options": list(self.defaults.srun_options)}}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], secrets: dict[str, str] | None = None) -> SlurmTarget:
        """Rebuild from :meth:`to_spec` output (the login node's secrets as :meth:`SSHTarget.from_spec`'s).

        :param spec: the serialised target.
        :param secrets: the private key, passphrase and password.
        """
        login = SSHTarget.from_spec(spec["login"], secrets)
        defaults = spec.get("defaults") or {}
        target = cls(login.settings, login.work_root, login.python, SlurmDefaults(
            defaults.get("partition"), defaults.get("account"), defaults.get("qos"),
            tuple(defaults.get("sbatch_options") or ()), tuple(defaults.get("setup") or ()),
            defaults.get("mpi_launcher") or "srun", tuple(defaults.get("srun_options") or ())),
            login.keep_failed_job_folders, login.cache_limits, login.build_timeout_seconds, login.conda)
        return target

    def secret_environment(self) -> dict[str, str]:
        return self.login.secret_environment()

    def distribution_launcher(self, config: DistributedConfig) -> str:
        if isinstance(config, MpiConfiguration):
            return "srun (PMIx)" if self.defaults.mpi_launcher == "srun" else "mpirun in the allocation"
        if isinstance(config, PyTorchConfiguration):
            return "torchrun per node under srun"
        return "srun tasks with TF_CONFIG"

    def describe(self) -> str:
        partition = f", partition {self.defaults.partition}" if self.defaults.partition else ""
        return f"slurm (login node {self.login.settings.address}{partition})"

    def check(self) -> None:
        self.login.check()
        answer = self._run(["sinfo", "--version"])
        if answer["code"] != 0:
            raise ConfigurationError(
                "compute_target (training_slurm connection)",
                f"the login node {self.login.settings.address} has no Slurm commands ({answer['stderr'].strip()}).",
                "point the connection at a node where sbatch, squeue, sacct and scancel work, or add the lines that "
                "make them available (module load slurm) to its setup.")

    # ------------------------------------------------------------------ preparing
    def prepare_environment(self, environment: Environment | None) -> PreparedEnvironment:
        """Built once on the login node, under the shared root, so every compute node finds it."""
        return self.login.prepare_environment(environment)

    def mount_input(self, name: str, path: str, field: str) -> str:
        """A ``mount`` input of a Slurm run is a path of the cluster's shared filesystem, as it is
        (every node sees it at the same path)."""
        return path

    def stage(self, job_id: str, snapshot: Snapshot, store: SnapshotStore, extras: Mapping[str, bytes],
              environment: PreparedEnvironment) -> JobHandle:
        staged = self.login.stage(job_id, snapshot, store, extras, environment)
        return JobHandle(self.kind, job_id, staged.location)

    def launch(self, handle: JobHandle, spec: JobSpec) -> None:
        """Make the job folder on the shared root and queue the job, once: a launch retried after
        ``sbatch`` answered finds the job, by the id in the folder or by the job's name in Slurm."""
        job_dir = handle.location
        if self._slurm_id(handle, search=True) is not None:  # a retried launch: queued already
            return
        layout = slurm_layout(spec, self.defaults.mpi_launcher, self.defaults.srun_options)
        spec = dataclasses.replace(spec, argv=layout.argv)
        self.login.materialize(self._ssh(handle), spec, with_secrets=True)
        minutes = time_limit_minutes(spec.max_run_duration_seconds, spec.grace_seconds)
        script = f"{job_dir}/{_BATCH_SCRIPT}"
        request = {"resources": spec.resources.to_dict() if spec.resources else {}, "minutes": minutes}
        argv = sbatch_argv(job_dir, script, f"training-{handle.job_id}", f"mlflow run {handle.job_id}",
                           spec.resources, self.defaults, minutes, layout)
        files = {script: batch_script(self.login.python, self.login.runtime_dir, job_dir, self.defaults.setup),
                 f"{job_dir}/{SLURM_REQUEST_FILE}": json.dumps(request)}
        answer = self._run(argv, files=files, timeout=120)
        if answer["code"] != 0:
            self._refused(answer["stderr"] or answer["stdout"], argv)
        slurm_id = answer["stdout"].strip().split(";")[0]
        if not slurm_id.isdigit():
            raise TargetError(f"sbatch on {self.login.settings.address} answered {answer['stdout']!r}, not a job id")
        self._run(["true"], files={f"{job_dir}/{SLURM_JOB_FILE}": slurm_id})
        self._slurm_ids[handle.job_id] = slurm_id
        self._requests[handle.job_id] = request
        log.info("Run %s is Slurm job %s on %s", handle.job_id, slurm_id, self.login.settings.address)

    def _refused(self, message: str, argv: list[str]) -> None:
        text = message.strip() or "no message"
        if any(word in text.lower() for word in _REFUSALS):
            raise ConfigurationError("ScriptRunConfig.resources (or the training_slurm connection)",
                                     f"Slurm refused the job: {text}",
                                     f"change what the run asks for ({' '.join(argv[8:-1])}) to what the cluster has "
                                     "(sinfo lists its partitions and nodes).")
        raise TargetError(f"sbatch on {self.login.settings.address} failed: {text}")

    def find(self, job_id: str) -> JobHandle | None:
        found = self.login.find(job_id)
        return JobHandle(self.kind, job_id, found.location) if found is not None else None

    # ------------------------------------------------------------------ watching
    def wait(self, handle: JobHandle, timeout: float) -> None:
        self.login.wait(self._ssh(handle), timeout)

    def poll(self, handle: JobHandle) -> JobStatus:
        status = self._status(handle)
        if not status.active:
            status = self._explained(handle, status)
            self._merge_node_events(handle)
            self._ended[handle.job_id] = status  # cleanup keeps a failed run's folder, not a good one's
        return status

    def _merge_node_events(self, handle: JobHandle) -> None:
        """Append the ranks' events of the other nodes (``events.<host>.jsonl``) to the run's
        events file, once, so their metrics reach MLflow (a line cut short by a killed rank is left out)."""
        if handle.job_id in self._merged:
            return
        listing = self._run(["find", handle.location, "-maxdepth", "1", "-type", "f", "-name", "events.*.jsonl"])
        data = b""
        for path in sorted(line for line in listing["stdout"].split("\n") if line):
            content = self.login.read_file(path) or b""
            data += content[:content.rfind(b"\n") + 1]
        if data:
            self.login.append_once(f"{handle.location}/{job_runner.EVENTS_FILE}", data,
                                   f"{handle.location}/{_MERGED_MARKER}")
        self._merged.add(handle.job_id)

    def _explained(self, handle: JobHandle, status: JobStatus) -> JobStatus:
        """A failure the supervisor recorded, said as Slurm's when Slurm caused it: ``slurmstepd``
        killing a step over its memory (``srun`` then only exits 137) reads as out of memory."""
        if status.state != "ended" or status.succeeded or status.reason in (
                job_runner.REASON_CANCELED, job_runner.REASON_TIMEOUT, "oom"):
            return status
        logs = [f"{handle.location}/{name}" for name in (job_runner.DRIVER_LOG, SLURM_OUTPUT)]
        tail = self._run(["tail", "-q", "-c", "16384", *logs])["stdout"]
        if "exceeded memory limit" not in tail and "oom-kill" not in tail.lower():
            return status
        return ended_status("OUT_OF_MEMORY", f"{status.exit_code or 0}:{status.signal or 9}", tail,
                            Resources.from_dict(self._request(handle).get("resources")), None)

    def _status(self, handle: JobHandle) -> JobStatus:
        ended = self._exit(handle)
        if ended is not None:
            return ended
        slurm_id = self._slurm_id(handle, search=True)
        if slurm_id is None:
            found = self.login.find(handle.job_id)
            return JobStatus("not_found") if found is None else JobStatus(
                "lost", message="the job folder exists but no Slurm job was queued for it (its launch failed)")
        queue = self._run(["squeue", "-h", "-j", slurm_id, "-o", "%T|%r"], timeout=_QUEUE_SECONDS)
        state, _, reason = queue["stdout"].strip().partition("|")
        if queue["code"] == 0 and state in _WAITING:
            why = reason if reason and reason != "None" else "about to be scheduled"
            return JobStatus("queued", message=f"Slurm job {slurm_id} is {state.lower()}: {why}")
        if queue["code"] == 0 and state:
            return JobStatus("running")
        return self._ended_in_slurm(handle, slurm_id)

    def _ended_in_slurm(self, handle: JobHandle, slurm_id: str) -> JobStatus:
        """A job gone from the queue: its ``exit.json`` (written a moment ago), else ``sacct``."""
        ended = self._exit(handle)
        if ended is not None:
            return ended
        account = self._run(["sacct", "-n", "-X", "-P", "-j", slurm_id, "-o", "State,ExitCode"])
        state, _, exit_code = account["stdout"].strip().partition("|")
        if account["code"] != 0 or not state or state in ("PENDING", "RUNNING", "COMPLETING"):
            return JobStatus("running")  # accounting lags the queue by a moment
        ended = self._exit(handle)  # the supervisor may have written it while sacct answered
        if ended is not None:
            return ended
        request = self._request(handle)
        output = self.login.read_file(f"{handle.location}/{SLURM_OUTPUT}") or b""
        resources = Resources.from_dict(request.get("resources"))
        return ended_status(state, exit_code, output[-4096:].decode(errors="replace"), resources,
                            request.get("minutes"))

    def _exit(self, handle: JobHandle) -> JobStatus | None:
        data = self.login.read_file(f"{handle.location}/{job_runner.EXIT_STATE}")
        if data is None:
            return None
        try:
            return JobStatus.from_exit_json(json.loads(data))
        except ValueError:
            return None  # being written: the next poll reads it whole

    def read(self, handle: JobHandle, channel: Channel, offset: int, limit: int = 4 << 20) -> bytes:
        return self.login.read(self._ssh(handle), channel, offset, limit)

    def read_grown(self, handle: JobHandle, relative_dir: str, sent: Mapping[str, int],
                   scratch: Path) -> dict[str, Grown]:
        return self.login.read_grown(self._ssh(handle), relative_dir, sent, scratch)

    def fetch(self, handle: JobHandle, relative_path: str, scratch: Path) -> Path | None:
        return self.login.fetch(self._ssh(handle), relative_path, scratch)

    # ------------------------------------------------------------------ control
    def cancel(self, handle: JobHandle, grace_seconds: float = 10.0, wait: bool = True) -> None:
        """``scancel``: a pending job leaves the queue; every process of a running one gets SIGTERM
        (the supervisor stops the run's tree and records it), and whatever is left SIGKILL after the
        cluster's ``KillWait``; ``sacct`` shows the job ``CANCELLED``."""
        if self._slurm_id(handle) is None or self._exit(handle) is not None:
            return
        # By the job's name, never by the id read from the folder: the run's script can write there,
        # and must not make us cancel another job.
        name = f"--name=training-{handle.job_id}"
        queue = self._run(["squeue", "-h", name, "-o", "%T"])
        if queue["stdout"].strip() in _WAITING:
            self._run(["scancel", name])
            self._record_canceled_in_queue(handle, name)
        else:  # Slurm sends every process of the job SIGTERM, and SIGKILL after the cluster's KillWait
            self._run(["scancel", name])
            if not wait:
                return
            deadline = time.monotonic() + grace_seconds + 15
            while time.monotonic() < deadline:
                if self._exit(handle) is not None or not self._run(["squeue", "-h", name, "-o", "%T"])["stdout"]:
                    break
                time.sleep(0.5)
        if wait:
            self._wait_for_ending(handle, _ENDING_CONFIRMED_SECONDS)

    def _record_canceled_in_queue(self, handle: JobHandle, name: str) -> None:
        """A job canceled before it started has no supervisor to record its ending: write its
        ``exit.json`` here, so every watcher reads Canceled at once (``sacct`` may lag for a while)."""
        if self._run(["squeue", "-h", name, "-o", "%T"])["stdout"].strip() or self._exit(handle) is not None:
            return  # it started meanwhile: its supervisor got the stop and records the ending
        ending = {"exit_code": None, "signal": None, "reason": job_runner.REASON_CANCELED,
                  "message": "the run was canceled while its Slurm job waited in the queue", "ended_at": time.time()}
        self._run(["true"], files={f"{handle.location}/{job_runner.EXIT_STATE}": json.dumps(ending)})

    def _wait_for_ending(self, handle: JobHandle, seconds: float) -> None:
        """Until the job's ending can be read: Slurm's accounting lags the queue (more so under load),
        and a run finalized from a job still shown pending or running would read as failed."""
        deadline = time.monotonic() + seconds
        while self._status(handle).active and time.monotonic() < deadline:
            time.sleep(0.5)

    def cleanup(self, handle: JobHandle) -> None:
        ended = self._ended.pop(handle.job_id, None) or self._exit(handle)
        self.login.cleanup(self._ssh(handle), ended)

    # ------------------------------------------------------------------ helpers
    def _ssh(self, handle: JobHandle) -> JobHandle:
        return JobHandle(self.login.kind, handle.job_id, handle.location)

    def _run(self, argv: list[str], files: dict[str, str] | None = None, timeout: float = 60) -> dict[str, Any]:
        self.login.hello()
        return self.login.agent("run", {"argv": argv, "files": files or {}, "timeout": timeout},
                                timeout=timeout + 30)

    def _slurm_id(self, handle: JobHandle, search: bool = False) -> str | None:
        """The job's Slurm id: remembered, else from the job folder, else (``search``) from Slurm
        by the job's name, for a job queued by a process that died before writing it down."""
        if handle.job_id not in self._slurm_ids:
            data = self.login.read_file(f"{handle.location}/{SLURM_JOB_FILE}")
            if data is not None and data.strip().isdigit():
                self._slurm_ids[handle.job_id] = data.decode().strip()
            elif search and self.login.read_file(f"{handle.location}/{_BATCH_SCRIPT}") is not None and (
                    found := self._queued_by_name(handle.job_id)) is not None:  # sbatch was run: did it queue?
                self._run(["true"], files={f"{handle.location}/{SLURM_JOB_FILE}": found})
                self._slurm_ids[handle.job_id] = found
            else:
                return None
        return self._slurm_ids[handle.job_id]

    def _queued_by_name(self, job_id: str) -> str | None:
        """The id of the job named for this run, in the queue or in the accounting of the last weeks."""
        name = f"training-{job_id}"
        ids = self._run(["squeue", "-h", f"--name={name}", "-o", "%i"])["stdout"].split()
        if not ids:
            ids = self._run(["sacct", "-n", "-X", "-P", f"--name={name}", "-S", "now-14days", "-o", "JobID"])[
                "stdout"].split()
        ids = [found for found in ids if found.isdigit()]
        return ids[-1] if ids else None

    def was_launched(self, handle: JobHandle) -> bool:
        """Slurm knows a job by the run's name: it was queued, whatever the folder says."""
        return self._slurm_id(handle, search=True) is not None

    def _request(self, handle: JobHandle) -> dict[str, Any]:
        if handle.job_id not in self._requests:
            data = self.login.read_file(f"{handle.location}/{SLURM_REQUEST_FILE}")
            try:
                self._requests[handle.job_id] = json.loads(data) if data else {}
            except ValueError:
                self._requests[handle.job_id] = {}
        return self._requests[handle.job_id]
