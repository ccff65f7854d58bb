"""The on-disk formats: run_spec.json (what to run), run_result.json (what happened), and atomic writes.

The artifact tree is the state: a run is done when its run_result.json says so. Every file is written to a
temporary name in the same directory and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULT_KEYS = (
    "run_name", "run_id", "cv_name", "tune_name", "fold", "seed", "hparams", "status", "error", "metrics",
    "checkpoint", "duration", "started_at", "finished_at", "host", "pid", "cuda_visible_devices", "slurm_job_id",
    "slurm_array_task_id", "world_size", "attempt", "in_container", "nestling_version", "worker_startup_s",
    "wandb_mode", "wandb_reason",
    "accelerator", "device_names", "peak_memory_bytes",
)  # fmt: skip
SUCCESS = "success"
FAILED = "failed"


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file and a rename (atomic on POSIX file systems)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any, compact: bool = False) -> None:
    """`compact` for the files that grow with the plan (plan.json, units.json, launch.json): json's C encoder runs
    only without indent, and is about 5x faster on 10,000 runs."""
    write_atomic(path, json.dumps(obj, indent=None if compact else 1, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to train one run, fixed before anything executes."""

    run_name: str
    run_id: str
    run_dir: str
    cv_name: str | None
    tune_name: str | None
    fold: int
    seed: int
    hparams: dict[str, Any]
    task: str
    splits_file: str
    max_epochs: int
    early_stopping_patience: int
    scoring_metric: list[str]
    multi_score_strategy: str
    accelerator: str
    strategy: str
    devices: Any
    num_nodes: int
    wandb_project: str | None = None
    wandb_entity: str | None = None
    wandb_mode: str = "auto"  # --wandb_mode; specs written before it existed load as "auto"
    score_epoch: str = "last"  # "best": the run's val metrics are those of its best checkpoint (--score_epoch)
    retrain: bool = False  # train on the split's train samples without validating; test the final weights
    trial: int | None = None  # adaptive search: hparams are completed from this trial's draw file at start

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Unknown keys are dropped: specs written by older versions (with `attempt` or `extra`) still load."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def empty_result(spec: RunSpec) -> dict[str, Any]:
    """A result dict with every key, filled from the spec; run.py fills in the rest (the attempt number comes
    from the run dir's attempts.json, not from the spec)."""
    result: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    result.update(
        run_name=spec.run_name,
        run_id=spec.run_id,
        cv_name=spec.cv_name,
        tune_name=spec.tune_name,
        fold=spec.fold,
        seed=spec.seed,
        hparams=spec.hparams,
        metrics={},
    )
    return result


def read_result(run_dir: Path | str) -> dict[str, Any] | None:
    """The run's result, or None when it has none (yet) or it cannot be read."""
    from nestling.naming import RUN_RESULT

    try:  # os.path, not pathlib: the collector and status read tens of thousands of these
        with open(os.path.join(run_dir, RUN_RESULT), "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None


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


def read_launches(root: Path) -> list[LaunchRecord]:
    """Every launch of the plan at `root`, oldest first; [] before its first launch."""
    from nestling.naming import launch_file

    path = launch_file(root)
    if not path.exists():
        return []
    return [LaunchRecord.from_dict(entry) for entry in read_json(path).get("launches", [])]


def append_launch(root: Path, record: LaunchRecord, now: float) -> None:
    """Add one launch to launch.json (earlier entries are kept byte for byte as read)."""
    from nestling.naming import launch_file

    path = launch_file(root)
    history: list[dict[str, Any]] = read_json(path).get("launches", []) if path.exists() else []
    entry = {**record.to_dict(), "saved_at": now}
    write_json(path, {"launches": [*history, entry]}, compact=True)
