"""The files of a data folder: links followed, never around a loop, nothing skipped silently."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from colearning.errors import DataError

# The deepest a loader reads: <top>/<split>/<class>/<image> of an image folder.
MAX_DEPTH = 4

# Entries every loader ignores: hidden files and folders, e.g. .DS_Store, and the
# '__MACOSX' copies that macOS's archiver adds.
HIDDEN = (".", "__MACOSX")


def data_files(root: Path, *, max_depth: int = MAX_DEPTH) -> list[tuple[str, os.stat_result]]:
    """(name relative to ``root`` in POSIX form, stat) of each file at most ``max_depth``
    levels below ``root`` (a file in ``root`` is one level down), in sorted order.

    Hidden entries are skipped. Symbolic links are followed, to files and to folders. A
    broken link, a link loop (a link to itself, or to a folder that contains it), a folder
    that cannot be listed and a device, pipe or socket raise a one-line DataError naming
    the path: dropping them would silently change the data set. Folders at ``max_depth``
    are not entered, so the walk always ends.
    """
    found: list[tuple[str, os.stat_result]] = []

    def visit(folder: Path, prefix: str, depth: int, ancestors: frozenset) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            raise DataError(f"cannot list the folder {folder} ({error.strerror or error}); "
                            f"make it readable or move it out of {root}") from None
        for entry in entries:
            if entry.name.startswith(HIDDEN):
                continue
            path = folder / entry.name
            info = _stat(path, entry, root)
            if stat.S_ISREG(info.st_mode):
                found.append((prefix + entry.name, info))
            elif stat.S_ISDIR(info.st_mode):
                if depth >= max_depth:
                    continue
                identity = (info.st_dev, info.st_ino)
                if identity in ancestors:
                    raise DataError(
                        f"{path} is a symbolic link loop: it leads back to "
                        f"{os.path.realpath(path)}, a folder that contains it; delete the link"
                    )
                visit(path, f"{prefix}{entry.name}/", depth + 1, ancestors | {identity})
            else:
                raise DataError(f"{path} is a device, pipe or socket, not a file or folder; "
                                f"move it out of {root}")

    top = os.stat(root)
    visit(root, "", 1, frozenset({(top.st_dev, top.st_ino)}))
    return found


def _stat(path: Path, entry: os.DirEntry, root: Path) -> os.stat_result:
    """The stat of what ``entry`` names, links followed; DataError if it cannot be reached."""
    try:
        return entry.stat()
    except OSError as error:
        if entry.is_symlink():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            if error.errno == errno.ELOOP:
                raise DataError(
                    f"{path} is a symbolic link loop (it points to {target}, which leads back "
                    "to itself); delete the link or point it at a real file"
                ) from None
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                raise DataError(
                    f"{path} is a broken symbolic link (its target {target} does not exist); "
                    "delete the link or restore its target"
                ) from None
        raise DataError(f"cannot read {path} ({error.strerror or error}); make it readable or "
                        f"move it out of {root}") from None
