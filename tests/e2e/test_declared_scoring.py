"""A task that logs only val/acc and declares it: a cv without --scoring_metric trains and is scored on val/acc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl

from nestling.core.tree import naming

TASK = '''
from nestling.tasks.sleep import SleepTask, _datamodule


class AccTask(SleepTask):
    def scoring_metrics(self):
        return ["val/acc"]

    def build_model(self, hparams):
        import lightning
        import torch

        value = float({**self.default_hparams(), **hparams}["value"])

        class AccModule(lightning.LightningModule):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(1, 1)

            def training_step(self, batch, batch_idx):
                x, y = batch
                return torch.nn.functional.mse_loss(self.linear(x), y)

            def validation_step(self, batch, batch_idx):
                self.log("val/acc", value, on_step=False, on_epoch=True, batch_size=len(batch[0]))

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.01)

        return AccModule()

    def build_datamodule(self, hparams, split):
        return _datamodule(split, "")
'''


def test_cv_is_scored_on_the_metric_the_task_declares(tmp_path: Path) -> None:
    (tmp_path / "acc_task.py").write_text(TASK)
    art = tmp_path / "art"
    env = {**os.environ, "WANDB_MODE": "offline"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-m", "nestling.cli", "cv", "--task", "acc_task:AccTask", "--hp", "value=0.5",
         "--n_folds", "2", "--n_seeds", "1", "--max_epochs", "1", "--accelerator", "cpu", "--quiet",
         "--artifact_dir", str(art), "--name", "acc"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pl.read_parquet(naming.top_dir(art, "cv", "acc") / naming.RUN_INFOS)
    assert table["status"].to_list() == ["success", "success"]
    assert table["run_score"].to_list() == [0.5, 0.5]
    assert table["score"].unique().to_list() == [0.5]
    assert "val/JaccardIndex" not in table.columns
