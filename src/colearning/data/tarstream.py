"""Read the files of a (compressed) tar archive in one streaming pass."""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from colearning.errors import DataError


def iter_tar_files(
    archive: Path, *, want: Callable[[str], bool], progress: bool = True
) -> Iterator[tuple[str, bytes]]:
    """(member name, contents) of each regular file whose name ``want`` accepts, in tar order.

    A hard link gives the contents of the file it links to; a symbolic link ``want``
    accepts is a DataError (it is not followed, and skipping it would drop a file).

    Members are read in order from one pass over the file (tarfile mode 'r:*'), which is
    far faster than random access into a gzip stream; the bar counts compressed bytes.
    """
    try:
        with (
            open(archive, "rb") as raw,
            tarfile.open(fileobj=raw, mode="r:*") as tar,
            tqdm(
                total=archive.stat().st_size,
                unit="B",
                unit_scale=True,
                desc=f"read {archive.name}",
                disable=not progress,
            ) as bar,
        ):
            for member in tar:
                bar.update(raw.tell() - bar.n)
                if not (member.isfile() or member.islnk() or member.issym()):
                    continue  # folders, devices
                if want(member.name):
                    yield member.name, _contents(archive, tar, member)
            bar.update(bar.total - bar.n)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        if str(error).startswith("file could not be opened successfully"):
            # tarfile lists each compression it tried, one per line
            raise DataError(
                f"{archive} is not a tar archive (neither gzip, bzip2, xz nor plain tar); "
                "pass a .tar or .tar.gz archive, or a folder"
            ) from None
        reason = " ".join(str(error).split())
        raise DataError(
            f"{archive} is not a readable tar archive ({reason}); replace it with a complete copy"
        ) from None


def _contents(archive: Path, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """The bytes of a regular file or hard link; DataError for a symbolic link, which is
    not followed inside an archive (skipping it would silently drop a file)."""
    if member.issym():
        raise DataError(
            f"{archive}:{member.name} is a symbolic link (to {member.linkname}); links inside "
            "an archive are not followed: re-create the archive with the files the links "
            "point to (tar --dereference)"
        )
    if member.islnk():  # a hard link: the contents of an earlier regular member
        try:
            target = tar.getmember(member.linkname)
        except KeyError:
            target = None
        if target is None or not target.isfile():
            raise DataError(
                f"{archive}:{member.name} is a hard link to {member.linkname}, which is not "
                "a file in the archive; replace it with a complete copy"
            )
        member = target
    handle = tar.extractfile(member)
    assert handle is not None  # regular files always have contents
    return handle.read()
