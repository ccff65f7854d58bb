"""launch.json: every launch of a plan (each resume appends one), as typed records."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestling.core.tree import damaged
from nestling.core.tree.atomic import read_json, write_json
from nestling.core.tree.naming import launch_file, unreadable_launch_file


@dataclass(frozen=True)
class ArrayRecord:
    """One submitted job array (or submitit's local map): its id, its tasks, and the units task i runs."""

    job_id: str
    tasks: int
    offset: int
    units: list[int]
    run_dirs: list[list[str]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArrayRecord:
        return cls(
            job_id=str(data["job_id"]),
            tasks=int(data.get("tasks", 0)),
            offset=int(data.get("offset", 0)),
            units=list(data.get("units", [])),
            run_dirs=[list(dirs) for dirs in data.get("run_dirs", [])],
        )


@dataclass
class LaunchRecord:
    """One launch of a plan, as an entry of launch.json (each resume appends one).

    Fields left None are not written, so launch.json keeps the shape users and scripts read: a local launch has
    started_at/units/workers/lost_units(/lost_runs/interrupted)/finished_at, a SLURM or submitit launch has
    submitit_folder/arrays/job_ids/collector_job_id/submitted_at (SLURM also launch_dir/max_array_size). The field
    order is the key order of the JSON. Keys this version does not know survive a round trip in `extra`.
    """

    launcher: str
    started_at: float | None = None
    units: int | None = None
    workers: int | None = None
    lost_units: list[int] | None = None
    lost_runs: list[str] | None = None
    interrupted: bool | None = None  # stopped by Ctrl-C: its unfinished runs are resumable, not lost
    storage_full: bool | None = None  # a run met a full file system: no more units were handed out
    submitit_folder: str | None = None
    launch_dir: str | None = None
    max_array_size: int | None = None
    arrays: list[ArrayRecord] | None = None
    job_ids: list[str] | None = None
    collector_job_id: str | None = None
    submitted_at: float | None = None
    submit_error: str | None = None
    finished_at: float | None = None
    resume: bool | None = None
    rerun: int | None = None
    forced_changes: list[str] | None = None
    launch_overrides: list[str] | None = None  # a resume: launch/container options given instead of the plan's
    saved_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def submitted(self) -> bool:
        """Work went to a queue (SLURM or submitit): job ids and a collector job id (null until one ran)."""
        return self.job_ids is not None

    @property
    def run_dirs(self) -> list[str]:
        """Every run dir of the submitted arrays, in task order."""
        return [d for array in self.arrays or [] for unit in array.run_dirs for d in unit]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name == "arrays" and value is not None:
                value = [a.to_dict() for a in value]
            if value is not None or (f.name == "collector_job_id" and self.submitted):
                out[f.name] = value
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LaunchRecord:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        if known.get("arrays") is not None:
            known["arrays"] = [ArrayRecord.from_dict(a) for a in known["arrays"]]
        if known.get("job_ids") is not None:
            known["job_ids"] = [str(j) for j in known["job_ids"]]
        if known.get("collector_job_id") is not None:
            known["collector_job_id"] = str(known["collector_job_id"])
        known.setdefault("launcher", "unknown")
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def updated(self, values: dict[str, Any]) -> LaunchRecord:
        """A copy with these keys set (known ones as fields, others in `extra`)."""
        return LaunchRecord.from_dict({**self.to_dict(), **values})


def _entries(root: Path) -> list[dict[str, Any]] | None:
    """launch.json's entries; [] before the first launch, None when the file cannot be parsed (named on stderr)."""
    path = launch_file(root)
    try:
        data = read_json(path)
        entries = data.get("launches", []) if isinstance(data, dict) else None
        if isinstance(entries, list) and all(isinstance(e, dict) for e in entries):
            return entries
    except FileNotFoundError:
        return []
    except ValueError:
        pass
    damaged.warn(path, "not valid launch records", "status reads the plan as never launched (queued SLURM jobs "
                 "are not asked about); the next launch starts a new launch.json")  # fmt: skip
    return None


def read_launches(root: Path) -> list[LaunchRecord]:
    """Every launch of the plan at `root`, oldest first; [] before its first launch or when launch.json is damaged."""
    return [LaunchRecord.from_dict(entry) for entry in _entries(root) or []]


def append_launch(root: Path, record: LaunchRecord, now: float) -> None:
    """Add one launch to launch.json (earlier entries are kept byte for byte as read; a launch.json that cannot be
    parsed is kept aside as launch.unreadable.json)."""

    path = launch_file(root)
    history = _entries(root)
    if history is None:
        os.replace(path, unreadable_launch_file(root))
        history = []
    entry = {**record.to_dict(), "saved_at": now}
    write_json(path, {"launches": [*history, entry]}, compact=True)
