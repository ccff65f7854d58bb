"""run_result.json: what happened to a run. The artifact tree is the state: a run is done when its result says so."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nestling.core.tree.naming import RUN_RESULT
from nestling.core.tree.run_spec import RunSpec

RESULT_KEYS = (
    "run_name", "run_id", "cv_name", "tune_name", "fold", "seed", "hparams", "status", "error", "metrics",
    "checkpoint", "duration", "started_at", "finished_at", "host", "pid", "cuda_visible_devices", "slurm_job_id",
    "slurm_array_task_id", "world_size", "attempt", "in_container", "nestling_version", "worker_startup_s",
    "wandb_mode", "wandb_reason",
    "accelerator", "device_names", "peak_memory_bytes", "epochs_trained", "stop_reason",
)  # fmt: skip

SUCCESS = "success"

FAILED = "failed"


def empty_result(spec: RunSpec) -> dict[str, Any]:
    """A result dict with every key, filled from the spec; execute/run_attempt.py fills in the rest (the attempt number comes
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

    try:  # os.path, not pathlib: the collector and status read tens of thousands of these
        with open(os.path.join(run_dir, RUN_RESULT), "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None
