"""A local conda channel for the tests, made from nothing on this machine (no conda channel is reachable).

* ``python``: this machine's CPython (``sys.base_prefix``, a shared-library build), without its
  site-packages and tests, debug info stripped, its ELF RUNPATH rewritten to ``$ORIGIN`` so it runs
  from any prefix; the build prefix in ``_sysconfigdata`` is a text placeholder the installer rewrites;
* noarch ``python`` packages made from a module's text (``condademo``, ...), with dependencies.

Packages use the ``.conda`` format (a zip of ``metadata.json`` and two ``.tar.zst``), the zstd
streams written uncompressed as raw blocks (valid zstd, no compression library needed); then
``rattler.index.index_fs`` writes the repodata. About two seconds per test session.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

_SKIPPED_DIRS = {"site-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "__pycache__"}
_SKIPPED_MODULES = ("_test", "_ctypes_test", "_xxtestfuzz", "xxlimited", "xxsubtype", "_tkinter")


@dataclass
class Entry:
    """One file of a package: from disk or literal bytes, or a symlink."""

    path: str
    source: Path | None = None
    data: bytes | None = None
    mode: int = 0o644
    link: str | None = None
    placeholder: str | None = None


class _RawZstd:
    """A zstd frame of raw (uncompressed) blocks: valid for every decoder, nothing to install."""

    BLOCK = 128 * 1024

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.buffer = bytearray()
        self.out.write(b"\x28\xb5\x2f\xfd" + bytes([0x00, 7 << 3]))  # magic; window 128 KiB

    def write(self, data: bytes) -> int:
        self.buffer += data
        while len(self.buffer) > self.BLOCK:
            self._block(bytes(self.buffer[: self.BLOCK]), last=False)
            del self.buffer[: self.BLOCK]
        return len(data)

    def close(self) -> None:
        self._block(bytes(self.buffer), last=True)

    def _block(self, data: bytes, last: bool) -> None:
        self.out.write(((len(data) << 3) | int(last)).to_bytes(3, "little") + data)


def _digest(entry: Entry) -> tuple[str, int]:
    data = entry.data if entry.data is not None else entry.source.read_bytes()  # type: ignore[union-attr]
    return hashlib.sha256(data).hexdigest(), len(data)


def _info(index: dict[str, Any], entries: list[Entry], extra: dict[str, bytes]) -> list[Entry]:
    paths = []
    for entry in sorted(entries, key=lambda e: e.path):
        if entry.link is not None:
            paths.append({"_path": entry.path, "path_type": "softlink"})
            continue
        sha, size = _digest(entry)
        item: dict[str, Any] = {"_path": entry.path, "path_type": "hardlink", "sha256": sha, "size_in_bytes": size}
        if entry.placeholder:
            item.update(prefix_placeholder=entry.placeholder, file_mode="text")
        paths.append(item)

    def dump(value: object) -> bytes:
        return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()

    return [Entry("info/index.json", data=dump(index)),
            Entry("info/paths.json", data=dump({"paths": paths, "paths_version": 1})),
            Entry("info/files", data="".join(f"{e.path}\n" for e in sorted(entries, key=lambda e: e.path)).encode()),
            *(Entry(f"info/{name}", data=data) for name, data in extra.items())]


def _add(tar: tarfile.TarFile, entry: Entry) -> None:
    info = tarfile.TarInfo(entry.path)
    info.mtime = int(time.time())
    if entry.link is not None:
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.link, 0o777
        tar.addfile(info)
        return
    data = entry.data if entry.data is not None else entry.source.read_bytes()  # type: ignore[union-attr]
    info.size, info.mode = len(data), entry.mode
    tar.addfile(info, io.BytesIO(data))


def write_package(folder: Path, index: dict[str, Any], entries: list[Entry],
                  extra_info: dict[str, bytes] | None = None) -> Path:
    """Write ``<name>-<version>-<build>.conda`` into ``folder`` (a channel's subdir)."""
    stem = f"{index['name']}-{index['version']}-{index['build']}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.conda"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        for part, members in ((f"pkg-{stem}.tar.zst", entries),
                              (f"info-{stem}.tar.zst", _info(index, entries, extra_info or {}))):
            with archive.open(part, "w", force_zip64=True) as member:
                stream = _RawZstd(member)
                with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                    for entry in members:
                        _add(tar, entry)
                stream.close()
    return path


def _set_runpath(path: Path, old_prefix: str, new_value: str) -> None:
    """Rewrite DT_RUNPATH / DT_RPATH entries that name ``old_prefix`` in place (ELF64, little endian)."""
    data = bytearray(path.read_bytes())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return
    (program_headers,) = struct.unpack_from("<Q", data, 0x20)
    entry_size, count = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for index in range(count):
        kind, _, offset, address, _, size, _, _ = struct.unpack_from("<IIQQQQQQ", data,
                                                                     program_headers + index * entry_size)
        if kind == 1:
            loads.append((address, offset, size))
        elif kind == 2:
            dynamic = (offset, size)
    if dynamic is None:
        return
    strings, runpaths = None, []
    for offset in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", data, offset)
        if tag == 0:
            break
        if tag == 5:
            strings = value
        elif tag in (15, 29):
            runpaths.append(value)
    if strings is None or not runpaths:
        return
    table = next(strings - address + offset for address, offset, size in loads if address <= strings < address + size)
    for runpath in runpaths:
        start = table + runpath
        end = data.index(0, start)
        if old_prefix in data[start:end].decode():
            new = new_value.encode()
            assert len(new) <= end - start, f"{path}: the new RUNPATH is longer than the old one"
            data[start:end] = new + b"\0" * (end - start - len(new))
    path.write_bytes(bytes(data))


def python_package(channel: Path, work: Path) -> Path:
    """The ``python`` package of this machine's CPython (see the module docstring)."""
    home = Path(sys.base_prefix).resolve()
    executable = Path(os.path.realpath(home / "bin" / "python3"))
    version = ".".join(map(str, sys.version_info[:3]))
    short = f"{sys.version_info[0]}.{sys.version_info[1]}"
    entries: list[Entry] = []

    def binary(source: Path, relative: str, runpath: str) -> Entry:
        copy = work / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)
        if shutil.which("strip"):
            subprocess.run(["strip", "--strip-debug", str(copy)], check=True)
        _set_runpath(copy, str(home), runpath)
        return Entry(relative, source=copy, mode=0o755)

    entries.append(binary(executable, f"bin/python{short}", "$ORIGIN/../lib"))
    entries += [Entry("bin/python3", link=f"python{short}"), Entry("bin/python", link=f"python{short}")]
    for library in sorted((home / "lib").glob("libpython*.so*")):
        relative = f"lib/{library.name}"
        entries.append(Entry(relative, link=os.readlink(library)) if library.is_symlink()
                       else binary(library, relative, "$ORIGIN"))
    standard = home / "lib" / f"python{short}"
    for folder, names, files in os.walk(standard):
        here = Path(folder)
        names[:] = [n for n in names if n not in _SKIPPED_DIRS and not n.startswith("config-")]
        for name in files:
            path = here / name
            relative = f"{here.relative_to(home).as_posix()}/{name}"
            if path.is_symlink():
                entries.append(Entry(relative, link=os.readlink(path)))
            elif here.name == "lib-dynload":
                if not name.startswith(_SKIPPED_MODULES):
                    entries.append(binary(path, relative, "$ORIGIN/../.."))
            else:
                mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
                placeholder = str(home) if name.startswith("_sysconfigdata") else None
                entries.append(Entry(relative, source=path, mode=mode, placeholder=placeholder))
    entries.append(Entry(f"lib/python{short}/site-packages/README.txt", data=b"site-packages\n"))
    index = {"name": "python", "version": version, "build": "h0_test", "build_number": 0, "depends": [],
             "subdir": "linux-64", "platform": "linux", "arch": "x86_64", "timestamp": int(time.time() * 1000)}
    return write_package(channel / "linux-64", index, entries)


def noarch_package(channel: Path, name: str, version: str, module: str, depends: list[str] | None = None) -> Path:
    """A ``noarch: python`` package holding one module ``<name>`` with ``module`` as its text."""
    entries = [Entry(f"site-packages/{name}/__init__.py", data=module.encode())]
    index = {"name": name, "version": version, "build": "pyh0_0", "build_number": 0,
             "depends": ["python >=3.8", *(depends or [])], "noarch": "python", "subdir": "noarch",
             "timestamp": int(time.time() * 1000)}
    link = {"noarch": {"type": "python"}, "package_metadata_version": 1}
    return write_package(channel / "noarch", index, entries, {"link.json": json.dumps(link).encode()})


def index(channel: Path) -> None:
    """Write the channel's repodata (``rattler.index.index_fs``)."""
    from rattler.index import index_fs

    (channel / "noarch").mkdir(parents=True, exist_ok=True)
    (channel / "linux-64").mkdir(parents=True, exist_ok=True)
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False, force=True))


def make_channel(root: Path) -> Path:
    """A channel with ``python``, ``condalib`` 1.0 / 2.0 and ``condademo`` 1.2.3 (needs ``condalib >=2``)."""
    channel = root / "channel"
    python_package(channel, root / "work")
    noarch_package(channel, "condalib", "1.0", "VERSION = '1.0'\n")
    noarch_package(channel, "condalib", "2.0", "VERSION = '2.0'\n")
    noarch_package(channel, "condademo", "1.2.3",
                   "import condalib\n__version__ = '1.2.3'\nLIB = condalib.VERSION\n", ["condalib >=2"])
    index(channel)
    return channel
