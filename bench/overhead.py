"""Per-run overhead: N fits through `nestling cv` (local launcher) vs the same N fits in one bare Lightning process.

Cases: the `sleep` task (each 1-epoch fit holds the CPU "device" for exactly sleep_s seconds) with 1-s and 5-s runs,
and the synthetic segmentation task (1 epoch, issue 2). nestling runs serially (one worker process) and with
`--strategy cv-parallel --accelerator cpu --devices 2` (two workers). Both sides are timed as whole subprocesses
(fork to exit, imports included): the nestling CLI plans, writes the tree, starts its worker(s), trains and writes
run_infos.parquet; the baseline (bench/_bare_loop.py) imports Lightning and loops over the same fits.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from bench._common import PYTHON, Row, judge, nestling_cmd, scratch, standalone, timed

NAME = "overhead"


def _cases(quick: bool) -> list[dict[str, object]]:
    # (task, hparams, n_folds, n_seeds): runs = n_folds * n_seeds
    # quick: the 1-s target, serially; every further Lightning process costs about 8 s here (the rest: full run)
    quick_cases = [{"label": "sleep 1 s", "task": "sleep", "hp": ["sleep_s=1"], "folds": 4, "seeds": 1,
                    "target": 1.5, "parallel": False}]  # fmt: skip
    if quick:
        return quick_cases
    return [
        {"label": "sleep 1 s", "task": "sleep", "hp": ["sleep_s=1"], "folds": 5, "seeds": 4, "target": 1.5},
        {"label": "sleep 5 s", "task": "sleep", "hp": ["sleep_s=5"], "folds": 5, "seeds": 2, "target": 1.05},
        {"label": "synthetic 1 epoch", "task": "synthetic-segmentation", "hp": [], "folds": 5, "seeds": 4,
         "target": 1.5},
    ]  # fmt: skip


def _nestling(root: str, name: str, case: dict[str, object], parallel: bool) -> float:
    args = ["cv", "--task", str(case["task"]), "--max_epochs", "1", "--n_folds", str(case["folds"]),
            "--n_seeds", str(case["seeds"]), "--accelerator", "cpu", "--artifact_dir", root, "--name", name,
            "--quiet"]  # fmt: skip
    for hp in case["hp"]:  # type: ignore[attr-defined]
        args += ["--hp", hp]
    if parallel:
        args += ["--strategy", "cv-parallel", "--devices", "2"]
    wall, _ = timed(nestling_cmd(*args))
    return wall


def run(quick: bool = False) -> list[Row]:
    """N runs through nestling cv (serial and cv-parallel on 2 CPU workers) vs a bare Lightning loop."""
    rows: list[Row] = []
    threads = str(os.cpu_count() or 1)
    for case in _cases(quick):
        n = int(case["folds"]) * int(case["seeds"])  # type: ignore[call-overload]
        label = f"{case['label']} x {n}"
        with scratch(NAME) as tmp:
            serial = _nestling(str(tmp), "serial", case, parallel=False)
            root = tmp / "_cross_validations" / "serial"
            cycle = _steady_cycle(root)
            # The bare loop gets the threads the serial nestling worker gets (the local launcher's default).
            bare, out = timed([PYTHON, "-m", "bench._bare_loop", str(root), str(tmp / "bare")],
                              env=_env(OMP_NUM_THREADS=threads))  # fmt: skip
            fits = json.loads(out.strip().splitlines()[-1])
            do_parallel = bool(case.get("parallel", True))
            parallel = _nestling(str(tmp), "parallel", case, parallel=True) if do_parallel else None
        target = float(case["target"])  # type: ignore[arg-type]
        bare_fit = statistics.median(fits["fits_s"][1:] or fits["fits_s"])
        rows.append(
            Row(NAME, f"{label}, serial, end to end", serial, bare, baseline_name="bare loop",
                target=f"ratio <= {target}", met=judge(serial / bare, "<=", target), quick=quick,
                note=f"bare loop: imports {fits['imports_s']:.1f} s + {n} fits {sum(fits['fits_s']):.1f} s; "
                     f"nestling's extra wall time {serial - bare:+.1f} s in all, {(serial - bare) / n:+.2f} s per run")
        )  # fmt: skip
        if cycle is not None:
            rows.append(
                Row(NAME, f"{label}, serial, per run (median)", cycle, bare_fit, baseline_name="bare fit",
                    target=f"ratio <= {target}", met=judge(cycle / bare_fit, "<=", target), quick=quick,
                    note="nestling: median gap between consecutive run_result.json writes of one worker (runs 2..N: "
                         "spec read, Trainer, fit, result write, worker protocol); bare: median fit 2..N")
            )  # fmt: skip
        if parallel is not None:
            rows.append(
                Row(NAME, f"{label}, cv-parallel 2 CPU workers", parallel, serial, baseline_name="nestling serial",
                    target="ratio < 1 (faster)", met=judge(parallel, "<", serial), quick=quick,
                    note=f"cv-parallel / bare loop = {parallel / bare:.2f}")
            )  # fmt: skip
    return rows


def _steady_cycle(root: Path) -> float | None:
    """Median time between consecutive results of the single serial worker, leaving out the first run (which
    pays the worker's torch/lightning import, as the bare loop's imports are left out of its fit times)."""
    times = sorted(p.stat().st_mtime for p in root.glob("*/run_result.json"))
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return statistics.median(gaps) if gaps else None


def _env(**extra: str) -> dict[str, str]:
    from bench._common import env

    return env(**extra)


if __name__ == "__main__":
    standalone(NAME, run)
