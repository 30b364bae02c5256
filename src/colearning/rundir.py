"""Run-directory files, written so that a kill at any moment never leaves half a file.

Layout of a run directory::

    config.yaml        the resolved config
    meta.json          package version, git commit, torch version, host, start time
    metrics.jsonl      one JSON object per evaluated epoch
    checkpoint.pt      models, optimizer, RNG states, position (epoch, step)
    best.pt            with train.keep_best: the members' weights of the validation-best
                       epoch so far, its epoch, metric and value (weights only)
    predictions.npz    final test log-probabilities [N, n_test, C] (float32), labels, indices
    summary.json       final metrics and the run status
    analysis.jsonl     activation/weight statistics at chosen epochs
    probs/epoch_K.npz  optional per-epoch test log-probabilities (float32)
    data.json          a run on data given in memory: the data's sha256 and sizes
    evaluation/        colearn evaluate's outputs (other data, shift, OOD, calibration);
                       written beside the run, never into the files above

Whole files are written to a temporary name, flushed, fsynced and renamed over the
target (rename is atomic on POSIX), then the directory is fsynced. metrics.jsonl is
appended line by line with fsync; a trailing partial line (a kill mid-write) is ignored
on read and cut on resume.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import pickle
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearning.errors import RunDirError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
PREDICTIONS = "predictions.npz"
SUMMARY = "summary.json"
META = "meta.json"
ANALYSIS = "analysis.jsonl"
LOCK = ".lock"
DATA = "data.json"
EVALUATION = "evaluation"  # colearn evaluate writes here, never into the run's own files


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_write_counts: dict[str, int] = {}


def _kill_requested(name: str) -> bool:
    """True on the K-th write of file ``name`` when COLEARNING_KILL_DURING_WRITE=name:K.

    A testing hook only: it lets the crash tests kill a run inside a checkpoint write,
    which random kill times would hit only by luck.
    """
    spec = os.environ.get("COLEARNING_KILL_DURING_WRITE")
    if not spec or spec.rpartition(":")[0] != name:
        return False
    _write_counts[name] = _write_counts.get(name, 0) + 1
    return str(_write_counts[name]) == spec.rpartition(":")[2].strip()


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space and run the command again (a run "
                  "resumes from its last checkpoint, which is intact)",
    errno.EDQUOT: "the disk quota is used up: free some space and run the command again",
    errno.EROFS: "the file system is read-only: pick a writable directory",
    errno.EACCES: "permission denied: pick a directory you can write to",
    errno.EPERM: "the file is protected (immutable or owned by another user): pick another "
                 "directory or lift the protection",
    errno.ENOTDIR: "a path component is a file, not a directory: pick another directory",
    errno.EISDIR: "it is a directory, not a file: move it away or pick another directory",
    errno.ENOENT: "a directory on the way does not exist (or cannot hold files)",
}


def os_error(path: str | Path, error: OSError, action: str = "write") -> RunDirError:
    """A one-line RunDirError for an operating-system error on ``path``: what failed and
    what to do."""
    hint = _OS_HINTS.get(error.errno or 0, error.strerror or type(error).__name__)
    return RunDirError(f"cannot {action} {path}: {hint}")


@contextlib.contextmanager
def os_errors(path: str | Path, action: str = "write") -> Iterator[None]:
    """Turn an OSError inside the block into :func:`os_error`'s one-line RunDirError."""
    try:
        yield
    except OSError as error:
        raise os_error(getattr(error, "filename", None) or path, error, action) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync dir).

    On any failure (a full disk, a read-only or protected file, an interrupt) the temporary
    file is removed and ``path`` keeps its old contents; OS errors become a one-line
    RunDirError naming the path and what to do."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            if _kill_requested(path.name):
                # Fault injection for the crash tests: die by SIGKILL halfway through.
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(error, OSError):
            raise os_error(path, error) from None
        raise
    with contextlib.suppress(OSError):  # the rename is done; a directory fsync is a nicety
        _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    # surrogateescape: a path of non-UTF-8 bytes (a run directory's name) is written as
    # those bytes, never an encoding error
    atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj)}")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (NaN/inf are written as null)."""
    line = json.dumps(_finite(record), default=_json_default) + "\n"
    with os_errors(path, "append to"), open(path, "a") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def _finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None so every line is strict JSON."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every complete line of a JSON-lines file ([] when absent), each a JSON object; a torn
    last line is skipped. A line that is not a JSON object is a RunDirError naming it."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with os_errors(path, "read"):
        text = path.read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if not line.endswith("\n"):
            break  # torn write from a kill: not a record
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise RunDirError(f"{path} line {number} is not valid JSON; fix or remove that "
                              "line (the other lines are intact)") from None
        if not isinstance(record, dict):
            raise RunDirError(f"{path} line {number} holds {_kind(record)}, not a record "
                              "(a JSON object); fix or remove that line")
        records.append(record)
    return records


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl: line k is epoch k (an integer), as the trainer
    writes them; anything else is a RunDirError naming the line."""
    records = read_jsonl(path)
    for number, record in enumerate(records, 1):
        epoch = record.get("epoch")
        if type(epoch) is not int or epoch != number:
            raise RunDirError(f"{path} line {number} has epoch {epoch!r} where epoch {number} "
                              "belongs (one line per epoch, in order); fix or remove that line")
    return records


def _kind(value: Any) -> str:
    return "null" if value is None else f"a JSON {type(value).__name__}"


def truncate_jsonl(path: str | Path, keep: int) -> Path | None:
    """Keep the first ``keep`` complete records of a JSON-lines file, atomically. When that
    drops anything (later records, a torn tail), the original is first kept aside as
    ``NAME.orig-K``, whose path is returned (None: nothing dropped)."""
    path = Path(path)
    records = read_jsonl(path)[:keep]
    text = "".join(json.dumps(r, default=_json_default) + "\n" for r in records)
    if not path.exists():
        atomic_write_text(path, text)
        return None
    with os_errors(path, "read"):
        old = path.read_bytes()
    if old == text.encode():
        return None
    kept = next(path.with_name(f"{path.name}.orig-{k}") for k in range(1, 10**6)
                if not path.with_name(f"{path.name}.orig-{k}").exists())
    atomic_write_bytes(kept, old)
    atomic_write_text(path, text)
    return kept


@contextlib.contextmanager
def locked(run_dir: str | Path, what: str = "run directory",
           instead: str = "pick another --run-dir") -> Iterator[None]:
    """Hold an exclusive lock on a run (or sweep) directory; a second process gets
    RunDirError ("``what`` ... is in use ...; wait for it or ``instead``").

    The lock is an fcntl lock on ``.lock``: the kernel drops it when the process dies,
    even by SIGKILL, so a killed run never leaves a stale lock behind.
    """
    path = Path(run_dir) / LOCK
    with os_errors(path, "lock"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(f"{what} {run_dir} is in use by another process; wait for it or "
                              f"{instead}") from None
        # The holder's pid, for a human wondering who holds it: a note, so a full disk
        # does not fail here (the run's own writes will say so).
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def require_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory; give the path of a run directory")
    if not is_run_dir(path):
        raise RunDirError(f"{path} is not a run directory (it has no {CONFIG})")
    return path


# The layout of checkpoint.pt this version writes. 2: the optimizer state is a stacked
# optimizer's (colearning.optim: its name, options and per-member rows; without a name,
# StackedSGD's); 1 held torch.optim.SGD's (still read).
CHECKPOINT_FORMAT = 2
# The layout of best.pt: format, epoch, metric, value, model, inputs.
BEST_FORMAT = 1


def _load_data(path: str | Path, missing: str) -> Any:
    """A torch file on the CPU, read as data only (``weights_only``: tensors and plain
    containers; a file that would run code is refused); ``missing``: the error's text when
    there is no such file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunDirError(missing) from None
    except pickle.UnpicklingError:
        raise RunDirError(f"checkpoint {path} holds more than tensors and plain values (it "
                          "could run code when loaded); refused: restore the run's own "
                          "checkpoint") from None
    except Exception as error:  # torch raises many types for a damaged zip/pickle
        raise RunDirError(f"checkpoint {path} is unreadable ({type(error).__name__})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint on the CPU, read as data only (:func:`_load_data`), with a one-line
    RunDirError for a missing, corrupt or foreign file or one whose layout is not this
    library's."""
    checkpoint = _load_data(path, f"{path} does not exist; the run has no checkpoint to resume")
    problem = _checkpoint_problem(checkpoint)
    if problem:
        raise RunDirError(f"checkpoint {path} does not fit this library's layout: {problem}; "
                          "restore the run's own checkpoint")
    return checkpoint


def load_best(path: str | Path) -> dict[str, Any]:
    """A run's best.pt (:data:`BEST`) on the CPU, read as data only, with a one-line
    RunDirError for a missing, corrupt or foreign file."""
    best = _load_data(path, f"{path} does not exist: the run kept no best epoch; train with "
                            "train.keep_best=true (and data.val_size > 0) to keep one")
    problem = None
    if not isinstance(best, dict):
        problem = f"it holds a {type(best).__name__}, not a mapping"
    elif best.get("format") != BEST_FORMAT:
        problem = f"format {best.get('format')!r} (this version reads {BEST_FORMAT})"
    elif type(best.get("epoch")) is not int or best["epoch"] < 1:
        problem = f"epoch is {best.get('epoch')!r}, not an integer >= 1"
    else:
        problem = _model_problem(best.get("model"))
    if problem:
        raise RunDirError(f"{path} does not fit this library's layout: {problem}; train the "
                          "run again with train.keep_best=true")
    return best


def _model_problem(model: Any) -> str | None:
    if not isinstance(model, dict) or not model or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        return "model is not a mapping of parameter names to tensors"
    return None


def _checkpoint_problem(checkpoint: Any) -> str | None:
    """What is wrong with a loaded checkpoint's layout (None: nothing)."""
    if not isinstance(checkpoint, dict):
        return f"it holds a {type(checkpoint).__name__}, not a mapping"
    missing = [key for key in ("epoch", "step", "model", "optimizer", "rng", "config")
               if key not in checkpoint]
    if missing:
        return f"no {', '.join(missing)}"
    version = checkpoint.get("format", 1)
    if type(version) is not int or not 1 <= version <= CHECKPOINT_FORMAT:
        return (f"format {version!r} (this version reads 1-{CHECKPOINT_FORMAT}; a newer "
                "colearning wrote it?)")
    for key in ("epoch", "step"):
        if type(checkpoint[key]) is not int or checkpoint[key] < 0:
            return f"{key} is {checkpoint[key]!r}, not an integer >= 0"
    problem = _model_problem(checkpoint["model"])
    if problem:
        return problem
    if not isinstance(checkpoint["optimizer"], dict) or not isinstance(checkpoint["rng"], dict) \
            or not isinstance(checkpoint["rng"].get("torch"), torch.Tensor):
        return "the optimizer or RNG state is not what this library writes"
    if not isinstance(checkpoint["config"], dict):
        return "config is not a mapping"
    return None
