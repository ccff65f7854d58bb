"""Short runs: how many Python + torch start-ups a sweep of 1-s runs pays, and what that costs in makespan.

1-s runs of the sleep task on the local cluster's 4 fake GPUs, one array task per run. Baseline: `--steal false`,
every task starts its own worker (one start-up per run). nestling's default: a task that finished its run takes
over runs whose tasks still wait (one start-up per running task). Also `--runs_per_task K --steal false`: K runs
packed into each task up front. Figure: makespan (submission to the last run_result.json), ratio against the
baseline.
"""

from __future__ import annotations

from bench._common import ClusterUnavailable, Row, cluster_env, judge, scratch, standalone
from bench.makespan import GPUS, nestling_makespan, wait_queue

NAME = "packing"


def run(quick: bool = False) -> list[Row]:
    """Makespan of 1-s runs: one start-up per run (--steal false) against taking over (default) and packing."""
    n, sleep_s = (4, 1.0) if quick else (32, 1.0)
    # quick: at most 2 tasks at once, so that 4 runs still leave tasks waiting to be taken over
    limit = ("--array_parallelism", "2") if quick else ()
    variants = [("taking over waiting runs (default)", limit)]
    if not quick:
        variants.append((f"--runs_per_task {n // GPUS} --steal false", ("--runs_per_task", str(n // GPUS),
                                                                          "--steal", "false")))  # fmt: skip
    label = f"{n} runs x {sleep_s:.0f} s on {2 if quick else GPUS} GPUs"
    try:
        e = cluster_env()
    except ClusterUnavailable as exc:
        return [Row(NAME, label, None, note=f"skipped: {exc}", quick=quick)]
    rows = []
    with scratch(NAME) as tmp:
        single = nestling_makespan(
            e, tmp, "k1", n, sleep_s, extra=("--steal", "false", *limit), wait_parquet=False
        )
        for i, (who, extra) in enumerate(variants):
            fig = nestling_makespan(e, tmp, f"v{i}", n, sleep_s, extra=extra, wait_parquet=False)
            ok = single["makespan_s"] and fig["makespan_s"]
            rows.append(
                Row(NAME, f"{label}: makespan, {who}", fig["makespan_s"], single["makespan_s"],
                    baseline_name="--steal false", target="ratio < 1 (faster)",
                    met=judge(fig["makespan_s"] / single["makespan_s"], "<", 1.0) if ok else None, quick=quick,
                    note=f"worker processes: {fig['processes']} (baseline {single['processes']}); ideal "
                    f"(work / GPUs) {n * sleep_s / (2 if quick else GPUS):.0f} s")
            )  # fmt: skip
            single["job_ids"] += fig["job_ids"]
        wait_queue(e, single["job_ids"])  # the collector jobs, before their tree goes away
    return rows


if __name__ == "__main__":
    standalone(NAME, run)
