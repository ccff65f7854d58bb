"""A task whose validation metric changes by epoch (0.9, 0.2, 0.4): its best epoch is not its last."""

from __future__ import annotations

from typing import Any

from nestling.core.ml.task import Split
from nestling.tasks.sleep import SleepTask, _datamodule

BY_EPOCH = (0.9, 0.2, 0.4)


class EpochTask(SleepTask):
    def scoring_metrics(self) -> list[str]:
        return ["val/JaccardIndex"]

    def build_model(self, hparams: dict[str, Any]) -> Any:
        import lightning
        import torch
        from torch import nn

        class EpochModule(lightning.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.linear = nn.Linear(1, 1)

            def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
                self.weights_epoch.fill_(self.current_epoch)  # saved with the weights, restored with them
                x, y = batch
                return nn.functional.mse_loss(self.linear(x), y)

            def validation_step(self, batch: Any, batch_idx: int) -> None:
                # the epoch the weights come from, so validating best.ckpt (epoch 0) gives 0.9 again
                value = BY_EPOCH[int(self.weights_epoch.item())]
                self.log("val/JaccardIndex", value, on_epoch=True, batch_size=len(batch[0]))

            def configure_optimizers(self) -> torch.optim.Optimizer:
                return torch.optim.SGD(self.parameters(), lr=0.01)

        module = EpochModule()
        module.register_buffer("weights_epoch", torch.tensor(0))
        return module

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> Any:
        return _datamodule(split, "")
