"""A task whose learning rate follows a cosine schedule over the Trainer's max_epochs, logged every epoch: a run
paused at rungs and promoted must see the same rates as one trained straight through."""

from __future__ import annotations

from typing import Any

from nestling.core.ml.task import Split
from nestling.tasks.sleep import SleepTask, _datamodule


class ScheduledTask(SleepTask):
    def scoring_metrics(self) -> list[str]:
        return ["val/JaccardIndex"]

    def build_model(self, hparams: dict[str, Any]) -> Any:
        import lightning
        import torch
        from torch import nn

        class ScheduledModule(lightning.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.linear = nn.Linear(1, 1)

            def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
                x, y = batch
                self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True)
                return nn.functional.mse_loss(self.linear(x), y)

            def validation_step(self, batch: Any, batch_idx: int) -> None:
                self.log("val/JaccardIndex", 0.5, on_epoch=True, batch_size=len(batch[0]))

            def configure_optimizers(self) -> Any:
                optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
                cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(self.trainer.max_epochs))
                return {"optimizer": optimizer, "lr_scheduler": cosine}

        return ScheduledModule()

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> Any:
        return _datamodule(split, "")
