"""Cache decoded datasets on disk so that a second load skips decoding.

A cache file is a sequence of .npy records in one file (meta JSON, then train_x, train_y,
test_x, test_y), read back with plain file reads, which is faster than an .npz for
CIFAR-sized arrays (docs/performance.md). Its name hashes the dataset name, the source's
absolute path and the source's size and modification time, so editing or replacing the
source misses the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from colearning.data import walk
from colearning.data.raw import RawDataset
from colearning.errors import DataError

FORMAT_VERSION = 1
_ARRAYS = ("train_x", "train_y", "test_x", "test_y")


def default_cache_dir() -> Path:
    """$COLEARNING_CACHE, else ~/.cache/colearning/decoded."""
    return Path(os.environ.get("COLEARNING_CACHE") or "~/.cache/colearning/decoded").expanduser()


def source_key(name: str, source: Path) -> dict:
    """What identifies a decoded source: name, absolute path, size and mtime (of every file)."""
    given, source = source, source.resolve()
    if source.is_dir():
        # A directory's own mtime misses edits to files inside it, so fingerprint every file
        # a loader could read (links followed; a broken link or a loop is a DataError).
        digest = hashlib.sha256()
        total = 0
        for file_name, stat in walk.data_files(given):  # errors name the given path
            total += stat.st_size
            digest.update(f"{file_name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        size, mtime = total, digest.hexdigest()
    else:
        stat = source.stat()
        size, mtime = stat.st_size, str(stat.st_mtime_ns)
    return {"name": name, "source": str(source), "size": size, "mtime": mtime}


def cache_path(name: str, source: Path, cache_dir: str | Path | None = None) -> Path:
    """The cache file for ``name`` decoded from ``source`` under ``cache_dir``."""
    key = source_key(name, source)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{name}-{digest}.npy"


def cached(
    name: str,
    source: Path,
    build: Callable[[], RawDataset],
    *,
    cache_dir: str | Path | None = None,
) -> RawDataset:
    """Load ``name`` decoded from ``source`` from the cache, else ``build()`` and store it.

    A cache file that cannot be read, has other keys or shapes, or fails its checksum is
    deleted with a warning and rebuilt; failing to write the cache only warns.
    """
    key = source_key(name, source)
    path = cache_path(name, source, cache_dir)
    if path.exists() and not path.is_file():
        raise DataError(f"the decoded-data cache entry {path} is a directory or special file, "
                        "not a cache file: move it away (or set data.cache_dir to another "
                        "folder)")
    if path.exists():
        try:
            return _read(path, key)
        # Any failure at all means a bad file (np.load alone can raise ValueError, EOFError,
        # SyntaxError or tokenize errors on a damaged header); the source can rebuild it.
        except Exception as error:
            warnings.warn(
                f"decoded-data cache {path} is corrupt ({type(error).__name__}: {error}); "
                f"deleting it and rebuilding "
                f"from {source}",
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
    raw = build()
    try:
        _write(path, raw, key)
    except OSError as error:
        warnings.warn(
            f"could not write decoded-data cache {path} ({error}); set COLEARNING_CACHE or "
            "cache_dir to a writable folder to avoid decoding on every load",
            stacklevel=2,
        )
    return raw


def _checksum(arrays: list[np.ndarray], classes: list[str]) -> int:
    # CRC-32 is cheap next to reading the arrays: it catches corruption without slowing a
    # cache hit.
    crc = zlib.crc32(json.dumps(classes).encode())
    for array in arrays:
        crc = zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"), crc)
    return crc


def _write(path: Path, raw: RawDataset, key: dict) -> None:
    """Write atomically: a temp file in the same folder, fsync, then rename over ``path``."""
    arrays = [np.ascontiguousarray(getattr(raw, field)) for field in _ARRAYS]
    meta = {
        "version": FORMAT_VERSION,
        "key": key,
        "classes": list(raw.classes),
        "shapes": [list(a.shape) for a in arrays],
        "dtypes": [a.dtype.str for a in arrays],
        "checksum": _checksum(arrays, list(raw.classes)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            np.save(out, np.array(json.dumps(meta)), allow_pickle=False)
            for array in arrays:
                np.save(out, array, allow_pickle=False)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
    finally:
        Path(temp_name).unlink(missing_ok=True)


def _read(path: Path, key: dict) -> RawDataset:
    with open(path, "rb") as source:
        meta = json.loads(str(np.load(source, allow_pickle=False)))
        if meta.get("version") != FORMAT_VERSION or meta.get("key") != key:
            raise ValueError("written by another version or for another source")
        arrays = [np.load(source, allow_pickle=False) for _ in _ARRAYS]
        if source.read(1):
            raise ValueError("trailing bytes after the arrays")
    for field, array, shape, dtype in zip(
        _ARRAYS, arrays, meta["shapes"], meta["dtypes"], strict=True
    ):
        if list(array.shape) != shape or array.dtype.str != dtype:
            raise ValueError(
                f"{field} is {array.dtype.str} {list(array.shape)}, not {dtype} {shape}"
            )
    classes = [str(name) for name in meta["classes"]]
    if _checksum(arrays, classes) != meta["checksum"]:
        raise ValueError("checksum mismatch")
    return RawDataset(*arrays, classes=classes).check(str(path))
