"""The fence around Lightning internals that nestling needs and Lightning does not publish.

Saving a run mid-epoch on the preemption signal (run.save_interrupt_checkpoint) needs the full checkpoint dict
the Trainer would write, where the fit loop stands, and the training dataloaders as the loop holds them. None of
these is public API, so they are reached here only: a Lightning upgrade that moves them breaks this module, and
each function falls back to "unknown" (None / False) rather than raising inside a signal handler.

Checked against lightning 2.6.6 (pyproject requires >=2.3; the attributes are unchanged since 2.2).
"""

from __future__ import annotations

from typing import Any


def dump_checkpoint(trainer: Any) -> dict[str, Any]:
    """The checkpoint dict `trainer.save_checkpoint` would write, without writing it (we write atomically)."""
    return trainer._checkpoint_connector.dump_checkpoint()


def train_dataloaders(trainer: Any) -> list[Any] | None:
    """The training dataloaders of the fit in progress, flattened; None when the loop does not expose them."""
    try:
        return list(trainer.fit_loop._combined_loader.flattened)
    except (AttributeError, TypeError):
        return None


def in_epoch_batches(trainer: Any) -> bool:
    """Inside an epoch's batch loop: past on_train_epoch_start, with at least one batch under way."""
    try:
        epoch = trainer.fit_loop.epoch_progress.current
        batches = trainer.fit_loop.epoch_loop.batch_progress
    except AttributeError:
        return False
    return bool(
        epoch.started == epoch.ready and epoch.processed == epoch.started - 1 and batches.current.ready > 0
    )


def appending_csv_logger(save_dir: str, name: str, version: str) -> Any:
    """Lightning's CSVLogger, except that it appends to an existing metrics.csv instead of deleting it: a run
    promoted from a rung (execute/training.py) continues the log of its attempt. CSVLogger's writer deletes the
    file it finds (`_check_log_dir_exists`) and appends only to a file it wrote itself (`metrics_keys`)."""
    import csv
    import os

    from lightning.fabric.loggers.logger import rank_zero_experiment
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            if os.path.isfile(self.metrics_file_path):
                with open(self.metrics_file_path, newline="") as f:
                    self.metrics_keys = sorted(next(csv.reader(f), []))

    class AppendingCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self) -> Any:
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    return AppendingCSVLogger(save_dir=save_dir, name=name, version=version)
