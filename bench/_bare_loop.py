"""The overhead baseline: the same fits as a nestling cv, in a plain Lightning loop in ONE process.

`python -m bench._bare_loop PLAN_ROOT`: reads the (fold, seed) list, hyperparameters and splits that nestling wrote
for its own cv (plan.json, splits.json), so both do exactly the same fits: same task, same hyperparameters, same
splits, same seeds, same checkpointing (best + last on the first scoring metric) and CSV logging, the way a user
would write the loop by hand. Run as a subprocess, so its imports are timed as nestling's are.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(root: str, out_dir: str) -> None:
    start = time.perf_counter()
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from nestling.core.ml.task import Split, load_task

    plan = json.loads((Path(root) / "plan.json").read_text())
    splits = [Split(**s) for s in json.loads((Path(root) / "splits.json").read_text())]
    options = plan["options"]
    task = load_task(options["data"]["task"])
    metric = options["cv"]["scoring_metric"][0]
    name, _, mode = metric.partition(":")
    imported = time.perf_counter() - start
    for logger_name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        import logging

        logging.getLogger(logger_name).setLevel(logging.WARNING)
    fits = []
    for cv in plan["cvs"]:
        hparams = cv["hparams"]
        for run in cv["runs"]:
            t0 = time.perf_counter()
            run_dir = Path(out_dir) / f"f{run['fold']}s{run['seed']}"
            L.seed_everything(run["seed"], workers=True, verbose=False)
            trainer = L.Trainer(
                max_epochs=options["training"]["max_epochs"],
                accelerator="cpu",
                devices=1,
                callbacks=[ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=name,
                                           mode="min" if mode == "lower" else "max", save_last=True)],
                logger=CSVLogger(save_dir=str(run_dir), name="logs"),
                default_root_dir=str(run_dir),
                enable_progress_bar=False,
                enable_model_summary=False,
                log_every_n_steps=1,
            )  # fmt: skip
            model = task.build_model(dict(hparams))
            datamodule = task.build_datamodule(dict(hparams), splits[run["fold"]])
            trainer.fit(model, datamodule=datamodule)
            fits.append(time.perf_counter() - t0)
    print(json.dumps({"imports_s": imported, "fits_s": fits}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
