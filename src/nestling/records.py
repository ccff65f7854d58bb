"""The on-disk formats: run_spec.json (what to run), run_result.json (what happened), and atomic writes.

The artifact tree is the state: a run is done when its run_result.json says so. Every file is written to a
temporary name in the same directory and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_KEYS = (
    "run_name", "run_id", "cv_name", "tune_name", "fold", "seed", "hparams", "status", "error", "metrics",
    "checkpoint", "duration", "started_at", "finished_at", "host", "pid", "cuda_visible_devices", "slurm_job_id",
    "slurm_array_task_id", "world_size", "attempt", "in_container", "nestling_version",
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
    attempt: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Keys this version does not know (e.g. `extra` in older trees) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def empty_result(spec: RunSpec) -> dict[str, Any]:
    """A result dict with every key, filled from the spec; run.py fills in the rest."""
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
        attempt=spec.attempt,
    )
    return result


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result, or None when it has none (yet) or it cannot be read."""
    from nestling.naming import RUN_RESULT

    try:  # os.path, not pathlib: the collector and status read tens of thousands of these
        with open(os.path.join(run_dir, RUN_RESULT), "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None
