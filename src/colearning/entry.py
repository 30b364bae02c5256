"""The ``colearn`` command's entry point (and ``python -m colearning``'s).

Importing it makes SIGINT, SIGTERM and SIGHUP end the process at once with one line, so a
Ctrl-C in the first instant of a command (while Python imports the CLI, torch and numpy)
never prints a traceback from inside an import. :func:`colearning.cli.main` then hands the
signals to the command. Library code never imports this module.
"""

import os
import signal


def _exit_at_once(signum: int, _frame: object) -> None:
    os.write(2, f"colearn: interrupted ({signal.Signals(signum).name}) while starting; "
                "nothing was written\n".encode())
    os._exit(128 + signum)


for _signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_signum, _exit_at_once)


def main() -> int:
    from colearning.cli import main as command

    return command()
