"""GPU packing (issue 15 #2, #3): throughput of `nestling cv --strategy cv-parallel --runs_per_gpu K` on ONE GPU for
K = 1, 2, 4, with a small model of the synthetic task (bench/_gpu_task.py: 1,024 images of 64 x 64, data on the
GPU), and the peak GPU memory of one run (run_result.json's peak_memory_bytes). Without CUDA it prints one row
saying it was skipped and why. Goal: >= 2x the runs per minute at K = 4 than at K = 1.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench._common import PYTHON, Row, env, judge, nestling_cmd, scratch, standalone, timed

NAME = "gpu"
TASK = "bench._gpu_task:TASK"
KS = (1, 2, 4)


def cuda_device() -> str | None:
    """The first GPU's name, or None when torch sees no CUDA device (checked in a subprocess, as a worker would)."""
    code = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env(), timeout=300)
    return done.stdout.strip() or None


def _cv(root: Path, k: int, quick: bool) -> tuple[float, int, list[int]]:
    folds, seeds, epochs = (4, 2, 2) if quick else (4, 4, 4)
    args = ["cv", "--task", TASK, "--strategy", "cv-parallel", "--accelerator", "gpu", "--devices", "1",
            "--runs_per_gpu", str(k), "--n_folds", str(folds), "--n_seeds", str(seeds), "--max_epochs", str(epochs),
            "--hp", "base_channels=8", "--hp", "depth=3", "--hp", "batch_size=64", "--artifact_dir", str(root),
            "--name", f"k{k}", "--quiet"]  # fmt: skip
    wall, _ = timed(nestling_cmd(*args))
    results = [json.loads(p.read_text()) for p in (root / "_cross_validations" / f"k{k}").glob("*/run_result.json")]
    peaks = [int(r["peak_memory_bytes"]) for r in results if r.get("peak_memory_bytes") is not None]
    return wall, folds * seeds, peaks


def run(quick: bool = False) -> list[Row]:
    """Runs per minute on one GPU at --runs_per_gpu 1, 2, 4, and the peak memory of one run."""
    device = cuda_device()
    if device is None:
        return [Row(NAME, "runs_per_gpu 1 / 2 / 4 on one GPU", None, quick=quick, target=">= 2x at K=4",
                    note="skipped: no CUDA device here (torch.cuda.is_available() is False); run "
                         "`python -m bench --only gpu` on a GPU machine")]  # fmt: skip
    rows: list[Row] = []
    base: float | None = None
    for k in KS:
        with scratch(f"{NAME}-k{k}") as tmp:
            wall, n, peaks = _cv(tmp, k, quick)
        per_min = n / wall * 60
        base = base or per_min
        peak = max(peaks) / 2**20 if peaks else None
        rows.append(
            Row(NAME, f"{n} runs, --runs_per_gpu {k}, {device}", per_min, base, unit="runs/min",
                baseline_name="K=1", target=">= 2x at K=4" if k == 4 else "",
                met=judge(per_min / base, ">=", 2.0) if k == 4 else None, quick=quick,
                note=f"end to end {wall:.1f} s; peak GPU memory of one run {peak:.0f} MiB" if peak is not None
                else f"end to end {wall:.1f} s; no peak memory recorded")  # fmt: skip
        )
    return rows


if __name__ == "__main__":
    standalone(NAME, run)
