"""``colearn train --nproc K``: K processes of the same command on this machine, one job.

Each process gets the environment torchrun would give it (RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so ``colearn train`` joins the group exactly
as under ``torchrun --standalone --nproc-per-node K -m colearning train ...`` (which also
works, and is how several machines run). What this launcher adds: a rank that dies ends
the job at once with one line naming it (the others are stopped: SIGTERM, then SIGKILL
after ``GRACE`` seconds), every rank dies with the launcher (Linux parent-death signal), and
each rank gets an equal share of the cores unless OMP_NUM_THREADS is set.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

# Seconds the surviving ranks get to stop on their own once one has failed.
GRACE = 10.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def watch_parent(grace: float = 120.0, every: float = 0.5,
                 busy: Callable[[], bool] | None = None) -> None:
    """End this process when its parent dies: a daemon thread notices the new parent and
    sends this process SIGTERM, again every second (a training loop checkpoints and stops;
    a cell that starts after it is stopped as well), and exits it as soon as ``busy()``
    says no work is running, or after ``grace`` seconds. Works however this process was
    started (prctl's parent-death signal follows the thread that forked it, which a
    process pool does not promise)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (busy is None or busy()):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="colearning-parent-watch", daemon=True).start()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def without_nproc(argv: Sequence[str]) -> list[str]:
    """A ``colearn train`` command line without its ``--nproc K`` (what each rank runs).

    >>> without_nproc(["train", "--nproc", "2", "seed=1", "--nproc=3"])
    ['train', 'seed=1']
    """
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def launch(command: Sequence[str], nproc: int) -> tuple[int, str | None]:
    """Run ``command`` (e.g. ``[python, -m, colearning, train, ...]``) as ``nproc`` ranks;
    (exit code, a one-line message when a rank failed, else None). The code is the first
    failed rank's (6 when a signal killed it)."""
    env = {**os.environ, "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    ranks = [subprocess.Popen(list(command),
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              preexec_fn=_die_with_parent if sys.platform == "linux" else None)
             for r in range(nproc)]
    failed: tuple[int, int] | None = None
    deadline = 0.0
    while any(rank.poll() is None for rank in ranks):
        try:
            time.sleep(0.1)
        except KeyboardInterrupt:  # Ctrl-C reached the ranks too: they checkpoint and stop
            continue
        for r, rank in enumerate(ranks):
            code = rank.poll()
            if failed is None and code not in (None, 0):
                failed, deadline = (r, code), time.monotonic() + GRACE
                for other in ranks:
                    if other.poll() is None:
                        other.send_signal(signal.SIGTERM)
        if failed is not None and time.monotonic() > deadline:
            for rank in ranks:
                if rank.poll() is None:
                    rank.kill()
    if failed is None:
        return 0, None
    r, code = failed
    if code < 0:
        name = signal.Signals(-code).name
        return 6, (f"process rank {r} of {nproc} was killed by {name}; the job stopped (the "
                   "run directory keeps its last checkpoint)")
    if code in (129, 130, 143):
        return code, None  # stopped by a signal: the ranks said where to continue
    return code, None if code < 6 else f"process rank {r} of {nproc} failed (exit {code})"
