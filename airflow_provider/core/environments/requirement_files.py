"""Pip requirements that name files on this machine, made usable on another (an image, an SSH host).

``/path/pkg-1.0-py3-none-any.whl``, ``./pkg.tar.gz``, ``file://`` URLs (also ``name @ file://...``)
and ``--find-links DIR`` name local files that do not exist where the environment is built. They
are collected here, by content, with the requirement lines rewritten to the paths they will have
under a destination folder there.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["localize_requirements"]

_FILE_REFERENCE = re.compile(r"^(?:(?P<name>[A-Za-z0-9._-]+(?:\[[^\]]*\])?)\s*@\s*)?(?P<location>\S+)\Z")
_FIND_LINKS = re.compile(r"^(-f|--find-links)(?:\s+|=)(\S+)\Z")


def localize_requirements(requirements: list[str], destination: str) -> tuple[list[str], dict[str, bytes]]:
    """Rewrite requirement lines that name local files to paths under ``destination``.

    :param requirements: normalized requirement lines.
    :param destination: the folder the files will be in where the environment is built.
    :return: the rewritten lines, and the files to put there (path relative to ``destination``:
        content). Paths embed the content's hash, so a changed wheel is a changed requirement.
    """
    lines: list[str] = []
    files: dict[str, bytes] = {}
    for line in requirements:
        option = _FIND_LINKS.match(line)
        if option is not None:
            folder = _local_path(option.group(2))
            if folder is not None and folder.is_dir():
                contents = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
                digest = hashlib.sha256(b"".join(hashlib.sha256(c).digest() for c in contents.values())).hexdigest()
                for name, content in contents.items():
                    files[f"links/{digest[:16]}/{name}"] = content
                lines.append(f"--find-links {destination}/links/{digest[:16]}")
                continue
        reference = _FILE_REFERENCE.match(line) if not line.startswith("-") else None
        local = _local_path(reference.group("location")) if reference is not None else None
        if reference is not None and local is not None and local.is_file():
            content = local.read_bytes()
            relative = f"wheels/{hashlib.sha256(content).hexdigest()[:16]}/{local.name}"
            files[relative] = content
            placed = f"{destination}/{relative}"
            lines.append(f"{reference.group('name')} @ file://{placed}" if reference.group("name") else placed)
            continue
        lines.append(line)
    return lines, files


def _local_path(location: str) -> Path | None:
    """The local path a requirement's location names; None for an index name or a remote URL."""
    if location.startswith("file://"):
        return Path(unquote(urlparse(location).path))
    if location.startswith(("/", "./", "../", "~")) or os.sep in location:
        return Path(location).expanduser()
    return None
