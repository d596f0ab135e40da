"""Benchmark of ``SnapshotStore.take``: cold vs warm (stat cache) vs one changed file.

Run as ``.venv/bin/python benchmarks/bench_snapshot.py [--files N] [--mb M]``. It generates a source
tree of N files totalling M MB (default 10,000 files / 200 MB) in a temp folder, with a few nested
folders and a ``.gitignore``, and prints the timings. The goal is ``warm/cold < 0.1``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider.core.snapshot import SnapshotStore

FOLDERS = ["src", "src/models", "src/models/layers", "src/data", "configs", "notebooks", "assets/img"]


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


def age(source: Path, seconds: float = 60.0) -> None:
    """Set every file's mtime ``seconds`` into the past, so the racy-cache rule does not fire.

    :param source: the folder whose files to age.
    :param seconds: how far back.
    """
    past = time.time() - seconds
    for folder, _, names in os.walk(source):
        for name in names:
            os.utime(os.path.join(folder, name), (past, past))


def timed(store: SnapshotStore, source: Path) -> tuple[float, int]:
    """Take one snapshot; return (seconds, new blobs)."""
    start = time.perf_counter()
    result = store.take(source, max_bytes=1 << 40)
    return time.perf_counter() - start, result.new_blobs


def main() -> None:
    """Generate the tree, run cold / warm / one-changed snapshots and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="warm runs (the best is reported)")
    parser.add_argument("--tmpdir", default=None, help="where to build the tree and the store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_snapshot_", dir=args.tmpdir) as tmp:
        source, state = Path(tmp) / "source", Path(tmp) / "state"
        source.mkdir()
        os.environ["TRAINING_RUNS_HOME"] = str(state)
        t0 = time.perf_counter()
        generate(source, args.files, args.mb * 1024 * 1024)
        age(source)
        print(f"generated {args.files} files / {args.mb} MB in {time.perf_counter() - t0:.1f} s")
        store = SnapshotStore(state / "snapshots")

        cold_s, cold_blobs = timed(store, source)
        print(f"cold_s      {cold_s:8.3f}   new_blobs={cold_blobs}")
        warm_runs = [timed(store, source) for _ in range(args.repeat)]
        warm_s = min(seconds for seconds, _ in warm_runs)
        print(f"warm_s      {warm_s:8.3f}   new_blobs={warm_runs[0][1]}   (best of {args.repeat})")
        print(f"warm/cold   {warm_s / cold_s:8.3f}   (goal < 0.1)")

        changed = next((source / "src").rglob("*.bin"))
        data = bytearray(changed.read_bytes())
        data[-1] ^= 0xFF
        changed.write_bytes(bytes(data))
        one_s, one_blobs = timed(store, source)
        print(f"one_changed_s {one_s:6.3f}   new_blobs={one_blobs}")

        ok = warm_s / cold_s < 0.1 and one_blobs == 1 and warm_runs[0][1] == 0
        print(
            f"SUMMARY files={args.files} mb={args.mb} cold_s={cold_s:.3f} warm_s={warm_s:.3f} "
            f"ratio={warm_s / cold_s:.3f} one_changed_s={one_s:.3f} one_changed_new_blobs={one_blobs} "
            f"{'PASS' if ok else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
