"""Files of the tree that a reader cannot parse: a crashed NFS client, a user's edit, a copy cut short (issue 23 §2).

nestling writes every file atomically, so a damaged file comes from outside. Every reader (status, collect, resume,
report, the workers) goes on without it and names it, once per process, in one line on stderr with what happens and
what to do; none crashes on it. After MAX_LINES files a last line counts the rest.
"""

from __future__ import annotations

import sys
from pathlib import Path

MAX_LINES = 20


class _Named:
    paths: set[str] = set()
    more = 0


def warn(path: Path | str, problem: str, what_to_do: str) -> None:
    """One line for a file that cannot be parsed (each file once per process)."""
    key = str(path)
    if key in _Named.paths:
        return
    _Named.paths.add(key)
    if len(_Named.paths) > MAX_LINES:
        _Named.more += 1
        if _Named.more == 1:
            print("nestling: warning: more damaged files; `nestling status DIR --all` lists the runs", file=sys.stderr)
        return
    print(f"nestling: warning: {key} cannot be read ({problem}); {what_to_do}", file=sys.stderr)


def unreadable_result(path: Path | str, data: bytes) -> None:
    """A run_result.json that is no result: the run counts as not finished, and --resume reruns it."""
    problem = "empty" if not data.strip() else "not a run result this version can read: cut short or edited"
    warn(path, problem, "the run counts as not finished; --resume reruns it")


def seen() -> set[str]:
    """The damaged files named so far in this process (tests and summaries)."""
    return set(_Named.paths)
