"""The Launcher interface: how work units of a plan already on disk get executed.

Call order (commands/start.py does this):
  0. `parallel_slots` may be read first: how many units run at once (it sizes the units with --expected_run_s).
  1. A dry run calls `describe(root, units, title)` instead of `launch`: it returns what a launch would do (the
     SLURM launcher also writes its job scripts to its dry-run folder), starts nothing and writes no plan tree.
  2. Otherwise `prepare()` (before the plan is written, and again before launching: it does its work once), then
     `launch(root, units, progress)` once: starts the work. An attached launcher (local, submitit-local)
     returns when every unit ended; a detached one (SLURM) returns after submission. It returns the LaunchRecord,
     which commands stores in launch.json. `SubmitError` (carrying what was submitted before) when a detached
     launcher could submit nothing.
  3. `wait(record, progress)` only for a detached launcher and only with --wait: blocks until the work ended.
Launchers never decide what a run's outcome is: workers write run_result.json, the collector reads it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from nestling.core.containers import image
from nestling.core.errors import NestlingError
from nestling.core.tree.launch_record import LaunchRecord
from nestling.core.tree.run_state import RunState
from nestling.plan.model import WorkUnit

if TYPE_CHECKING:
    from nestling.core.containers.spec import ContainerSpec
    from nestling.launch.slurm.resources import SlurmResources


class Progress(Protocol):
    def run_done(self, run_dir: str, status: RunState) -> None:
        """A worker reported one run as ended (attached launchers)."""

    def set_done(self, done: int, counts: dict[str, int]) -> None:
        """The tree holds `done` results, by status (launchers that poll the tree)."""


class SubmitError(NestlingError):
    """The scheduler refused a submission; `record` holds what was submitted before (saved to launch.json)."""

    def __init__(self, message: str, record: LaunchRecord | None = None) -> None:
        super().__init__(message)
        self.record = record


class Launcher(ABC):
    name: str = "base"
    detached: bool = False
    container: ContainerSpec | None = None  # the image every worker runs in, for launchers that take one
    _prepared: bool = False

    def prepare(self) -> None:
        """What must be there before any worker starts: an image given as a URI pulled once, the image's
        interpreter found once (core/containers/image.py). Not for a dry run."""
        if self.container is not None and not self._prepared:
            self.container = image.ready(self.container)
        self._prepared = True

    @property
    @abstractmethod
    def parallel_slots(self) -> int:
        """How many work units run at the same time."""

    @abstractmethod
    def describe(self, root: Path, units: list[WorkUnit], title: str) -> str:
        """What launching `units` would do (for --dry_run; `title` is e.g. "cv NAME"); starts nothing."""

    @abstractmethod
    def launch(self, root: Path, units: list[WorkUnit], progress: Progress) -> LaunchRecord:
        """Start (attached: and finish) every unit; return the launch record."""

    def wait(self, record: LaunchRecord, progress: Progress) -> None:  # noqa: B027 - attached launchers are done
        """Block until the launched work ended (detached launchers)."""


class JobLauncher(Launcher, ABC):
    """A launcher whose work units run as scheduler jobs (SLURM arrays, submitit's local executor): what one job
    asks for, where the job files go (None: the plan's default), and the image its workers run in, if any."""

    def __init__(
        self, resources: SlurmResources, *, folder: Path | None = None, container: ContainerSpec | None = None
    ) -> None:
        self.resources = resources
        self.folder = folder
        self.container = container

    @property
    def parallel_slots(self) -> int:
        return self.resources.array_parallelism


def count_runs(units: list[WorkUnit]) -> int:
    return sum(len(u.run_dirs) for u in units)


def plural(n: int, word: str) -> str:
    """`1 run`, `2 runs`: the counts users read in progress and dry-run lines."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def runs_in_units(units: list[WorkUnit]) -> str:
    """`1 run in 1 work unit`, `6 runs in 2 work units`."""
    return f"{plural(count_runs(units), 'run')} in {plural(len(units), 'work unit')}"
