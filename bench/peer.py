"""Per run, against the peer script (issue 21): the same small tune by nestling and by a plain Optuna + Lightning
script a careful user would write, in the same run on the same machine.

The tune: TPE over bench/_digits.py's space (lr, width, dropout of a small MLP on scikit-learn's 8x8 digits), each
trial a stratified 5-fold cv of 5-epoch fits, the best retrained on every non-test sample and tested on the 20 %
held out. nestling: `nestling tune --sampler tpe --retrain` with one local worker (`--devices 1`), as a laptop user
runs it. The peer: bench/_peer_script.py (Optuna's TPESampler, Lightning's default checkpointing and a CSVLogger per
fit, the retrain and test at the end). Both are timed as whole processes, imports included, in pairs run back to
back; the ratio is the median over the pairs of nestling's wall / the peer's (the load of a shared machine drifts
between pairs: a best-of-N of each side compared the quietest minute of one with that of the other), and the
table's two walls are the medians. Both run torch with one thread
(OMP_NUM_THREADS=1, MKL_NUM_THREADS=1): a 64-feature MLP gains nothing from more, and on a shared machine idle
OpenMP threads spinning for cores other processes hold made both sides' times (and CPU times) swing by 5x. Cases: no pruning (target: nestling <= 1.10x
the peer), and the median pruner on both sides (nestling's between folds, after 3 complete trials; Optuna's
MedianPruner with its defaults, fed the running cv mean after each fold; target: nestling faster).
"""

from __future__ import annotations

import json
import resource
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench._common import PYTHON, Row, env, judge, nestling_cmd, scratch, standalone, timed, write_space
from bench._digits import SPACE

NAME = "peer"
FOLDS = 5


def _sizes(quick: bool) -> tuple[int, int, int]:
    """(trials, epochs, repeats)."""
    return (6, 3, 1) if quick else (12, 5, 5)


def _nestling(tmp: Path, name: str, trials: int, epochs: int, pruner: str) -> tuple[float, dict[str, Any]]:
    space = write_space(tmp / "space.toml", **SPACE)
    args = ["tune", "--task", "bench._digits:TASK", "--hpconfig", str(space), "--sampler", "tpe", "--pruner", pruner,
            "--n_trials", str(trials), "--n_folds", str(FOLDS), "--n_seeds", "1", "--fold_method", "stratified",
            "--max_epochs", str(epochs), "--test_split", "random", "--retrain", "--accelerator", "cpu",
            "--devices", "1", "--artifact_dir", str(tmp), "--name", name, "--quiet"]  # fmt: skip
    wall, _, cpu = _timed_cpu(nestling_cmd(*args))
    return wall, {**_tree_facts(tmp / name), "cpu_s": cpu}


def _tree_facts(tune: Path) -> dict[str, Any]:
    import polars as pl

    runs = pl.read_parquet(tune / "run_infos.parquet")
    final = pl.read_parquet(tune / f"{tune.name}-final" / "final_infos.parquet")
    return {
        "fits": int((runs["status"] == "success").sum()) + 1,
        "pruned": int(pl.read_parquet(tune / "tune_infos.parquet")["state"].eq("pruned").sum()),
        "test_acc": float(final.filter(pl.col("row") == "mean")["test/acc"][0]),
    }


def _peer(tmp: Path, trials: int, epochs: int, pruner: str) -> tuple[float, dict[str, Any]]:
    cmd = [PYTHON, "-m", "bench._peer_script", str(tmp / "peer"), "--trials", str(trials), "--folds", str(FOLDS),
           "--epochs", str(epochs), "--pruner", pruner]  # fmt: skip
    wall, out, cpu = _timed_cpu(cmd)
    return wall, {**json.loads(out.strip().splitlines()[-1]), "cpu_s": cpu}


def _timed_cpu(cmd: Sequence[str]) -> tuple[float, str, float]:
    """Wall time, stdout, and the CPU seconds (user + system) of the process and every child it waited for: on a
    shared machine the CPU time is the steadier measure of what each side does, the wall time what a user waits."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, out = timed(cmd, env=env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, out, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(quick: bool = False) -> list[Row]:
    """The same TPE tune (5-fold cv per trial, retrain + test) by nestling and by a plain Optuna + Lightning script."""
    trials, epochs, repeats = _sizes(quick)
    rows = []
    for pruner, target, op, limit in (("none", "ratio <= 1.10", "<=", 1.10), ("median", "ratio < 1", "<", 1.0)):
        ours: list[tuple[float, dict[str, Any]]] = []
        theirs: list[tuple[float, dict[str, Any]]] = []
        for i in range(repeats):
            with scratch(NAME) as tmp:  # alternate, so that a load change hits both sides alike
                theirs.append(_peer(tmp, trials, epochs, pruner))
                ours.append(_nestling(tmp, f"t{i}", trials, epochs, pruner))
        ratio = statistics.median(a / b for (a, _), (b, _) in zip(ours, theirs, strict=True))
        wall, peer_wall = statistics.median(w for w, _ in ours), statistics.median(w for w, _ in theirs)
        facts, peer_facts = ours[0][1], theirs[0][1]
        label = "no pruning" if pruner == "none" else "median pruner"
        rows.append(Row(
            NAME, f"TPE {trials} trials x {FOLDS} folds x {epochs} epochs + retrain/test, {label}", wall, peer_wall,
            baseline_name="Optuna + Lightning script", target=target, met=judge(ratio, op, limit), ratio=ratio,
            quick=quick,
            note=f"{repeats} pairs: nestling {facts['fits']} fits ({facts['pruned']} trials pruned), test acc "
                 f"{facts['test_acc']:.3f}; peer {peer_facts['fits']} fits ({peer_facts['pruned']} pruned), test acc "
                 f"{peer_facts['test_acc']:.3f}; walls: nestling {_seconds(w for w, _ in ours)} s, "
                 f"peer {_seconds(w for w, _ in theirs)} s; CPU: nestling "
                 f"{_seconds(f['cpu_s'] for _, f in ours)} s, peer {_seconds(f['cpu_s'] for _, f in theirs)} s",
        ))  # fmt: skip
    rows.append(_per_run(10 if quick else 20, quick))
    return rows


def _per_run(n: int, quick: bool) -> Row:
    """A tune's run, the peer's fit and a cv's run, alternating in one process (bench/_per_run.py)."""
    with scratch(NAME) as tmp:
        _, out = timed([PYTHON, "-m", "bench._per_run", str(tmp), str(n)],
                       env=env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))  # fmt: skip
    per = json.loads(out.strip().splitlines()[-1])
    return Row(
        NAME, "per run, one process, alternating: a tune's run vs the peer's fit of the same split", per["tune_run"],
        per["peer_fit"], baseline_name="peer's fit", target="ratio <= 1.10",
        met=judge(per["tune_run"] / per["peer_fit"], "<=", 1.10), quick=quick,
        note=f"medians of {per['n'] - 1} runs each; a cv's run (tested on best.ckpt, best.ckpt kept: what every tune "
             f"run did before issue 21) {per['cv_run']:.3f} s = {per['cv_run'] / per['peer_fit']:.2f}x the peer's fit",
    )  # fmt: skip


def _seconds(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    standalone(NAME, run)
