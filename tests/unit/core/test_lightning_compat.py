"""The Lightning internals behind lightning_compat, read from a real Trainer while it fits (sleep task, CPU)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest

from nestling.core.compat import lightning_internals as lightning_compat
from nestling.core.ml.task import Split
from nestling.tasks.sleep import SleepTask

pytestmark = pytest.mark.min_versions  # the Lightning internals, as the lowest accepted Lightning has them

def test_the_fenced_internals_answer_during_a_real_fit() -> None:
    import lightning

    seen: dict[str, Any] = {}

    class Probe(lightning.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            seen["epoch_start"] = lightning_compat.in_epoch_batches(trainer)

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx == 0:
                seen["in_batches"] = lightning_compat.in_epoch_batches(trainer)
                seen["loaders"] = lightning_compat.train_dataloaders(trainer)
                seen["checkpoint"] = lightning_compat.dump_checkpoint(trainer)

    task = SleepTask()
    ids = task.metadata()["sample_id"].to_list()
    split = Split(train=ids[:30], val=ids[30:], test=[])
    hp = {"sleep_s": 0.0}
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    trainer = lightning.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[Probe()],
    )  # fmt: skip
    assert lightning_compat.train_dataloaders(trainer) is None  # no fit yet
    assert lightning_compat.in_epoch_batches(trainer) is False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task.build_model(hp), task.build_datamodule(hp, split))
    assert seen["epoch_start"] is False  # on_train_epoch_start: the epoch's batches have not started
    assert seen["in_batches"] is True
    loaders = seen["loaders"]
    assert len(loaders) == 1 and len(loaders[0].dataset) == 30
    checkpoint = seen["checkpoint"]
    assert checkpoint["epoch"] == 0 and "loops" in checkpoint
    assert set(checkpoint["state_dict"]) == {"linear.weight", "linear.bias"}
