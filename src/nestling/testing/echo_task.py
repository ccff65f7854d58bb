"""A sleep task whose metrics echo what its run was given, for the launcher conformance suite: a launcher that ran
the wrong fold, split or seed cannot produce the same table as the local launcher.

    val/mean_index  the mean index of the validation samples the model saw (s0007 -> 7): the fold and the split
    val/seed        the seed torch was seeded with when the model was built (nestling seeds every run)
    val/seed_draw   a number drawn from torch's generator right after the model's initialisation: the seed, and
                    whatever consumed random numbers before the model was built

Use it as `--task nestling.testing.echo_task:EchoTask`: a path every worker, array task and image can import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nestling.core.lazy import lazy_module
from nestling.tasks.sleep import N_SAMPLES, SleepTask

if TYPE_CHECKING:
    import lightning
    import torch
else:
    torch = lazy_module("torch")  # the planner imports the task for its metadata: no torch there


class EchoTask(SleepTask):
    """The sleep task (samples, data, constant metrics, scoring), plus the three echo metrics."""

    def build_model(self, hparams: dict[str, Any]) -> lightning.LightningModule:
        model = super().build_model(hparams)  # its initialisation draws from the generator nestling seeded
        seed, draw = float(torch.initial_seed()), float(torch.rand(()))
        sleep_step = model.validation_step

        def validation_step(batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
            sleep_step(batch, batch_idx)
            n = len(batch[0])
            index = float((batch[0] * N_SAMPLES).round().mean())  # the sleep task's feature is index / N_SAMPLES
            model.log("val/mean_index", index, on_step=False, on_epoch=True, batch_size=n)
            model.log("val/seed", seed, on_step=False, on_epoch=True, batch_size=n)
            model.log("val/seed_draw", draw, on_step=False, on_epoch=True, batch_size=n)

        model.validation_step = validation_step  # type: ignore[method-assign]
        return model
