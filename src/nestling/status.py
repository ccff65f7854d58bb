"""`nestling status DIR`: runs of a plan by state, from the artifact tree (and squeue for SLURM work)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from nestling.artifacts import find_plan_root, load_plan
from nestling.records import read_result


def status_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nestling status")
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    plan = load_plan(find_plan_root(args.dir))
    counts: Counter[str] = Counter()
    for run in plan.runs:
        result = read_result(run.dir)
        counts[result["status"] if result else "pending"] += 1
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0
