"""One import per process (issue 15 #1): a task module with `import lightning` at the top, 6 runs of about 1 s,
`nestling cv --accelerator cpu --devices 1` end to end vs a bare Lightning loop with the same fits, checkpointing
and CSV logging (bench/_bare_loop.py).

The CLI imports such a module to plan; the local worker pool is started before that (launch.factory.prestart_local),
so the workers' own import runs at the same time instead of after it. The same cv with the pool started after
planning (NESTLING_PRESTART=0, the behaviour before) is measured too, so the gain shows on this machine's load.
"""

from __future__ import annotations

import json
import os

from bench._common import PYTHON, Row, judge, nestling_cmd, scratch, standalone, timed

NAME = "one_import"
TASK = "bench._heavy_task:TASK"
TARGET = 1.25


def _cv(root: str, name: str, prestart: bool) -> float:
    from bench._common import env

    args = ["cv", "--task", TASK, "--hp", "sleep_s=1", "--max_epochs", "1", "--n_folds", "3", "--n_seeds", "2",
            "--accelerator", "cpu", "--devices", "1", "--artifact_dir", root, "--name", name, "--quiet"]  # fmt: skip
    wall, _ = timed(nestling_cmd(*args), env=env(NESTLING_PRESTART="1" if prestart else "0"))
    return wall


def run(quick: bool = False) -> list[Row]:
    """6 one-second runs of a lightning-at-top task: nestling cv end to end vs a bare Lightning loop."""
    from bench._common import env

    with scratch(NAME) as tmp:
        overlapped = _cv(str(tmp), "overlap", prestart=True)
        root = tmp / "_cross_validations" / "overlap"
        threads = str(os.cpu_count() or 1)
        bare, out = timed([PYTHON, "-m", "bench._bare_loop", str(root), str(tmp / "bare")],
                          env=env(OMP_NUM_THREADS=threads))  # fmt: skip
        fits = json.loads(out.strip().splitlines()[-1])
        sequential = None if quick else _cv(str(tmp), "sequential", prestart=False)
    rows = [
        Row(NAME, "lightning-at-top task x 6 runs of 1 s, serial, end to end", overlapped, bare,
            baseline_name="bare loop", target=f"ratio <= {TARGET}", met=judge(overlapped / bare, "<=", TARGET),
            quick=quick, note=f"bare loop: imports {fits['imports_s']:.1f} s + 6 fits {sum(fits['fits_s']):.1f} s; "
            "nestling's workers import torch/Lightning while the CLI loads the task and plans")  # fmt: skip
    ]
    if sequential is not None:
        rows.append(
            Row(NAME, "same, pool started after planning (before issue 15)", sequential, bare,
                baseline_name="bare loop", target="for comparison", quick=quick,
                note=f"overlap saves {sequential - overlapped:+.1f} s")  # fmt: skip
        )
    return rows


if __name__ == "__main__":
    standalone(NAME, run)
