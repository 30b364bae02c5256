"""Read the regular files of a (compressed) tar archive in one streaming pass."""

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
                if member.isfile() and want(member.name):
                    handle = tar.extractfile(member)
                    assert handle is not None  # regular files always have contents
                    yield member.name, handle.read()
            bar.update(bar.total - bar.n)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(
            f"{archive} is not a readable tar archive ({error}); replace it with a complete copy"
        ) from None
