"""Which files of a job's folder may be uploaded, without ever following a link out of it.

A training script controls what its ``./outputs`` and ``./logs`` hold: a symbolic link to
``/etc/passwd``, a link to a folder above, a FIFO that blocks any reader. Uploading such a folder
as it is would copy files of the machine doing the upload (a worker, after a Docker or SSH target's
folder was fetched) into the run, or hang. Here a folder is walked without following links; a link
to a regular file inside the same folder is uploaded under its own name, and everything else that
is not a regular file is skipped with a note for the run's warnings.
"""

from __future__ import annotations

import copy
import os
import stat
import tarfile
from pathlib import Path

__all__ = ["UNREADABLE_ERRORS", "is_plain_file", "tolerant_tar_filter", "uploadable_files"]

UNREADABLE_ERRORS = (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError)
"""A file the script made unreadable or removed while it was collected: skipped and noted. Other
OS errors (a full disk under the artifact store) are retried."""


def is_plain_file(path: Path) -> bool:
    """True when ``path`` is a regular file and not a link (a log a target wrote, as fetched here).

    :param path: the path to check.
    """
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def uploadable_files(folder: Path, label: str) -> tuple[list[tuple[Path, str]], list[str]]:
    """The files of ``folder`` that may be uploaded, and notes of what was skipped.

    :param folder: the folder (e.g. a job's ``work/outputs``, or its copy fetched from a target).
    :param label: how notes name the folder (``"outputs"``).
    :return: ``(path, relative POSIX path)`` pairs, sorted, and one note per skipped entry.
    """
    if folder.is_symlink():
        return [], [f"{label} is a link to {os.readlink(folder)!r}; links are not followed, nothing in it uploaded"]
    root = os.path.realpath(folder)
    files: list[tuple[Path, str]] = []
    notes: list[str] = []
    for current, folders, names in os.walk(folder, followlinks=False):
        for name in sorted(folders):
            path = os.path.join(current, name)
            if os.path.islink(path):
                notes.append(f"{label}/{_relative(path, folder)} is a link to a folder ({os.readlink(path)!r}); "
                             "links to folders are not followed")
        for name in sorted(names):
            path = os.path.join(current, name)
            relative = _relative(path, folder)
            problem = _problem(path, root)
            if problem:
                notes.append(f"{label}/{relative} {problem}; not uploaded")
            else:
                files.append((Path(path), relative))
    return sorted(files, key=lambda item: item[1]), notes


def _problem(path: str, root: str) -> str:
    """Why ``path`` is not uploaded ("" when it is)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        resolved = os.path.realpath(path)
        if resolved != root and not resolved.startswith(root + os.sep):
            return f"is a link to {target!r}, outside the folder"
        if not os.path.isfile(resolved):
            return f"is a link to {target!r}, which is not a file"
        return ""
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a FIFO, socket or device)"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return ""


def _relative(path: str, folder: Path) -> str:
    return Path(os.path.relpath(path, folder)).as_posix()


def tolerant_tar_filter(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo | None:
    """Extract a fetched folder safely without failing on what a script left in it.

    Like tarfile's ``data`` filter (no member written outside ``destination``, no devices), except
    that a symbolic link is recreated as it is, wherever it points, and a FIFO as a FIFO: making
    either is harmless, and :func:`uploadable_files` never follows the one out of its folder nor
    opens the other (it notes both). Members the
    ``data`` filter refuses otherwise (a hard link out, a member under a link that leaves) are
    skipped instead of aborting the whole extraction.

    :param member: a member of the archive.
    :param destination: where the archive is extracted.
    """
    try:
        if member.issym():
            checked = tarfile.data_filter(member.replace(linkname=".", deep=False), destination)
            return checked.replace(linkname=member.linkname, deep=False)
        if member.isfifo():
            as_file = copy.copy(member)
            as_file.type = tarfile.REGTYPE
            checked = copy.copy(tarfile.data_filter(as_file, destination))
            checked.type = tarfile.FIFOTYPE
            return checked
        return tarfile.data_filter(member, destination)
    except tarfile.FilterError:
        return None
