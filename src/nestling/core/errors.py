"""The errors nestling expects, and the one place that maps each to the command line's exit code and its line.

Every error a user can meet without a bug (bad input, a job SLURM will never start, a refused submission) is a
`NestlingError`: one line that names the value and the fix, and the exit code the command line ends with. The
Python API raises them as they are; the command line (commands/cli.py) and the detached supervisor print
`stderr_line(exc)` and exit with `exit_code(exc)`.
"""

from __future__ import annotations

import argparse
from typing import ClassVar, NoReturn

EXIT_FAILED = 1  # the plan ran and no run succeeded, or a job cannot start: the work, not the input, is at fault
EXIT_USAGE = 2  # bad input: nothing was written
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


class NestlingError(Exception):
    """An error with a one-line message for the user and the exit code the command line ends with."""

    exit_code: ClassVar[int] = EXIT_FAILED
    prefix: ClassVar[str] = "nestling: "

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class UsageError(NestlingError):
    """Bad input from the user. The message names the value and the fix, on one line."""

    exit_code = EXIT_USAGE
    prefix = "nestling: error: "


class JobsBlocked(NestlingError):
    """`--wait` stops: SLURM keeps a job pending for a reason waiting never resolves. One line: reason and fix."""


class StorageFull(NestlingError):
    """A full file system or quota (ENOSPC, EDQUOT) stopped the work: one line naming the file system, its free
    space and the command that continues once there is room. Exit 1: the input was fine."""


def exit_code(exc: BaseException) -> int:
    """The command line's exit code for an error that ends a command (Ctrl-C included)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return exc.exit_code if isinstance(exc, NestlingError) else EXIT_FAILED


def stderr_line(exc: NestlingError) -> str:
    """The one line the command line prints on stderr for `exc`."""
    return f"{exc.prefix}{exc}"


def strict_parser(prog: str, description: str = "") -> argparse.ArgumentParser:
    """An argparse parser whose mistakes become one-line UsageErrors (exit 2) instead of usage dumps."""

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UsageError(f"{message} (see {prog} --help)")

    return _Parser(prog=prog, description=description, allow_abbrev=False)
