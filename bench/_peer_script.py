"""The peer of `nestling tune --sampler tpe --retrain`: the plain Optuna + Lightning script a careful user writes.

`python -m bench._peer_script OUT_DIR --trials N --folds K --epochs E [--pruner none|median] [--seed S]`

TPE over bench/_digits.py's space; each trial is a stratified K-fold cv (one fit per fold, Lightning's default
checkpointing: one checkpoint at every epoch end, and a CSVLogger per fit), scored by the mean of the folds' last
val/acc; with `--pruner median` Optuna's MedianPruner (its defaults) sees the running mean after each fold. Then
the best configuration is retrained on every non-test sample for E epochs and tested. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    start = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--pruner", choices=("none", "median"), default="none")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import logging
    import warnings

    import lightning as L
    import optuna
    from lightning.pytorch.loggers import CSVLogger
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from bench._digits import N_SAMPLES, SPACE, build_module, labels, loaders

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out)
    y = labels()
    train_ids, test_ids = train_test_split(list(range(N_SAMPLES)), test_size=0.2, random_state=42, stratify=y)
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=42).split(train_ids, [y[i] for i in train_ids]))
    fits = 0

    def fit(hparams: dict[str, float], train: list[int], val: list[int], where: Path) -> L.Trainer:
        nonlocal fits
        fits += 1
        trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=CSVLogger(where),
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=where,
                            limit_val_batches=None if val else 0)  # fmt: skip
        train_loader, val_loader, _ = loaders(train, val, [], 64)
        trainer.fit(build_module(hparams), train_dataloaders=train_loader, val_dataloaders=val_loader)
        return trainer

    def objective(trial: optuna.Trial) -> float:
        hp = {
            "lr": trial.suggest_float("lr", SPACE["lr"]["low"], SPACE["lr"]["high"], log=True),
            "width": trial.suggest_int("width", SPACE["width"]["low"], SPACE["width"]["high"]),
            "dropout": trial.suggest_float("dropout", SPACE["dropout"]["low"], SPACE["dropout"]["high"]),
        }
        L.seed_everything(42, workers=True, verbose=False)
        scores: list[float] = []
        for k, (tr, va) in enumerate(folds):
            trainer = fit(hp, [train_ids[i] for i in tr], [train_ids[i] for i in va], out / f"t{trial.number}" / f"f{k}")
            scores.append(float(trainer.callback_metrics["val/acc"]))
            trial.report(statistics.mean(scores), k + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return statistics.mean(scores)

    pruner = optuna.pruners.MedianPruner() if args.pruner == "median" else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=pruner)  # fmt: skip
    tuned = time.perf_counter()
    study.optimize(objective, n_trials=args.trials)
    tuned = time.perf_counter() - tuned
    L.seed_everything(42, workers=True, verbose=False)
    final = fit(study.best_params, train_ids, [], out / "final")
    _, _, test_loader = loaders([], [], test_ids, 64)
    tested = final.test(final.lightning_module, dataloaders=test_loader, verbose=False)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    print(json.dumps({"fits": fits, "pruned": pruned, "best": study.best_value, "test_acc": tested[0]["test/acc"],
                      "tune_s": tuned, "total_s": time.perf_counter() - start}))  # fmt: skip


if __name__ == "__main__":
    main()
