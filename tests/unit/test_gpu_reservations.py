"""The host's GPU reservation ledger: real processes as owners, the real lock, files shared by the host's users."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider.runtime import gpu_reservations
from airflow_provider.runtime.gpu_reservations import (
    Owner,
    ReservationLedger,
    discover_gpus,
    owner_alive,
    parse_nvidia_smi_list,
    process_start_ticks,
)

RUNTIME = Path(gpu_reservations.__file__).resolve().parent
DEVICES = ["0", "1", "2"]


@pytest.fixture
def ledger(tmp_path: Path) -> ReservationLedger:
    return ReservationLedger(str(tmp_path / "reservations" / "reservations.json"))


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process to own reservations (a supervisor stand-in)."""
    process = subprocess.Popen(["sleep", "30"])
    yield process
    process.kill()
    process.wait()


def _owner_of(process: subprocess.Popen[bytes], job_dir: str) -> Owner:
    ticks = process_start_ticks(process.pid)
    assert ticks is not None
    return Owner(job_dir, process.pid, ticks)


def test_a_second_job_waits_while_too_few_gpus_are_free_and_gets_them_once_released(
        ledger: ReservationLedger) -> None:
    first, second = Owner.current("/jobs/first"), Owner.current("/jobs/second")
    assert first.job_dir == "/jobs/first" and first.pid == os.getpid() and first.start_ticks is not None
    assert ledger.try_reserve_gpus(first, 2, DEVICES) == ["0", "1"]
    assert ledger.try_reserve_gpus(first, 2, DEVICES) == ["0", "1"], "a second call of the holder is idempotent"
    assert ledger.try_reserve_gpus(second, 2, DEVICES) is None
    reason = ledger.waiting_reason(2, DEVICES)
    assert re.fullmatch(r"waiting for 2 GPUs: 1 of 3 free on this host "
                        r"\(GPUs 0,1 held by job /jobs/first since \d\d:\d\d:\d\d\)", reason), reason
    assert ledger.holders()["/jobs/first"]["gpus"] == ["0", "1"]

    ledger.release(first)
    ledger.release(first)  # nothing held: nothing happens
    granted = ledger.try_reserve_gpus(second, 2, DEVICES)
    assert granted is not None and len(granted) == 2 and set(granted) <= set(DEVICES)
    third = Owner.current("/jobs/third")
    rest = ledger.try_reserve_gpus(third, 1, DEVICES)
    assert rest is not None and not set(rest) & set(granted), "never a device another job holds"
    assert {job: entry["gpus"] for job, entry in ledger.holders().items()} == {
        "/jobs/second": granted, "/jobs/third": rest}
    assert ledger.waiting_reason(1, DEVICES).startswith("waiting for 1 GPU: 0 of 3 free on this host (GPU")


def test_zero_gpus_reserve_nothing_and_an_impossible_count_fails_at_once_naming_the_hosts_gpus(
        ledger: ReservationLedger) -> None:
    owner = Owner.current("/jobs/a")
    assert ledger.try_reserve_gpus(owner, 0, DEVICES) == []
    with pytest.raises(ValueError, match=r"resources\.gpus asks for 4 GPUs but this host has only 3 \(GPUs 0,1,2\)"):
        ledger.try_reserve_gpus(owner, 4, DEVICES)
    with pytest.raises(ValueError, match=r"resources\.gpus asks for 1 GPU but this host has no GPUs"):
        ledger.try_reserve_gpus(owner, 1, [])
    assert ledger.holders() == {}


def test_the_gpus_of_a_killed_owner_are_reclaimed(ledger: ReservationLedger,
                                                  sleeper: subprocess.Popen[bytes]) -> None:
    victim, waiter = _owner_of(sleeper, "/jobs/victim"), Owner.current("/jobs/waiter")
    assert ledger.try_reserve_gpus(victim, 2, ["0", "1"]) == ["0", "1"]
    assert ledger.try_reserve_gpus(waiter, 1, ["0", "1"]) is None
    sleeper.kill()  # kill -9 of the supervisor: it releases nothing
    sleeper.wait()
    assert ledger.try_reserve_gpus(waiter, 2, ["0", "1"]) == ["0", "1"]
    assert list(ledger.holders()) == ["/jobs/waiter"]


def test_an_unreaped_owner_is_dead(ledger: ReservationLedger, sleeper: subprocess.Popen[bytes]) -> None:
    victim = _owner_of(sleeper, "/jobs/victim")
    assert ledger.try_reserve_gpus(victim, 1, ["0"]) == ["0"]
    sleeper.kill()
    while process_start_ticks(sleeper.pid) is not None:  # until it is a zombie (its parent has not reaped it)
        pass
    assert not owner_alive(victim.pid, victim.start_ticks)
    assert ledger.try_reserve_gpus(Owner.current("/jobs/next"), 1, ["0"]) == ["0"]


def test_a_reused_pid_is_not_the_owner(ledger: ReservationLedger, sleeper: subprocess.Popen[bytes]) -> None:
    real = _owner_of(sleeper, "/jobs/real")
    assert real.start_ticks is not None
    earlier = Owner("/jobs/earlier", sleeper.pid, real.start_ticks - 1)  # what ran under this pid before
    assert owner_alive(real.pid, real.start_ticks) and not owner_alive(earlier.pid, earlier.start_ticks)
    assert ledger.try_reserve_gpus(earlier, 2, ["0", "1"]) == ["0", "1"]
    assert ledger.try_reserve_gpus(real, 2, ["0", "1"]) == ["0", "1"], "the entry of the pid's earlier process is dead"
    assert list(ledger.holders()) == ["/jobs/real"]


def test_a_live_process_of_the_same_job_keeps_its_entry(ledger: ReservationLedger,
                                                        sleeper: subprocess.Popen[bytes]) -> None:
    running, restarted = _owner_of(sleeper, "/jobs/same"), Owner.current("/jobs/same")
    assert ledger.try_reserve_gpus(running, 1, DEVICES) == ["0"]
    assert ledger.try_reserve_gpus(restarted, 1, DEVICES) is None  # one entry per job: it waits for the other
    ledger.release(restarted)  # not its entry
    assert ledger.holders()["/jobs/same"]["pid"] == sleeper.pid
    sleeper.kill()
    sleeper.wait()
    assert ledger.try_reserve_gpus(restarted, 1, DEVICES) == ["0"]


RACER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import gpu_reservations
    ledger = gpu_reservations.ReservationLedger(sys.argv[2])
    owner = gpu_reservations.Owner.current(sys.argv[3])
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(ledger.try_reserve_gpus(owner, 1, ["0", "1", "2", "3"])), flush=True)
    sys.stdin.readline()  # alive (holding) until the test has every answer
""")


def test_eight_processes_racing_for_four_gpus_get_four_disjoint_reservations(tmp_path: Path) -> None:
    path = str(tmp_path / "shared" / "reservations.json")
    racers = [subprocess.Popen([sys.executable, "-I", "-S", "-c", RACER, str(RUNTIME), path, f"/jobs/racer{i}"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(8)]
    try:
        for racer in racers:
            assert racer.stdout is not None and racer.stdout.readline() == "ready\n"
        for racer in racers:  # every one is started and waiting: now they all reserve at once
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        answers = [json.loads(racer.stdout.readline()) for racer in racers if racer.stdout is not None]
        granted = [answer for answer in answers if answer is not None]
        assert len(granted) == 4 and sorted(device for devices in granted for device in devices) == ["0", "1", "2", "3"]
        assert len(ReservationLedger(path).holders()) == 4
    finally:
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.close()
        for racer in racers:
            assert racer.wait(timeout=30) == 0
    assert ReservationLedger(path).try_reserve_gpus(Owner.current("/jobs/after"), 4, ["0", "1", "2", "3"]) == [
        "0", "1", "2", "3"], "the racers ended: everything they held is free"


@pytest.mark.parametrize("content", ["{not json", "", '["a list"]', '{"holders": {"/jobs/x": {"pid": "nope"}}}'])
def test_an_unreadable_ledger_is_empty_and_rewritten(ledger: ReservationLedger, content: str) -> None:
    os.makedirs(os.path.dirname(ledger.path))
    Path(ledger.path).write_text(content)
    assert ledger.try_reserve_gpus(Owner.current("/jobs/a"), 1, DEVICES) == ["0"]
    assert list(json.loads(Path(ledger.path).read_text())["holders"]) == ["/jobs/a"]


def test_the_ledger_folder_and_files_are_shared_by_the_hosts_users_whatever_the_umask(tmp_path: Path) -> None:
    folder = tmp_path / "made" / "training-runs"
    ledger = ReservationLedger(str(folder / "reservations.json"))
    previous = os.umask(0o077)
    try:
        assert ledger.try_reserve_gpus(Owner.current("/jobs/a"), 1, DEVICES) == ["0"]
    finally:
        os.umask(previous)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o1777
    assert stat.S_IMODE((folder / "reservations.json").stat().st_mode) == 0o666
    assert stat.S_IMODE((folder / "reservations.json.lock").stat().st_mode) == 0o666
    assert sorted(p.name for p in folder.iterdir()) == ["reservations.json", "reservations.json.lock"]

    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    (existing / "reservations.json.lock").touch(mode=0o600)
    kept = ReservationLedger(str(existing / "reservations.json"))
    assert kept.try_reserve_gpus(Owner.current("/jobs/a"), 1, DEVICES) == ["0"]
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755, "an existing folder is used as it is"
    assert stat.S_IMODE((existing / "reservations.json.lock").stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"), reason="needs root to be another user")
def test_another_user_updates_a_ledger_it_does_not_own_in_the_sticky_folder() -> None:
    # The sticky bit forbids replacing another user's file: the ledger is then rewritten in place.
    top = tempfile.mkdtemp(prefix="reservations-")  # not under tmp_path, which other users cannot enter
    try:
        os.chmod(top, 0o755)
        shutil.copy(RUNTIME / "gpu_reservations.py", top)
        os.chmod(os.path.join(top, "gpu_reservations.py"), 0o644)
        path = os.path.join(top, "shared", "reservations.json")
        assert ReservationLedger(path).try_reserve_gpus(Owner.current("/jobs/root"), 1, DEVICES) == ["0"]
        other = subprocess.run(
            ["/usr/bin/python3", "-I", "-S", "-c", textwrap.dedent(f"""
                import sys
                sys.path.insert(0, {top!r})
                import gpu_reservations as g
                print(g.ReservationLedger({path!r}).try_reserve_gpus(g.Owner.current("/jobs/nobody"), 1, ["0", "1"]))
            """)], user=65534, group=65534, cwd="/", capture_output=True, text=True, timeout=30)
        assert (other.returncode, other.stdout) == (0, "['1']\n"), other.stderr
        assert os.stat(path).st_uid == 0, "rewritten in place, not replaced"
        assert sorted(os.listdir(os.path.dirname(path))) == ["reservations.json", "reservations.json.lock"]
        assert list(ReservationLedger(path).holders()) == ["/jobs/root"]  # the other user's process has ended
    finally:
        shutil.rmtree(top)


def test_cpus_go_to_the_least_used(ledger: ReservationLedger) -> None:
    first, second, third = (Owner.current(f"/jobs/{name}") for name in ("first", "second", "third"))
    assert ledger.assign_cpus(first, 2, [3, 2, 1, 0]) == [0, 1]
    assert ledger.assign_cpus(first, 2, [0, 1, 2, 3]) == [0, 1], "a second call gets the same CPUs"
    assert ledger.assign_cpus(second, 2, [0, 1, 2, 3]) == [2, 3]
    assert ledger.assign_cpus(third, 3, [0, 1, 2, 3]) == [0, 1, 2]
    assert ledger.assign_cpus(Owner.current("/jobs/all"), 8, [0, 1, 2, 3]) == [0, 1, 2, 3]
    ledger.release(first)
    assert ledger.holders()["/jobs/second"]["cpus"] == [2, 3] and "/jobs/first" not in ledger.holders()
    with pytest.raises(ValueError, match=r"resources\.cpus"):
        ledger.assign_cpus(first, 0, [0, 1])


def test_gpus_and_cpus_of_one_job_are_one_entry_released_together(ledger: ReservationLedger) -> None:
    owner = Owner.current("/jobs/a")
    assert ledger.try_reserve_gpus(owner, 1, DEVICES) == ["0"]
    assert ledger.assign_cpus(owner, 1, [0, 1]) == [0]
    entry = ledger.holders()["/jobs/a"]
    assert (entry["gpus"], entry["cpus"], entry["pid"]) == (["0"], [0], os.getpid())
    ledger.release(owner)
    assert ledger.holders() == {}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU here")
def test_two_jobs_get_different_cpus_of_this_process(ledger: ReservationLedger) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    first = ledger.assign_cpus(Owner.current("/jobs/a"), 1, allowed)
    second = ledger.assign_cpus(Owner.current("/jobs/b"), 1, allowed)
    assert len(first) == len(second) == 1 and first != second and set(first + second) <= set(allowed)


NVIDIA_SMI_L = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5a3c1b2e-0000-1111-2222-333344445555)
  MIG 1g.5gb      Device  0: (UUID: MIG-9d1f0c3a-aaaa-bbbb-cccc-ddddeeeeffff)
  MIG 1g.5gb      Device  1: (UUID: MIG-0e2a1d4b-aaaa-bbbb-cccc-ddddeeeeffff)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-6b4d2c3f-0000-1111-2222-333344445555)
GPU 2: NVIDIA GeForce RTX 3090 (UUID: GPU-7c5e3d40-0000-1111-2222-333344445555)
"""


def test_nvidia_smi_lists_gpus_not_mig_instances() -> None:
    assert parse_nvidia_smi_list(NVIDIA_SMI_L) == ["0", "1", "2"]
    assert parse_nvidia_smi_list("No devices were found\n") == []
    assert parse_nvidia_smi_list("") == []


def test_gpus_are_discovered_with_nvidia_smi_when_it_is_there(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert discover_gpus() == []  # no nvidia-smi
    fake = tmp_path / "nvidia-smi"
    echoes = "".join(f"echo '{line}'\n" for line in NVIDIA_SMI_L.splitlines())  # the shell's own echo: no PATH
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] || exit 2\n{echoes}")
    fake.chmod(0o755)
    assert discover_gpus() == ["0", "1", "2"]
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: it could not communicate with the driver'\nexit 9\n")
    assert discover_gpus() == []
    fake.write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 30\n")
    assert discover_gpus(timeout=0.2) == []
