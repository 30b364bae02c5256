"""Errors a user can fix, and the exit codes the CLI maps them to.

Every problem caused by input (a bad config, an unknown name, a corrupt data file,
a run directory in the wrong state) raises a subclass of :class:`ColearningError`
with a one-line message that says what is wrong and how to fix it. The CLI prints
that line and exits with the class's code; anything else is a crash (exit 1 with a
traceback), so the two are never confused. A run that diverges is no error: it ends with
status ``diverged`` in its summary.json, and ``colearn train`` (or ``expand``) then
exits 5.
"""

from __future__ import annotations


class ColearningError(Exception):
    """Base class of user-fixable errors. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class ConfigError(ColearningError, ValueError):
    """A config file, override or argument is invalid (unknown key, wrong type, bad value)."""

    exit_code = 2


class DataError(ColearningError):
    """A dataset file is missing, corrupt or inconsistent."""

    exit_code = 3


class RunDirError(ColearningError):
    """A path is not a run/sweep directory, is locked, or does not match the config."""

    exit_code = 4


class RankFailed(ColearningError):
    """Another process of a distributed run died or stopped answering."""

    exit_code = 6
