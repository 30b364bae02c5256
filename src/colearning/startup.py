"""A command's first instant: before the CLI's heavy imports (torch, numpy), a stop signal
ends the process at once with one line (:func:`exit_at_once_on_signals`), never a traceback
from inside an import. Used by :mod:`colearning.entry` and :func:`colearning.cli.main`."""

from __future__ import annotations

import os
import signal


def exit_at_once(signum: int, _frame: object) -> None:
    """A signal while the command starts (torch half-imported, nothing written): exit at
    once with one line, never a traceback from inside an import."""
    os.write(2, f"colearn: interrupted ({signal.Signals(signum).name}) while starting; "
                "nothing was written\n".encode())
    os._exit(128 + signum)


def exit_at_once_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP end the process with :func:`exit_at_once`."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_at_once)
