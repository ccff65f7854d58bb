"""A live progress bar over the runs of a plan (rich), or silence with --quiet."""

from __future__ import annotations

from collections import Counter
from typing import Any

from nestling.core.tree.run_state import RunState


class RunProgress:
    """Counts finished runs by status; usable as a context manager around a launch."""

    def __init__(self, total: int, description: str, quiet: bool = False) -> None:
        self.total = total
        self.counts: Counter[str] = Counter()
        self._latest: dict[str, RunState] = {}  # run dir -> its last reported status
        self.quiet = quiet
        self._progress: Any = None
        self._task: Any = None
        self.description = description

    def __enter__(self) -> RunProgress:
        if not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, counts="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def run_done(self, run_dir: str, status: RunState) -> None:
        """A run ended (or paused at a rung). A run reported again (promoted, then paused or ended again; pruned
        after its pause) moves to its new status without advancing the bar: each run counts once."""
        previous = self._latest.get(run_dir)
        self._latest[run_dir] = status
        if previous is not None:
            self.counts[previous] -= 1
            if self.counts[previous] <= 0:
                del self.counts[previous]
        self.counts[status] += 1
        if self._progress is not None:
            counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            self._progress.update(self._task, advance=0 if previous is not None else 1, counts=counts)

    def set_done(self, done: int, counts: dict[str, int]) -> None:
        """For launchers that poll the tree instead of hearing from workers."""
        self.counts = Counter(counts)
        if self._progress is not None:
            text = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            self._progress.update(self._task, completed=done, counts=text)
