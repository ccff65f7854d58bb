"""Adaptive search (issue 13): quality, pruning savings, draw latency and concurrent draws, with the bowl task.

Every case runs in this process (or in forked ones), with workers simulated by `testing.bowl_workers.simulate_unit`: it does
what a worker does with a unit (ask the study, draw or skip a pruned trial's run) and writes the result a real run
of the bowl task writes, whose score is a known function of the hyperparameters plus fold and run noise. So the
search is measured, not Lightning.

- quality: median over 5 tune seeds of the regret (0.95, the best true value, minus the true value of the trial
  ranked first) after 40 trials x 5 folds, TPE vs random (target: TPE <= half of random's);
- pruning: runs started and regret with --pruner successive-halving / median / wilcoxon vs none, same 40 TPE trials
  (targets: >= 40 % fewer runs, regret <= 110 % of no pruning on the median, and no worse on every seed: issue 25);
- draw latency: one draw (rebuilding the study from the tree, cold, as a fresh worker; and warm, as a worker that
  drew before) with 100 / 1,000 / 10,000 finished trials, vs `optuna.load_study` over a JournalFileBackend holding
  the same trials followed by the same ask (target: <= 0.2 s at 1,000);
- concurrency: 8 forked workers drawing at once, 40 trials: distinct configurations, exactly 40 draws;
- epochs (issue 22): pruning between epochs on the bowl task's known learning curves (tasks/bowl.py: slow starters
  near the optimum, fast starters that end worse), EPOCH_TRIALS random configurations x EPOCH_FOLDS folds, up to
  EPOCH_MAX epochs, reduction factor 3, first rung 1 epoch. The same configurations, in the same order, with no
  pruning, nestling's --pruner asha and hyperband (one simulated worker, the worker's own loop: pauses at rungs,
  promotions from the tree) and Optuna's SuccessiveHalvingPruner and HyperbandPruner driven in-process (each trial
  trains its folds epoch by epoch and reports their mean, as nestling compares a trial's folds at a rung).
  Epochs trained and regret (0.95 minus the true final value of the trial ranked first), median over 5 seeds and
  the worst seed. Goals: hyperband within 0.005 of no pruning's regret with <= 25 % of its epochs (median seed),
  and no worse than Optuna's HyperbandPruner on epochs or regret.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend

from bench._common import Row, judge, scratch, standalone

NAME = "search"
SEEDS = (0, 1, 2, 3, 4)
N_TRIALS, N_FOLDS = 40, 5


def make_tune(tmp: Path, name: str, *extra: str, n_trials: int = N_TRIALS, n_folds: int = N_FOLDS) -> Path:
    """One epoch per run unless a case says otherwise (simulated runs write each epoch's curve)."""
    from nestling.testing.bowl_workers import plan_bowl_tune

    return plan_bowl_tune(tmp, name, "--max_epochs", "1", *extra, n_trials=n_trials, n_folds=n_folds)


def run_serial(root: Path) -> list[str]:
    from nestling.plan.store import load_plan
    from nestling.plan.units import run_dirs_per_cv, work_units
    from nestling.testing.bowl_workers import simulate_unit

    plan = load_plan(root)
    return [s for unit in work_units(run_dirs_per_cv(plan), "serial") for s in simulate_unit(unit.run_dirs)]


def regret(root: Path) -> float:
    from nestling.read.collect import collect, ranked
    from nestling.tasks.bowl import OPTIMUM, true_value

    best = ranked(collect(root, write=False).cvs)[0]
    return true_value(OPTIMUM) - true_value(best.hparams)


def quality_and_pruning(tmp: Path) -> list[Row]:
    cases = {
        "random": ("--sampler", "random"),
        "tpe": ("--sampler", "tpe"),
        "tpe+successive-halving": ("--sampler", "tpe", "--pruner", "successive-halving"),
        "tpe+median": ("--sampler", "tpe", "--pruner", "median"),
        "tpe+wilcoxon": ("--sampler", "tpe", "--pruner", "wilcoxon"),
    }
    regrets: dict[str, list[float]] = {c: [] for c in cases}
    runs: dict[str, list[int]] = {c: [] for c in cases}
    for seed in SEEDS:
        for case, flags in cases.items():
            root = make_tune(tmp, f"{case.replace('+', '-')}-{seed}", *flags, "--tune_seed", str(seed))
            statuses = run_serial(root)
            runs[case].append(sum(s == "success" for s in statuses))
            regrets[case].append(regret(root))
    med = {c: statistics.median(v) for c, v in regrets.items()}
    total = {c: sum(v) for c, v in runs.items()}
    per_seed = {c: " ".join(f"{r:.3f}" for r in v) for c, v in regrets.items()}
    rows = [
        Row(NAME, f"regret, {N_TRIALS} trials x {N_FOLDS} folds: tpe vs random", med["tpe"], med["random"],
            unit="", baseline_name="random", target="ratio <= 0.5",
            met=judge(med["tpe"] / med["random"] if med["random"] else None, "<=", 0.5),
            note=f"median over tune seeds {SEEDS}; tpe {per_seed['tpe']}; random {per_seed['random']}"),
    ]  # fmt: skip
    for case in ("tpe+successive-halving", "tpe+median", "tpe+wilcoxon"):
        saved = 1 - total[case] / total["tpe"]
        rows.append(
            Row(NAME, f"runs started, {case} vs no pruning", total[case], total["tpe"], unit="runs",
                baseline_name="tpe, no pruner", target=">= 40 % fewer", met=judge(saved, ">=", 0.4),
                note=f"{saved:.0%} fewer runs over {len(SEEDS)} tunes")
        )  # fmt: skip
        rows.append(
            Row(NAME, f"regret, {case} vs no pruning", med[case], med["tpe"], unit="",
                baseline_name="tpe, no pruner", target="ratio <= 1.1",
                met=judge(med[case] / med["tpe"] if med["tpe"] else None, "<=", 1.1),
                note=f"per seed: {per_seed[case]}")
        )  # fmt: skip
        worse = [seed for seed, r, base in zip(SEEDS, regrets[case], regrets["tpe"], strict=True) if r > base + 1e-12]
        rows.append(
            Row(NAME, f"seeds with regret above no pruning's, {case}", len(worse), 0, unit="seeds",
                baseline_name="tpe, no pruner", target="0 of 5 (every seed no worse)", met=not worse,
                note=f"worse on seeds {worse}" if worse else "no worse on any seed")
        )  # fmt: skip
    return rows


PRUNERS = ("successive-halving", "median", "wilcoxon")


def pruning_on_the_same_draws(tmp: Path, fold_counts: tuple[int, ...] = (5, 10)) -> list[Row]:
    """Each pruner on the same configurations: a random tune without pruning per seed, replayed under each pruner
    (`nestling replay`, exact for a serial random tune), so the runs saved and the winner's regret differ by the
    pruning alone, not by a sampler that drew other trials after the first prune (as the TPE rows above do)."""
    from nestling.commands.replay import replay_tune
    from nestling.plan.store import load_plan
    from nestling.tasks.bowl import OPTIMUM, true_value

    rows = []
    for n_folds in fold_counts:
        saved: dict[str, list[int]] = {p: [] for p in PRUNERS}
        total: list[int] = []
        worse: dict[str, list[int]] = {p: [] for p in PRUNERS}
        per_seed: dict[str, list[str]] = {p: [] for p in PRUNERS}
        for seed in SEEDS:
            root = make_tune(tmp, f"same-{n_folds}-{seed}", "--sampler", "random", "--tune_seed", str(seed),
                             n_folds=n_folds)  # fmt: skip
            run_serial(root)
            hparams = {str(cv.cv_name): cv.hparams for cv in load_plan(root).cvs}
            base = regret(root)
            for pruner in PRUNERS:
                replayed = replay_tune(root, pruner)
                won = true_value(OPTIMUM) - true_value(hparams[str(replayed.winner)])
                saved[pruner].append(replayed.runs_saved)
                per_seed[pruner].append(f"{won:.3f}")
                if won > base + 1e-12:
                    worse[pruner].append(seed)
            total.append(replayed.runs_recorded)
        for pruner in PRUNERS:
            share = sum(saved[pruner]) / sum(total)
            rows.append(
                Row(NAME, f"runs saved, random+{pruner} vs none, same draws, {n_folds} folds", sum(saved[pruner]),
                    sum(total), unit="runs", baseline_name="runs of the unpruned tunes", target=">= 40 % fewer",
                    met=judge(share, ">=", 0.4), note=f"{share:.0%} fewer over {len(SEEDS)} tunes")
            )  # fmt: skip
            rows.append(
                Row(NAME, f"seeds with a worse winner, random+{pruner}, same draws, {n_folds} folds",
                    len(worse[pruner]), 0, unit="seeds", baseline_name="the unpruned winner",
                    target="0 of 5 (every seed no worse)", met=not worse[pruner],
                    note=f"regret per seed {' '.join(per_seed[pruner])}" + (f"; worse on {worse[pruner]}"
                                                                             if worse[pruner] else ""))
            )  # fmt: skip
    return rows


def _finished_tree(tmp: Path, n: int) -> Path:
    """A TPE tune with n finished trials (1 fold, 1 seed: one result each) and 2 not yet drawn, written directly."""
    from nestling.core.tree.naming import RUN_RESULT, TrialPaths
    from nestling.plan.store import load_plan
    from nestling.tasks.bowl import observed

    root = make_tune(tmp, f"latency-{n}", "--sampler", "tpe", "--fold_method", "none", n_trials=n + 2, n_folds=1)
    plan = load_plan(root)
    trials = TrialPaths(root)
    trials.dir.mkdir()
    rng = random.Random(n)
    for i, cv in enumerate(plan.cvs[:n]):
        params = {"lr": 10 ** rng.uniform(-5, 0), "width": rng.random(), "depth": rng.randint(1, 10)}
        trials.draw(i).write_text(json.dumps({"index": i, "params": params, "drawn_time": float(i)}))
        run = cv.runs[0]
        run.dir.mkdir(parents=True)
        result = {"status": "success", "metrics": {"val/score": observed(params, run.fold, run.seed)}}
        (run.dir / RUN_RESULT).write_text(json.dumps(result))
    from nestling.execute.search import study

    finished = study.Study.from_root(root)  # the workers that ran them left each outcome in its draw file
    assert finished is not None
    for i in range(n):
        finished.trial(i)
    study._STUDIES.clear()
    return root


def _journal(tmp: Path, root: Path, n: int) -> Any:
    """The same n trials in an Optuna journal file, as Optuna's workers on a shared disk would keep them."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from nestling.execute.search import study as nstudy
    from nestling.plan.store import load_plan

    s = nstudy.Study(load_plan(root))
    frozen = [s._frozen_trial(i) for i in range(n)]
    path = tmp / f"journal-{n}.log"
    memory = _MemoryJournal()  # the log built in memory, then appended in one write: 10,000 locked appends would
    storage = JournalStorage(memory)  # time the bench's setup, not what is measured
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    created = optuna.create_study(storage=storage, study_name="bench", direction="maximize")
    created.add_trials([f for f in frozen if f is not None])
    JournalFileBackend(str(path)).append_logs(memory.logs)
    return path, s.space


class _MemoryJournal(BaseJournalBackend):
    """An Optuna journal backend in a list (BaseJournalBackend's two methods)."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        return self.logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.logs.extend(logs)


def draw_latency(tmp: Path, sizes: list[int]) -> list[Row]:
    import warnings

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from nestling.core.tree import failfast
    from nestling.execute.search import study
    from nestling.plan.store import load_plan

    rows = []
    for n in sizes:
        root = _finished_tree(tmp, n)
        plan = load_plan(root)
        first, second = plan.cvs[n].runs[0].dir, plan.cvs[n + 1].runs[0].dir
        study._STUDIES.clear()
        t0 = time.perf_counter()
        study.before_run(first, failfast.plan_root(first))  # a fresh worker: plan, every trial, the TPE draw
        cold = time.perf_counter() - t0
        from nestling.testing.bowl_workers import simulate

        simulate(first)
        t0 = time.perf_counter()
        study.before_run(second, failfast.plan_root(second))  # the same worker, one more trial finished
        warm = time.perf_counter() - t0
        journal, space = _journal(tmp, root, n)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = optuna.load_study(
                study_name="bench",
                storage=JournalStorage(JournalFileBackend(str(journal))),
                sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, constant_liar=True),
            )
            loaded.ask(dict(space))
        baseline = time.perf_counter() - t0
        rows.append(
            Row(NAME, f"draw with {n:,} finished trials (fresh worker)", cold, baseline,
                baseline_name="optuna.load_study(JournalFileBackend) + ask",
                target="<= 0.2 s" if n == 1_000 else "", met=judge(cold, "<=", 0.2) if n == 1_000 else None,
                note="plan.json and every draw file read (a finished trial keeps its outcome there), study rebuilt, TPE ask, draw written")
        )  # fmt: skip
        rows.append(
            Row(NAME, f"draw with {n:,} finished trials (warm worker)", warm, baseline,
                baseline_name="optuna.load_study(JournalFileBackend) + ask",
                note="finished trials cached in the process: only new draws and results are read")
        )  # fmt: skip
    return rows


def _worker(units: list[list[str]]) -> int:
    from nestling.execute.search import study
    from nestling.testing.bowl_workers import simulate_unit

    study._STUDIES.clear()
    for unit in units:
        simulate_unit(unit)
    return os.getpid()


def concurrency(tmp: Path, n_workers: int = 8, n_trials: int = N_TRIALS) -> list[Row]:
    """Workers pull cvs from one queue (as the local pool hands out tune-parallel units), all start at once."""
    from nestling.core.tree.naming import TrialPaths
    from nestling.plan.store import load_plan
    from nestling.plan.units import run_dirs_per_cv

    root = make_tune(tmp, "concurrent", "--sampler", "tpe", n_trials=n_trials, n_folds=2)
    per_cv = run_dirs_per_cv(load_plan(root))
    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    with ctx.Pool(n_workers) as pool:
        pool.map(_worker, [[cv] for cv in per_cv], chunksize=1)
    took = time.perf_counter() - t0
    files = sorted(TrialPaths(root).dir.glob("*.json"))
    params = [json.dumps(json.loads(p.read_text())["params"], sort_keys=True) for p in files]
    duplicates = len(params) - len(set(params))
    ok = len(files) == n_trials and duplicates == 0
    return [
        Row(NAME, f"{n_workers} workers drawing {n_trials} trials at once", float(duplicates), unit="duplicates",
            target="0 duplicates, exactly N draws", met=ok,
            note=f"{len(files)} draws for {n_trials} trials; {took:.1f} s with simulated runs")
    ]  # fmt: skip


EPOCH_TRIALS, EPOCH_FOLDS, EPOCH_MAX, EPOCH_ETA = 81, 3, 81, 3
EPOCH_CASES = ("none", "asha", "hyperband", "optuna-sh", "optuna-hyperband")


def _nestling_epochs(tmp: Path, pruner: str, seed: int, n_trials: int, max_epochs: int) -> tuple[int, float, list[dict[str, Any]]]:
    """(epochs trained, regret, configurations in trial order) of one simulated serial tune."""
    from nestling.core.tree.naming import TrialPaths
    from nestling.execute.search import rungs
    from nestling.plan.store import load_plan
    from nestling.testing import bowl_workers

    root = make_tune(tmp, f"epochs-{pruner}-{seed}", "--sampler", "random", "--pruner", pruner, "--tune_seed",
                     str(seed), "--max_epochs", str(max_epochs), "--reduction_factor", str(EPOCH_ETA),
                     "--min_epochs", "1", n_trials=n_trials, n_folds=EPOCH_FOLDS)  # fmt: skip
    rungs._BOARDS.clear()
    bowl_workers.EPOCHS_TRAINED.clear()
    run_serial(root)
    bowl_workers.finish()
    counts = bowl_workers.EPOCHS_TRAINED
    if counts and max(counts.values()) > 1:
        raise AssertionError(f"{pruner}: an epoch was trained twice ({max(counts.values())} times)")
    assert not list(TrialPaths(root).dir.glob("*.rung*")) or pruner != "none"
    configs = [dict(cv.hparams) for cv in load_plan(root).cvs]
    return sum(counts.values()), regret(root), configs


def _optuna_epochs(configs: list[dict[str, Any]], pruner: Any, seed: int, max_epochs: int) -> tuple[int, float]:
    """Optuna driving the same configurations over the same curves: each trial reports the mean over its folds
    after every epoch and stops when the pruner says so. (epochs trained, regret of study.best_trial)."""
    import optuna

    from nestling.tasks.bowl import OPTIMUM, observed_at, true_value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal epochs
        params = configs[trial.number]
        value = 0.0
        for epoch in range(1, max_epochs + 1):
            epochs += EPOCH_FOLDS
            value = statistics.fmean(
                observed_at(params, fold, 42, epoch, max_epochs) for fold in range(EPOCH_FOLDS)
            )
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    # A fixed study name: HyperbandPruner puts a trial in its bracket by a hash of the study's name and the trial
    # number, so an unnamed (random) study would move trials between brackets from one run to the next.
    study = optuna.create_study(study_name=f"bench-epochs-{seed}", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed), pruner=pruner)  # fmt: skip
    study.optimize(objective, n_trials=len(configs))
    best = configs[study.best_trial.number]
    return epochs, true_value(OPTIMUM) - true_value(best)


def epoch_pruning(tmp: Path, quick: bool = False) -> list[Row]:
    import optuna

    n_trials, max_epochs = (27, 27) if quick else (EPOCH_TRIALS, EPOCH_MAX)
    epochs: dict[str, list[int]] = {c: [] for c in EPOCH_CASES}
    regrets: dict[str, list[float]] = {c: [] for c in EPOCH_CASES}
    for seed in SEEDS:
        configs: list[dict[str, Any]] = []
        for pruner in ("none", "asha", "hyperband"):
            e, r, configs = _nestling_epochs(tmp, pruner, seed, n_trials, max_epochs)
            epochs[pruner].append(e)
            regrets[pruner].append(r)
        for case, optuna_pruner in (
            ("optuna-sh", optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=EPOCH_ETA)),
            ("optuna-hyperband", optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs,
                                                                reduction_factor=EPOCH_ETA)),
        ):  # fmt: skip
            e, r = _optuna_epochs(configs, optuna_pruner, seed, max_epochs)
            epochs[case].append(e)
            regrets[case].append(r)
    med_e = {c: statistics.median(v) for c, v in epochs.items()}
    med_r = {c: statistics.median(v) for c, v in regrets.items()}
    worst_r = {c: max(v) for c, v in regrets.items()}
    worst_e = {c: max(v) for c, v in epochs.items()}
    per_seed = {c: " ".join(f"{r:.3f}" for r in regrets[c]) for c in EPOCH_CASES}
    per_seed_e = {c: " ".join(str(e) for e in epochs[c]) for c in EPOCH_CASES}
    setup = f"{n_trials} trials x {EPOCH_FOLDS} folds, <= {max_epochs} epochs, eta {EPOCH_ETA}"
    rows = []
    for mine, theirs, name, share in (("hyperband", "optuna-hyperband", "HyperbandPruner", 0.25),
                                      ("asha", "optuna-sh", "SuccessiveHalvingPruner", 0.5)):  # fmt: skip
        ratio = med_e[mine] / med_e["none"]
        rows += [
            Row(NAME, f"epochs trained, {mine} vs no pruning ({setup}; median seed)", med_e[mine], med_e["none"],
                unit="epochs", baseline_name="no pruning", target=f"ratio <= {share}", met=judge(ratio, "<=", share),
                note=f"per seed: {per_seed_e[mine]} vs {per_seed_e['none']}; worst seed {worst_e[mine]}"),
            Row(NAME, f"regret, {mine} vs no pruning (median seed)", med_r[mine], med_r["none"], unit="",
                baseline_name="no pruning", target="within 0.005",
                met=judge(med_r[mine] - med_r["none"], "<=", 0.005),
                note=f"per seed: {per_seed[mine]} vs {per_seed['none']}"),
            Row(NAME, f"regret, {mine} vs no pruning (worst seed)", worst_r[mine], worst_r["none"], unit="",
                baseline_name="no pruning"),
            Row(NAME, f"epochs trained, {mine} vs Optuna's {name} (median seed)", med_e[mine], med_e[theirs],
                unit="epochs", baseline_name=f"optuna {name}", target="ratio <= 1",
                met=judge(med_e[mine] / med_e[theirs], "<=", 1.0),
                note=f"optuna per seed: {per_seed_e[theirs]}; worst seed {worst_e[theirs]}"),
            Row(NAME, f"regret, {mine} vs Optuna's {name} (median seed)", med_r[mine], med_r[theirs], unit="",
                baseline_name=f"optuna {name}", target="<= optuna's", met=judge(med_r[mine] - med_r[theirs], "<=", 0.0),
                note=f"optuna per seed: {per_seed[theirs]}; worst seed: {worst_r[mine]:.3f} vs {worst_r[theirs]:.3f}"),
        ]  # fmt: skip
    return rows


def run(quick: bool = False) -> list[Row]:
    """Adaptive search with simulated workers: regret, pruning savings, draw latency, concurrent draws, and
    pruning between epochs against Optuna's pruners."""
    rows: list[Row] = []
    with scratch(NAME) as tmp:
        rows += quality_and_pruning(tmp)
        rows += pruning_on_the_same_draws(tmp, (5,) if quick else (5, 10))
        rows += draw_latency(tmp, [100, 1_000] if quick else [100, 1_000, 10_000])
        rows += concurrency(tmp)
        rows += epoch_pruning(tmp, quick)
    return rows


if __name__ == "__main__":
    standalone(NAME, run)
