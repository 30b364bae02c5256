"""Fetch one file from a URL to a path, verifying its md5, atomically (temp file + rename)."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from colearning.errors import DataError

_CHUNK = 1 << 20
# What a failed download raises: offline, refused, timed out, cut short, a bad URL.
_FAILURES = (urllib.error.URLError, OSError, ValueError, http.client.HTTPException)


def _one_line(error: object) -> str:
    """An error's text on one line: an OSError's strerror, else its message, else its type."""
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(text.split()) or type(error).__name__


def default_data_dir() -> Path:
    """Where downloaded archives go: $COLEARNING_DATA, else ~/.cache/colearning."""
    return Path(os.environ.get("COLEARNING_DATA") or "~/.cache/colearning").expanduser()


def fetch(url: str, dest: Path, md5: str, *, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``; DataError when offline or corrupt.

    The bytes go to a temp file next to ``dest`` and are renamed into place only after the
    md5 matches, so an interrupted or corrupt download never leaves a half file at ``dest``.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.",
                                             suffix=".part")
    except OSError as error:
        raise DataError(
            f"cannot download {dest.name} into {dest.parent} ({_one_line(error)}); "
            "point data.path (or COLEARNING_DATA) at a writable folder, or put the file there"
        ) from None
    temp = Path(temp_name)
    try:
        digest = hashlib.md5()
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(
                        total=total,
                        unit="B",
                        unit_scale=True,
                        desc=f"download {dest.name}",
                        disable=not progress,
                    ) as bar:
                        while chunk := response.read(_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except _FAILURES as error:
                reason = _one_line(getattr(error, "reason", error))
                raise DataError(
                    f"could not download {url} ({reason}); download it by hand and put it at {dest}"
                ) from None
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as error:
                raise DataError(f"could not save the download at {dest} ({_one_line(error)}); "
                                "free some space or pick another data.path") from None
        if digest.hexdigest() != md5:
            raise DataError(
                f"download of {url} has md5 {digest.hexdigest()}, expected {md5}; "
                f"retry, or download it by hand and put it at {dest}"
            )
        try:
            os.replace(temp, dest)
        except OSError as error:
            raise DataError(f"could not save the download at {dest} ({_one_line(error)}); "
                            "move what is there away or pick another data.path") from None
    finally:
        temp.unlink(missing_ok=True)
    return dest
