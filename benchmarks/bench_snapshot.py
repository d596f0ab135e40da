"""Snapshot staging and the first use of the embedded store, each against its floor measured in the same run.

Run as ``.venv/bin/python benchmarks/bench_snapshot.py [--files N] [--mb M] [--repeat R] [--quick]``. It
generates a source tree of N files totalling M MB (default 10,000 files / 200 MB) in a temp folder and
measures, R times interleaved (medians reported, ratios of medians):

1. **take and stage**, separately, cold (a new snapshot store) and warm (the same store again), beside
   their floors: ``cp -a`` of the tree, ``rm -rf`` of such a copy, sha256 of every file (one thread);
2. **submits**: the time a big tree adds to ``Experiment.submit(...).wait_for_completion()`` on the local
   target (the same run with a one-file source folder subtracted), warm and cold snapshot store, beside
   the floors measured in the same loop;
3. **first use of the embedded store** (``Tracker().client`` on a new SQLite store, in a fresh interpreter,
   import excluded): MLflow creating the schema (an empty schema cache) vs a copy of the cached one.

The last line of stdout is ``SUMMARY k=v ... PASS|FAIL``; ``bench_core.py`` calls :func:`run_benchmark`.
Goals: a warm submit adds <= 1.2x (cp -a + warm take); a cold one <= 1.3x (sha256 + 2x cp -a); a
warm take < 0.1x a cold one; one changed file stores one blob.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider.core.snapshot import SnapshotStore
from airflow_provider.core.targets.local import LocalTarget

FOLDERS = ["src", "src/models", "src/models/layers", "src/data", "configs", "notebooks", "assets/img"]
GOAL_WARM_SUBMIT = 1.2
GOAL_COLD_SUBMIT = 1.3
GOAL_WARM_OVER_COLD_TAKE = 0.1
FIRST_USE_CODE = (  # what opening any store imports is imported first: only the store's creation is timed
    "import time, mlflow.tracking, mlflow.store.tracking.sqlalchemy_store\n"
    "from airflow_provider.core.tracking import Tracker\n"
    "started = time.perf_counter()\n"
    "Tracker().client\n"
    "print(time.perf_counter() - started)\n"
)


def generate(source: Path, files: int, total_bytes: int, seed: int = 7) -> None:
    """Write ``files`` files of random-ish content totalling about ``total_bytes`` under ``source``.

    :param source: the folder to fill.
    :param files: number of files.
    :param total_bytes: total size of the files.
    :param seed: random seed, so the tree is the same on every run.
    """
    rng = random.Random(seed)
    pool = os.urandom(4 * 1024 * 1024)  # slices of a random pool: incompressible, cheap to make
    # A few big files (weights, data) and many small ones, like a real project.
    big = [total_bytes // 8, total_bytes // 16, total_bytes // 32]
    rest = total_bytes - sum(big)
    sizes = big + [rest // (files - len(big))] * (files - len(big))
    (source / ".gitignore").write_text("__pycache__/\n*.pyc\n/outputs/\n")
    for name in [*FOLDERS, "outputs"]:
        (source / name).mkdir(parents=True, exist_ok=True)
    for index, size in enumerate(sizes):
        folder = source / FOLDERS[index % len(FOLDERS)] / f"part{index % 10}"
        folder.mkdir(exist_ok=True)
        with open(folder / f"file{index:05d}.bin", "wb") as handle:
            handle.write(index.to_bytes(8, "little"))  # every file distinct
            remaining = size - 8
            while remaining > 0:
                start = rng.randrange(0, len(pool) - 1)
                chunk = pool[start : start + min(remaining, len(pool) - start)]
                handle.write(chunk)
                remaining -= len(chunk)
    (source / "outputs" / "ignored.bin").write_bytes(pool)
    (source / "train.py").write_text('print("ok")\n')


def age(source: Path, seconds: float = 60.0) -> None:
    """Set every file's mtime ``seconds`` into the past, so the racy-cache rule does not fire.

    :param source: the folder whose files to age.
    :param seconds: how far back.
    """
    past = time.time() - seconds
    for folder, _, names in os.walk(source):
        for name in names:
            os.utime(os.path.join(folder, name), (past, past))


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``action``; return (seconds, what it returned)."""
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value


def cp_a(source: Path, dest: Path) -> float:
    """Seconds of ``cp -a source dest``: the floor of an independent copy of the tree."""
    return timed(lambda: subprocess.run(["cp", "-a", str(source), str(dest)], check=True))[0]


def rm_rf(path: Path) -> float:
    """Seconds of ``rm -rf path``."""
    return timed(lambda: subprocess.run(["rm", "-rf", str(path)], check=True))[0]


def sha256_all(source: Path) -> float:
    """Seconds to sha256 every file of ``source``, one after the other (the floor of a cold take)."""
    def run() -> None:
        for folder, _, names in os.walk(source):
            for name in names:
                digest = hashlib.sha256()
                with open(os.path.join(folder, name), "rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)

    return timed(run)[0]


def median(samples: list[float]) -> float:
    """The median of ``samples``."""
    return statistics.median(samples)


def take_and_stage(source: Path, scratch: Path, repeat: int) -> dict[str, Any]:
    """Section 1: take (cold, warm) and stage (LocalTarget.stage) and cleanup, beside cp -a / sha256 / rm -rf."""
    samples: dict[str, list[float]] = {name: [] for name in (
        "cp_a", "rm_rf", "sha256", "take_cold", "take_warm", "stage", "cleanup")}
    target = LocalTarget(jobs_root=scratch / "jobs")
    prepared = target.prepare_environment(None)
    cold = warm = None
    for index in range(repeat):
        samples["cp_a"].append(cp_a(source, scratch / "copy"))
        samples["rm_rf"].append(rm_rf(scratch / "copy"))
        samples["sha256"].append(sha256_all(source))
        store = SnapshotStore(scratch / f"store{index}")
        seconds, cold = timed(lambda: store.take(source, max_bytes=1 << 40))  # noqa: B023 (called at once)
        samples["take_cold"].append(seconds)
        seconds, warm = timed(lambda: store.take(source, max_bytes=1 << 40))  # noqa: B023
        samples["take_warm"].append(seconds)
        started = time.perf_counter()
        handle = target.stage(f"bench{index}", warm.snapshot, store, {}, prepared)
        samples["stage"].append(time.perf_counter() - started)
        started = time.perf_counter()
        target.cleanup(handle)
        samples["cleanup"].append(time.perf_counter() - started)
        shutil.rmtree(store.root)
    assert cold is not None and warm is not None
    result: dict[str, Any] = {name: median(values) for name, values in samples.items()}
    result["samples"] = samples
    result["new_blobs_cold"], result["new_blobs_warm"] = cold.new_blobs, warm.new_blobs
    result["take_cold_over_floor"] = result["take_cold"] / (result["sha256"] + result["cp_a"])
    result["stage_over_cp_a"] = result["stage"] / result["cp_a"]
    result["cleanup_over_rm_rf"] = result["cleanup"] / result["rm_rf"]
    result["warm_over_cold_take"] = result["take_warm"] / result["take_cold"]
    warm_floor, cold_floor = result["cp_a"] + result["take_warm"], result["sha256"] + 2 * result["cp_a"]
    result["warm_staging_over_floor"] = (result["take_warm"] + result["stage"]) / warm_floor
    result["cold_staging_over_floor"] = (result["take_cold"] + result["stage"]) / cold_floor
    return result


def one_changed_file(source: Path, scratch: Path) -> dict[str, Any]:
    """A warm store, then one file changed: how long the take is and how many blobs it stores."""
    store = SnapshotStore(scratch / "store-changed")
    store.take(source, max_bytes=1 << 40)
    changed = next((source / "src").rglob("*.bin"))
    original = changed.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0xFF
    changed.write_bytes(bytes(data))
    try:
        seconds, result = timed(lambda: store.take(source, max_bytes=1 << 40))
    finally:
        changed.write_bytes(original)
        age(source)
        shutil.rmtree(store.root)
    return {"one_changed_s": seconds, "one_changed_new_blobs": result.new_blobs}


def submits(source: Path, scratch: Path, state: Path, repeat: int) -> dict[str, Any]:
    """Section 2: what the big tree adds to submit+wait, warm and cold snapshot store, beside its floors."""
    from airflow_provider.core import Experiment, ScriptRunConfig

    small = scratch / "small"
    small.mkdir()
    (small / "train.py").write_text('print("ok")\n')
    limit_mb = 2 * sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) // (1 << 20) + 10
    experiment = Experiment("bench-snapshot")

    def submit_wait(folder: Path) -> float:
        config = ScriptRunConfig(folder, "train.py", snapshot_size_limit_mb=limit_mb)
        return timed(lambda: experiment.submit(config).wait_for_completion())[0]

    submit_wait(small)  # creates the store and experiment, imports MLflow
    submit_wait(source)  # the stat cache and blobs of the big tree
    samples: dict[str, list[float]] = {name: [] for name in ("small", "big_warm", "big_cold", "cp_a", "sha256",
                                                               "take_warm")}
    for _ in range(repeat):
        samples["small"].append(submit_wait(small))
        samples["big_warm"].append(submit_wait(source))
        shutil.rmtree(state / "snapshots")
        samples["big_cold"].append(submit_wait(source))
        samples["cp_a"].append(cp_a(source, scratch / "copy"))
        rm_rf(scratch / "copy")
        samples["sha256"].append(sha256_all(source))
        samples["take_warm"].append(timed(lambda: SnapshotStore().take(source, max_bytes=1 << 40))[0])
    result: dict[str, Any] = {name: median(values) for name, values in samples.items()}
    result["samples"] = samples
    result["added_warm"] = result["big_warm"] - result["small"]
    result["added_cold"] = result["big_cold"] - result["small"]
    result["floor_warm"] = result["cp_a"] + result["take_warm"]
    result["floor_cold"] = result["sha256"] + 2 * result["cp_a"]
    result["warm_over_floor"] = result["added_warm"] / result["floor_warm"]
    result["cold_over_floor"] = result["added_cold"] / result["floor_cold"]
    return result


def first_use(scratch: Path, repeat: int) -> dict[str, Any]:
    """Section 3: ``Tracker().client`` on a new embedded store in a fresh interpreter (import excluded)."""
    repository = str(Path(__file__).resolve().parents[1])
    warm_cache = scratch / "schema-cache-warm"

    def open_new_store(cache: Path) -> float:
        home = Path(tempfile.mkdtemp(prefix="store-", dir=scratch))
        env = {**os.environ, "TRAINING_RUNS_HOME": str(home), "TRAINING_RUNS_CACHE": str(cache),
               "PYTHONPATH": repository, "MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        done = subprocess.run([sys.executable, "-c", FIRST_USE_CODE], env=env, capture_output=True, text=True,
                              check=True, cwd=scratch)
        shutil.rmtree(home)
        return float(done.stdout.strip().splitlines()[-1])

    open_new_store(warm_cache)  # fills the warm cache (when the code under test has one)
    samples: dict[str, list[float]] = {"empty_cache": [], "warm_cache": []}
    for index in range(repeat):
        samples["empty_cache"].append(open_new_store(scratch / f"schema-cache-empty{index}"))
        samples["warm_cache"].append(open_new_store(warm_cache))
    result: dict[str, Any] = {name: median(values) for name, values in samples.items()}
    result["samples"] = samples
    result["speedup"] = result["empty_cache"] / result["warm_cache"]
    return result


def run_benchmark(quick: bool = False, files: int | None = None, mb: int | None = None, repeat: int | None = None,
                  tmpdir: str | None = None, sections: tuple[str, ...] = ("stage", "submit", "first_use"),
                  ) -> dict[str, Any]:
    """Run the sections; print their tables and the SUMMARY line; return every number.

    :param quick: 2,000 files / 20 MB, 3 repeats, 1 of the first use (what ``bench_core.py --quick`` runs).
    :param files: number of files (default 10,000; 2,000 with ``quick``).
    :param mb: total size in MB (default 200; 20 with ``quick``).
    :param repeat: repetitions of each measurement (default 5; 3 with ``quick``).
    :param tmpdir: where to build the tree and the stores.
    :param sections: which of ``stage``, ``submit``, ``first_use`` to run.
    """
    files = files or (2000 if quick else 10_000)
    mb = mb or (20 if quick else 200)
    repeat = repeat or (3 if quick else 5)
    saved = dict(os.environ)
    results: dict[str, Any] = {"files": files, "mb": mb, "repeat": repeat}
    try:
        with tempfile.TemporaryDirectory(prefix="bench_snapshot_", dir=tmpdir) as tmp:
            scratch = Path(tmp)
            source, state = scratch / "source", scratch / "state"
            source.mkdir()
            os.environ["TRAINING_RUNS_HOME"] = str(state)
            os.environ["TRAINING_RUNS_CACHE"] = str(scratch / "cache")
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
            os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
            seconds = timed(lambda: generate(source, files, mb * 1024 * 1024))[0]
            age(source)
            print(f"generated {files} files / {mb} MB in {seconds:.1f} s; medians of {repeat}, interleaved")
            if "stage" in sections:
                results["stage"] = stage = take_and_stage(source, scratch, repeat)
                results["stage"].update(one_changed_file(source, scratch))
                print_stage(stage)
            if "submit" in sections:
                results["submit"] = submitted = submits(source, scratch, state, repeat)
                print_submits(submitted)
            if "first_use" in sections:
                results["first_use"] = opened = first_use(scratch, 1 if quick else max(1, min(repeat, 3)))
                print_first_use(opened)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    print_summary(results)
    return results


def print_stage(r: dict[str, Any]) -> None:
    """Section 1's table."""
    print("\n== take and stage (LocalTarget.stage), each beside its floor")
    rows = [
        ("floor: cp -a of the tree", r["cp_a"], ""),
        ("floor: sha256 of every file", r["sha256"], ""),
        ("floor: rm -rf of a copy", r["rm_rf"], ""),
        ("take, cold store", r["take_cold"], f"{r['take_cold_over_floor']:.2f}x (sha256 + cp -a); "
                                             f"{r['new_blobs_cold']} blobs"),
        ("take, warm store", r["take_warm"], f"{r['warm_over_cold_take']:.3f}x the cold take (goal < 0.1)"),
        ("stage a job folder", r["stage"], f"{r['stage_over_cp_a']:.2f}x cp -a"),
        ("clean up a job folder", r["cleanup"], f"{r['cleanup_over_rm_rf']:.2f}x rm -rf"),
        ("warm: take + stage", r["take_warm"] + r["stage"],
         f"{r['warm_staging_over_floor']:.2f}x (cp -a + warm take)"),
        ("cold: take + stage", r["take_cold"] + r["stage"],
         f"{r['cold_staging_over_floor']:.2f}x (sha256 + 2 cp -a)"),
        ("one changed file: take", r["one_changed_s"], f"{r['one_changed_new_blobs']} new blob(s)"),
    ]
    for label, seconds, note in rows:
        print(f"  {label:34s} {seconds:8.3f} s   {note}")


def print_submits(r: dict[str, Any]) -> None:
    """Section 2's table."""
    print("\n== submit+wait on the local target: what the big tree adds")
    rows = [
        ("one-file source folder", r["small"], ""),
        ("big tree, warm snapshot store", r["big_warm"], f"adds {r['added_warm']:.3f} s = "
         f"{r['warm_over_floor']:.2f}x floor {r['floor_warm']:.3f} s (cp -a + warm take; goal <= {GOAL_WARM_SUBMIT})"),
        ("big tree, cold snapshot store", r["big_cold"], f"adds {r['added_cold']:.3f} s = "
         f"{r['cold_over_floor']:.2f}x floor {r['floor_cold']:.3f} s (sha256 + 2 cp -a; goal <= {GOAL_COLD_SUBMIT})"),
    ]
    for label, seconds, note in rows:
        print(f"  {label:34s} {seconds:8.3f} s   {note}")


def print_first_use(r: dict[str, Any]) -> None:
    """Section 3's table."""
    print("\n== first use of a new embedded store: Tracker().client in a fresh interpreter, import excluded")
    print(f"  {'MLflow creates the schema':34s} {r['empty_cache']:8.3f} s   (an empty schema cache)")
    print(f"  {'copy of the cached schema':34s} {r['warm_cache']:8.3f} s   {r['speedup']:.1f}x faster")


def print_summary(results: dict[str, Any]) -> None:
    """The SUMMARY line bench_core.py parses."""
    stage, submitted, opened = results.get("stage"), results.get("submit"), results.get("first_use")
    fields = [f"files={results['files']}", f"mb={results['mb']}"]
    ok = True
    if stage:
        fields += [f"cold_s={stage['take_cold']:.3f}", f"warm_s={stage['take_warm']:.3f}",
                   f"ratio={stage['warm_over_cold_take']:.3f}", f"stage_s={stage['stage']:.3f}",
                   f"cp_a_s={stage['cp_a']:.3f}", f"stage_over_cp_a={stage['stage_over_cp_a']:.2f}",
                   f"take_cold_over_floor={stage['take_cold_over_floor']:.2f}",
                   f"one_changed_s={stage['one_changed_s']:.3f}",
                   f"one_changed_new_blobs={stage['one_changed_new_blobs']}"]
        ok &= stage["warm_over_cold_take"] < GOAL_WARM_OVER_COLD_TAKE and stage["one_changed_new_blobs"] == 1
        ok &= stage["new_blobs_warm"] == 0
    if submitted:
        fields += [f"submit_warm_over_floor={submitted['warm_over_floor']:.2f}",
                   f"submit_cold_over_floor={submitted['cold_over_floor']:.2f}"]
        ok &= submitted["warm_over_floor"] <= GOAL_WARM_SUBMIT and submitted["cold_over_floor"] <= GOAL_COLD_SUBMIT
    if opened:
        fields += [f"first_use_empty_cache_s={opened['empty_cache']:.3f}",
                   f"first_use_warm_cache_s={opened['warm_cache']:.3f}"]
    print(f"SUMMARY {' '.join(fields)} {'PASS' if ok else 'FAIL'}")


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run :func:`run_benchmark`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 files / 20 MB, 3 repeats")
    parser.add_argument("--files", type=int, default=None, help="number of files (10,000)")
    parser.add_argument("--mb", type=int, default=None, help="total size in MB (200)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions of each measurement (5)")
    parser.add_argument("--tmpdir", default=None, help="where to build the tree and the stores")
    parser.add_argument("--sections", default="stage,submit,first_use", help="comma-separated subset")
    args = parser.parse_args(argv)
    run_benchmark(args.quick, args.files, args.mb, args.repeat, args.tmpdir, tuple(args.sections.split(",")))


if __name__ == "__main__":
    main()
