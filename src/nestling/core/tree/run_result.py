"""run_result.json: what happened to a run. The artifact tree is the state: a run is done when its result says so.

`RunResult` is the file as a frozen record; its fields are the file's keys in the file's order (`RESULT_KEYS`), so
a result written by this version is byte for byte what the dict-based versions wrote. Reading is lenient both ways:
a file from an older version lacks the newer keys (they read as None), and keys a newer version added are ignored:
they are no fields, so to_json, equality and repr never see them (results are written once, by the attempt that
ran, and never rewritten but by a promotion of a run paused at a rung, which writes the whole record again, so nothing
is lost).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.tree import damaged
from nestling.core.tree.failure_class import FailureClass
from nestling.core.tree.naming import RUN_RESULT, RunPaths
from nestling.core.tree.run_spec import RunSpec
from nestling.core.tree.run_state import RunState
from nestling.core.tree.stop_reason import StopReason


@dataclass(frozen=True)
class RunResult:
    """One run's outcome (status, error, metrics, checkpoint) and where and how it ran."""

    run_name: str
    run_id: str
    cv_name: str | None
    tune_name: str | None
    fold: int
    seed: int
    hparams: dict[str, Any]
    status: RunState
    error: str | None = None  # "ExceptionType: message" of a failed run (the traceback is in error.txt)
    metrics: dict[str, float] = field(default_factory=dict)  # trainer.callback_metrics at the end (and test/*)
    checkpoint: str | None = None
    duration: float | None = None  # seconds of this attempt, without the worker's one-time start-up
    started_at: str | None = None  # core/tree/clock.py's format
    finished_at: str | None = None
    host: str | None = None
    pid: int | None = None
    cuda_visible_devices: str | None = None
    slurm_job_id: str | None = None
    slurm_array_task_id: str | None = None
    world_size: int | None = None
    attempt: int | None = None
    in_container: bool | None = None
    nestling_version: str | None = None
    worker_startup_s: float | None = None  # the one-time imports, paid by the first run of a worker process
    wandb_mode: str | None = None  # online | offline | disabled, and why when not online
    wandb_reason: str | None = None
    accelerator: str | None = None  # what ran where (issue 15 #4)
    device_names: list[str] | None = None
    peak_memory_bytes: int | None = None
    failure_class: FailureClass | None = None  # a failed attempt's class: what nestling did about it (retry.py)
    stage_s: float | None = None  # seconds this attempt staged the task's data, or waited for its node's stager
    # What produced it (core/provenance/): the git commit of the task's tree at submit and whether it had
    # uncommitted changes; the digests of the code snapshot the worker imported, of its environment (distributions,
    # python, the torch build), of the task's data (Task.data_digest) and of the container image it ran in.
    code_commit: str | None = None
    code_dirty: bool | None = None
    code_digest: str | None = None
    env_digest: str | None = None
    data_digest: str | None = None
    image_digest: str | None = None
    epochs_trained: int | None = None  # over all its attempts (core/tree/run_epochs.py); None before runs counted
    stop_reason: StopReason | None = None  # why training ended; PAUSED at a rung; None for a failed run

    @classmethod
    def for_spec(cls, spec: RunSpec, status: RunState, **outcome: Any) -> RunResult:
        """The one way a result is made: the run's identity from its spec, the rest from the attempt that ran it."""
        return cls(
            run_name=spec.run_name, run_id=spec.run_id, cv_name=spec.cv_name, tune_name=spec.tune_name,
            fold=spec.fold, seed=spec.seed, hparams=spec.hparams, status=status, **outcome,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The file's content, keys in RESULT_KEYS order."""
        data = {name: getattr(self, name) for name in RESULT_KEYS}
        data["status"] = self.status.value
        if self.failure_class is not None:
            data["failure_class"] = self.failure_class.value
        if self.stop_reason is not None:
            data["stop_reason"] = self.stop_reason.value
        return data

    @classmethod
    def from_json(cls, data: Any) -> RunResult | None:
        """The record of a parsed file; None when it is no result (not an object, or no status this version knows).

        The collector reads tens of thousands of these, so the record takes the parsed dict as its attribute dict:
        no copy, no __init__ per field, no check of the keys. A key the file lacks (an older version's file) reads
        as its default, from the class or from __getattr__; a file with more keys than this version writes (a
        newer version's) is reduced to the known ones first."""
        if not isinstance(data, dict):
            return None
        status = RunState.named(data.get("status"))
        if status is None:
            return None
        if len(data) > len(RESULT_KEYS):
            data = {name: data[name] for name in RESULT_KEYS if name in data}
        data["status"] = status
        if "failure_class" in data:
            data["failure_class"] = FailureClass.named(data["failure_class"])
        if "stop_reason" in data:
            data["stop_reason"] = StopReason.named(data["stop_reason"])
        if data.get("metrics") is None:
            data["metrics"] = {}
        record = object.__new__(cls)
        object.__setattr__(record, "__dict__", data)
        return record

    if not TYPE_CHECKING:  # (type checkers must not take every attribute name for a field)

        def __getattr__(self, name: str) -> Any:
            """A field without a class default that the file lacks (a hand-made file): None."""
            if name in _FIELD_NAMES:
                return None
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


RESULT_KEYS = tuple(f.name for f in dataclasses.fields(RunResult))
_FIELD_NAMES = frozenset(RESULT_KEYS)


def parse_result(text: bytes | str) -> RunResult | None:
    """A result file's content as a record; None when it is not valid JSON or no result."""
    try:
        return RunResult.from_json(json.loads(text))
    except ValueError:
        return None


def read_result(run_dir: Path | str) -> RunResult | None:
    """The run's result, or None when it has none (yet) or it cannot be read (named on stderr, core/tree/damaged.py)."""
    path = os.path.join(run_dir, RUN_RESULT)  # os.path, not pathlib: the collector and status read tens of thousands
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    result = parse_result(data)
    if result is None:
        damaged.unreadable_result(path, data)
    return result


def result_state(run_dir: Path | str) -> RunState | None:
    """The state the run's result records (success or failed); None without a readable result."""
    result = read_result(run_dir)
    return None if result is None else result.status


def archive_result(run_dir: Path | str, result: RunResult) -> None:
    """A failed result moves aside as run_result.attempt-N.json before the run's next attempt (a resume, a retry):
    the run dir keeps every attempt's outcome, and run_result.json only ever holds the latest."""
    paths = RunPaths(Path(run_dir))
    with contextlib.suppress(FileNotFoundError):
        os.replace(paths.result, paths.archived_result(result.attempt or 1))
