"""Packing short runs: K runs per array task (`--runs_per_task K`), so a task pays the Python/torch start-up once
for K runs instead of once per run. 1-s runs of the sleep task on the local cluster's 4 fake GPUs, K = 1 against
K = n_runs / 4 (one task per GPU); figure: makespan (submission to last run_result.json), ratio packed / unpacked.
"""

from __future__ import annotations

from bench._common import ClusterUnavailable, Row, cluster_env, judge, scratch, standalone
from bench.makespan import GPUS, nestling_makespan, wait_queue

NAME = "packing"


def run(quick: bool = False) -> list[Row]:
    """Makespan of 1-s runs with K=1 and K=n/4 runs per array task (nestling --runs_per_task)."""
    n, sleep_s = (8, 1.0) if quick else (32, 1.0)
    packs = [n // GPUS] if quick else [4, n // GPUS]
    label = f"{n} runs x {sleep_s:.0f} s on {GPUS} GPUs"
    try:
        e = cluster_env()
    except ClusterUnavailable as exc:
        return [Row(NAME, label, None, note=f"skipped: {exc}", quick=quick)]
    rows = []
    with scratch(NAME) as tmp:
        single = nestling_makespan(e, tmp, "k1", n, sleep_s, runs_per_task=1, wait_parquet=False)
        for k in packs:
            packed = nestling_makespan(e, tmp, f"k{k}", n, sleep_s, runs_per_task=k, wait_parquet=False)
            ratio_ok = single["makespan_s"] and packed["makespan_s"]
            rows.append(
                Row(NAME, f"{label}: makespan, --runs_per_task {k} vs 1", packed["makespan_s"], single["makespan_s"],
                    baseline_name="--runs_per_task 1", target="ratio < 1 (faster)",
                    met=judge(packed["makespan_s"] / single["makespan_s"], "<", 1.0) if ratio_ok else None,
                    quick=quick, note=f"{-(-n // k)} array tasks instead of {n}; ideal (work / {GPUS} GPUs) "
                    f"{n * sleep_s / GPUS:.0f} s")
            )  # fmt: skip
            single["job_ids"] += packed["job_ids"]
        wait_queue(e, single["job_ids"])  # the collector jobs, before their tree goes away
    return rows


if __name__ == "__main__":
    standalone(NAME, run)
