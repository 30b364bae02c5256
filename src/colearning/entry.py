"""The ``colearn`` command's entry point (and ``python -m colearning``'s).

:func:`main` first makes SIGINT, SIGTERM and SIGHUP end the process at once with one line, so
a Ctrl-C in the first instant of a command (while Python imports the CLI, torch and numpy)
never prints a traceback from inside an import. :func:`colearning.cli.main` then hands the
signals to the command. Importing this module changes nothing.
"""

from colearning.startup import exit_at_once_on_signals


def main() -> int:
    exit_at_once_on_signals()  # before the CLI's imports (torch, numpy) begin
    from colearning.cli import main as command

    return command()
