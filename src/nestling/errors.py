"""The one error type for bad user input: the CLI prints its message on one line and exits 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user. The message names the value and the fix, on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
