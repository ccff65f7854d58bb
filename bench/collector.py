"""Collector: N synthetic run_result.json files -> parquet with `nestling.read.collect.collect`, N = 1k / 10k / 100k.

The tree is a fake tune written by hand in nestling's on-disk format (plan.json + one run_result.json per run, 10 runs
per cv: 5 folds x 2 seeds, 5 % of runs failed), so no training is needed. Timed in-process around `collect(root)`
(module already imported; the files are in the page cache, as they are right after a tune ends). The baseline is
the floor any collector pays: json.loads of every result file, one polars DataFrame of all rows, one parquet write.

Two collects are timed (issue 15 #5): from scratch (no table exists: every cv's run_infos.parquet and its stamp are
written), and the final collect of a tune whose workers each wrote their cv's table when its last run ended
(cvtable.collect_finished_cv, called here for every cv before the clock starts, as the workers would have): it reads
every result, finds every cv table fresh and writes the two tune tables.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from bench._common import Row, judge, scratch, standalone

NAME = "collector"
RUNS_PER_CV = 10  # 5 folds x 2 seeds
METRICS = ("val/loss", "val/JaccardIndex", "val/Recall", "val/Precision", "val/F1Score", "train/loss")


def make_tree(root: Path, n_runs: int, name: str = "bench") -> Path:
    """A tune of n_runs / 10 cvs in nestling's layout, every run with a result. Returns the tune dir."""
    from nestling.core.options.config import Config

    rng = random.Random(n_runs)
    tune = root / name
    tune.mkdir(parents=True)
    cvs = []
    per_cv = RUNS_PER_CV
    for h in range(max(1, n_runs // per_cv)):
        cv_name = cv_rel = f"{name}-cv{h}"
        hparams = {"sleep_s": 0.0, "value": round(rng.random(), 4), "lr": 0.01, "fail_if_val_contains": ""}
        (tune / cv_rel).mkdir()
        runs = []
        for k in range(per_cv):
            fold, seed = (k // 2) % 5, (42, 21)[k % 2] + 1000 * (k // 10)
            run_name = f"{cv_name}-run-f{fold}s{seed}"
            run_id = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
            rel = f"{cv_name}/{run_name}-{run_id}"
            run_dir = tune / rel
            run_dir.mkdir()
            failed = rng.random() < 0.05
            result = {
                "run_name": run_name, "run_id": run_id, "cv_name": cv_name, "tune_name": name, "fold": fold,
                "seed": seed, "hparams": hparams, "status": "failed" if failed else "success",
                "error": "RuntimeError: injected" if failed else None,
                "metrics": {} if failed else {m: rng.random() for m in METRICS},
                "checkpoint": None if failed else str(run_dir / "checkpoints" / "best.ckpt"),
                "duration": round(rng.uniform(5, 50), 3), "started_at": "2026-01-01T00:00:00Z",
                "finished_at": "2026-01-01T00:00:30Z", "host": "node1", "pid": 1234, "cuda_visible_devices": "0",
                "slurm_job_id": "17", "slurm_array_task_id": str(h * per_cv + k), "world_size": 1, "attempt": 1,
                "in_container": False, "nestling_version": "0.1.0",
            }  # fmt: skip
            (run_dir / "run_result.json").write_text(json.dumps(result, indent=1))
            runs.append({"run_name": run_name, "run_id": run_id, "fold": fold, "seed": seed, "dir": rel})
        cvs.append(
            {
                "cv_name": cv_name,
                "hp_index": h,
                "hparams": hparams,
                "dir": cv_rel,
                "runs": runs,
            }
        )
    options = Config().to_dict()
    options["data"]["task"] = "sleep"
    options["cv"]["scoring_metric"] = ["val/JaccardIndex", "val/Recall"]  # preflight plans the effective metrics
    plan = {"kind": "tune", "name": name, "n_folds": 5, "options": options, "cvs": cvs}
    (tune / "plan.json").write_text(json.dumps(plan, indent=1))
    return tune


def one_cv_view(tune: Path, dest: Path) -> Path:
    """A cv plan (dest/plan.json) whose runs are every run of `tune`: no new result files to write."""
    plan = json.loads((tune / "plan.json").read_text())
    runs = [{**r, "dir": f"../{tune.name}/{r['dir']}"} for cv in plan["cvs"] for r in cv["runs"]]
    cv = {
        "cv_name": "one-cv",
        "hp_index": None,
        "hparams": plan["cvs"][0]["hparams"],
        "dir": ".",
        "runs": runs,
    }
    dest.mkdir()
    (dest / "plan.json").write_text(json.dumps({**plan, "kind": "cv", "name": "one-cv", "cvs": [cv]}))
    return dest


def bare_collect(root: Path, out: Path) -> float:
    """The floor: read every result, one DataFrame, one parquet file."""
    import polars as pl

    start = time.perf_counter()
    rows = []
    for path in [*root.glob("*/run_result.json"), *root.glob("*/*/run_result.json")]:
        r = json.loads(path.read_bytes())
        metrics = r.pop("metrics") or {}
        r.pop("hparams", None)
        rows.append({**r, **metrics})
    pl.DataFrame(rows, infer_schema_length=None).write_parquet(out)
    return time.perf_counter() - start


def run(quick: bool = False) -> list[Row]:
    """collect() of 1k / 10k / 100k run results (tune of 10-run cvs) vs a bare json -> parquet loop."""
    from nestling.execute.cv_table import collect_finished_cv
    from nestling.read.collect import collect

    rows: list[Row] = []
    per_run: dict[int, float] = {}
    for n in [1_000, 10_000] if quick else [1_000, 10_000, 100_000]:
        with scratch(NAME) as tmp:
            tune = make_tree(tmp, n)
            start = time.perf_counter()
            collected = collect(tune)
            took = time.perf_counter() - start
            assert collected.counts["success"] + collected.counts["failed"] == n, collected.counts
            bare = bare_collect(tune, tmp / "bare.parquet")
            final = None
            if n <= 10_000:  # a fresh tree whose workers wrote each cv's table as its last run ended
                spread = make_tree(tmp / "spread", n)
                for cv in sorted(p for p in spread.iterdir() if p.is_dir()):
                    collect_finished_cv(spread, next(p for p in cv.iterdir() if p.is_dir()))
                start = time.perf_counter()
                again = collect(spread)
                final = time.perf_counter() - start
                assert again.counts["success"] + again.counts["failed"] == n
            if n == 10_000:  # the same 10,000 results seen as ONE cv: one parquet file instead of 1,000
                view = one_cv_view(tune, tmp / "one-cv")
                start = time.perf_counter()
                collect(view)
                one_cv = time.perf_counter() - start
        per_run[n] = took / n
        rows.append(
            Row(NAME, f"{n:,} results ({n // RUNS_PER_CV:,} cvs), from scratch", took, bare,
                baseline_name="bare json->parquet", quick=quick,
                note=f"{took / n * 1e6:.0f} us per run; writes {n // RUNS_PER_CV + 2} parquet files "
                     f"(+ {n // RUNS_PER_CV} stamps)")
        )  # fmt: skip
        if final is not None:
            rows.append(
                Row(NAME, f"{n:,} results ({n // RUNS_PER_CV:,} cvs), final collect (cv tables by workers)", final,
                    bare, baseline_name="bare json->parquet", target="< 1 s" if n == 10_000 else "",
                    met=judge(final, "<", 1.0) if n == 10_000 else None, quick=quick,
                    note="every cv table already written when its last run ended: reads every result, checks "
                         "the stamps, writes the 2 tune tables")
            )  # fmt: skip
        if n == 10_000:
            rows.append(
                Row(NAME, f"{n:,} results (one cv)", one_cv, bare, baseline_name="bare json->parquet",
                    target="< 1 s", met=judge(one_cv, "<", 1.0), quick=quick,
                    note="the same files as one cv: one run_infos.parquet, without the per-file cost of 1,000")
            )  # fmt: skip
    biggest = max(per_run)
    if biggest > 1_000:
        growth = per_run[biggest] / per_run[1_000]
        rows.append(
            Row(NAME, f"linearity: time per run at {biggest:,} / at 1,000", growth, None, unit="x",
                target="<= 1.5 (linear)", met=judge(growth, "<=", 1.5), quick=quick)
        )  # fmt: skip
    return rows


if __name__ == "__main__":
    standalone(NAME, run)
