"""Per run, in one process: a nestling run against the peer script's fit of the same split, alternating.

`python -m bench._per_run TMP_DIR N` plans a tune (one trial) and a cv of bench/_digits.py (5 folds x N/5 seeds,
5 epochs, stratified, a random test split) and runs, for each of their runs in turn: nestling's worker on the tune's
run, the peer's fit (bench/_peer_script.py's Trainer: default checkpointing, a CSVLogger), nestling's worker on the
cv's run. Alternating in one warm process cancels the load drift of a shared machine that makes whole-process
timings swing. A tune's run only selects (no test pass, no best.ckpt); a cv's run tests and keeps best.ckpt, as
every tune run did before issue 21. Prints one JSON line of medians (first run of each left out: warm-up).
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from bench._common import write_space
from bench._digits import DEFAULTS, build_module, loaders
from nestling.core.options.config import parse_config
from nestling.execute.startup import quiet_lightning
from nestling.execute.worker import run_dirs
from nestling.plan.preflight import prepare
from nestling.plan.store import write_plan


def main(tmp: str, n: int) -> None:
    quiet_lightning()
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "nestling"):
        logging.getLogger(name).setLevel(logging.ERROR)
    root = Path(tmp)
    space = write_space(root / "space.toml", **DEFAULTS)  # the tune's one trial: the cv's (default) hyperparameters
    common = ["--task", "bench._digits:TASK", "--n_folds", "5", "--n_seeds", str(max(1, n // 5)), "--fold_method",
              "stratified", "--max_epochs", "5", "--test_split", "random", "--accelerator", "cpu", "--devices", "1",
              "--artifact_dir", str(root)]  # fmt: skip
    plans = {}
    for kind, extra in (("tune", ["--hpconfig", str(space), "--n_trials", "1", "--name", "t"]), ("cv", ["--name", "c"])):
        prepared = prepare(parse_config([*common, *extra]), kind)
        write_plan(prepared.plan, prepared.splits)
        plans[kind] = prepared.plan
    splits = json.loads((plans["cv"].root / "splits.json").read_text())
    hparams = plans["cv"].cvs[0].hparams

    def peer_fit(i: int, fold: int) -> None:
        where = root / "peer" / str(i)
        trainer = L.Trainer(max_epochs=5, accelerator="cpu", devices=1, logger=CSVLogger(where),
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=where)  # fmt: skip
        split = splits[fold]
        train, val, _ = loaders([int(s[1:]) for s in split["train"]], [int(s[1:]) for s in split["val"]], [], 64)
        L.seed_everything(42, workers=True, verbose=False)
        trainer.fit(build_module(hparams), train_dataloaders=train, val_dataloaders=val)

    times: dict[str, list[float]] = {"tune_run": [], "peer_fit": [], "cv_run": []}

    def timed(key: str, clock: float) -> None:
        times[key].append(time.perf_counter() - clock)

    for i, (tuned, cv_run) in enumerate(zip(plans["tune"].runs, plans["cv"].runs, strict=True)):
        clock = time.perf_counter()
        run_dirs([str(tuned.dir)])
        timed("tune_run", clock)
        clock = time.perf_counter()
        peer_fit(i, cv_run.fold)
        timed("peer_fit", clock)
        clock = time.perf_counter()
        run_dirs([str(cv_run.dir)])
        timed("cv_run", clock)
    print(json.dumps({key: statistics.median(values[1:]) for key, values in times.items()} | {"n": len(times["cv_run"])}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
