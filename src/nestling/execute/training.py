"""The Lightning side of a run: the Trainer, its callbacks and checkpoints, resuming, testing, what ran where.

The one module (with the tasks) that imports torch and lightning, inside functions, so that a worker pays the
import once and then runs many specs."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from nestling.core.compat import lightning_internals as lightning_compat
from nestling.core.host import jobenv
from nestling.core.host.devices import MEMORY_FRACTION_ENV, PINNED_GPUS_ENV
from nestling.core.host.jobenv import JobEnvironment
from nestling.core.ml.scoring import parse_scoring_metrics
from nestling.core.ml.task import Split, Task
from nestling.core.provenance.imports import load_task_from
from nestling.core.tree.atomic import write_json
from nestling.core.tree.naming import LOGS, RunPaths
from nestling.core.tree.run_epochs import StopReason, read_curve, record_epoch
from nestling.core.tree.run_spec import RunSpec
from nestling.execute import staging
from nestling.execute.wandb_run import Tracking, finish_wandb, start_wandb_logger

log = logging.getLogger("nestling.run")


@lru_cache(maxsize=8)
def cached_task(spec: str, code: str | None = None) -> Task:
    """The task, loaded once per process; imported from the plan's code snapshot `code` (a _code/{key} dir)."""
    return load_task_from(spec, code)


@lru_cache(maxsize=8)
def _read_splits(path: str) -> tuple[Split, ...]:
    data = json.loads(Path(path).read_text())
    return tuple(Split(train=s["train"], val=s["val"], test=s["test"]) for s in data)


class _MemoryCap:
    done = False


def cap_device_memory(environ: Mapping[str, str] | None = None, cuda: Any = None) -> float | None:
    """With --runs_per_gpu K the launcher sets NESTLING_MEMORY_FRACTION=1/K: cap this process at that share of each
    visible GPU's memory, so one of K packed runs cannot starve the others (it fails alone with an out-of-memory
    error). Once per process; returns the fraction applied, None when there is none or no CUDA."""
    value = (os.environ if environ is None else environ).get(MEMORY_FRACTION_ENV)
    if not value or _MemoryCap.done:
        return None
    if cuda is None:
        import torch

        cuda = torch.cuda
    if not cuda.is_available():
        return None
    fraction = float(value)
    for index in range(cuda.device_count()):
        cuda.set_per_process_memory_fraction(fraction, index)
    _MemoryCap.done = True
    return fraction


def resume_checkpoint(paths: RunPaths) -> Path | None:
    """The newest checkpoint a previous attempt left (saved on preemption, or at an epoch end)."""
    candidates = [p for p in (paths.interrupted_checkpoint, paths.last_checkpoint) if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


RANK0_SAVE_WAIT_S = 120.0  # how long the other ranks of a preempted multi-task job wait for rank 0's save


def on_preemption(trainer: Any, paths: RunPaths) -> Path | None:
    """The saver a run registers for the preemption signal (jobenv.stop_on calls it on every rank).

    Rank 0 saves (:func:`save_interrupt_checkpoint`); in a multi-task job it then writes the run's preempt marker,
    and the other ranks, which keep training meanwhile (rank 0 may need them in a collective before it gets to
    save), return once it is there, so that none stops before rank 0 is done.
    """
    job = JobEnvironment.from_environ()
    marker = paths.preempt_marker(job.incarnation)
    if job.global_rank != 0:
        if job.multi_task:
            deadline = time.monotonic() + RANK0_SAVE_WAIT_S
            log.warning("rank %d: waiting for rank 0 to save before stopping", job.global_rank)
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        return None
    saved = None
    try:
        saved = save_interrupt_checkpoint(trainer, paths)
        return saved
    finally:
        if job.multi_task:
            write_json(marker, {"rank": 0, "interrupted_checkpoint": str(saved) if saved else None})


def save_interrupt_checkpoint(trainer: Any, paths: RunPaths) -> Path | None:
    """Called on the preemption / time-limit signal: leave a state the next attempt resumes from exactly.

    Lightning continues a checkpoint taken mid-epoch exactly only when every training dataloader is resumable
    (state_dict / load_state_dict) and the epoch's batches are under way; then the state now is saved as
    interrupted.ckpt. Otherwise nothing is saved, on purpose: with a plain DataLoader Lightning would replay the
    epoch's first batches and skip its last ones, and at an epoch's start (on_train_epoch_start) it would skip the
    whole epoch. The next attempt then resumes from last.ckpt, the end of the last completed epoch, and redoes
    only the interrupted epoch's partial work: no completed epoch is trained twice, none is skipped.
    """
    if JobEnvironment.from_environ().global_rank != 0:
        return None
    if not _resumable_mid_epoch(trainer):
        log.warning(
            "signal in epoch %d: the next attempt resumes from %s (end of the last completed epoch)",
            trainer.current_epoch, paths.last_checkpoint if paths.last_checkpoint.is_file() else "the start",
        )  # fmt: skip
        return None
    import torch

    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = paths.interrupted_checkpoint.with_suffix(".tmp")
    torch.save(lightning_compat.dump_checkpoint(trainer), tmp)
    os.replace(tmp, paths.interrupted_checkpoint)
    log.warning("saved %s on preemption", paths.interrupted_checkpoint)
    return paths.interrupted_checkpoint


def _resumable_mid_epoch(trainer: Any) -> bool:
    """Inside an epoch's batch loop (past on_train_epoch_start), with resumable training dataloaders only."""
    loaders = lightning_compat.train_dataloaders(trainer)
    if not loaders or not lightning_compat.in_epoch_batches(trainer):
        return False
    return all(hasattr(dl, "state_dict") and hasattr(dl, "load_state_dict") for dl in loaders)


def _cluster_plugins() -> list[Any]:
    """nestling's task program (array_task.py) owns SLURM signals and requeue, so Lightning must not requeue too.

    A multi-task job (srun, multi-node DDP) uses SLURMEnvironment(auto_requeue=False) to wire ranks; a one-task
    array job uses the plain LightningEnvironment so that a unit with several GPUs can still use ddp_fork.
    """
    job = JobEnvironment.from_environ()
    if job.job_id is None:
        return []
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    if job.multi_task:
        return [SLURMEnvironment(auto_requeue=False)]
    return [LightningEnvironment()]


@dataclass(frozen=True)
class Placement:
    """What ran where (issue 15 #4): the accelerator the Trainer chose, every visible device's name, the peak memory
    on CUDA, and (on CUDA, where no launcher set CUDA_VISIBLE_DEVICES) the GPUs this process could see."""

    accelerator: str | None = None
    device_names: list[str] | None = None
    visible_devices: str | None = None
    peak_memory_bytes: int | None = None


@dataclass(frozen=True)
class Trained:
    """A run that trained (and tested) to the end, or to its rung (paused), with its scoring metrics."""

    metrics: dict[str, float]
    checkpoint: str | None
    world_size: int
    placement: Placement
    tracking: Tracking
    epochs_trained: int | None = None  # over all its attempts
    stop_reason: StopReason | None = None  # completed, early_stopped or paused (at `until_epoch`)


class TrainingFailed(Exception):
    """A run failed (its cause is chained): what ran where and the W&B outcome known by then, for its result."""

    def __init__(self, placement: Placement, tracking: Tracking) -> None:
        super().__init__("the run failed")
        self.placement = placement
        self.tracking = tracking


@dataclass
class _Seen:
    """What `_fit_and_test` has learnt so far, for the TrainingFailed it may end in (private to this module)."""

    placement: Placement = field(default_factory=Placement)
    tracking: Tracking = field(default_factory=Tracking)


def train(spec: RunSpec, paths: RunPaths, attempt: int, until_epoch: int | None = None) -> Trained:
    """Fit (and test). Any failure raises TrainingFailed from its cause, carrying what ran where and the W&B outcome
    known by then, so that the run's result records both whether it succeeded or not. `until_epoch` (a rung,
    --pruner asha|hyperband): pause after that many epochs; the Trainer still gets --max_epochs, so a schedule over
    the whole run is the same as without pausing, and the next segment resumes from last.ckpt where this one
    stopped. The test split is tested only when the run ends, not at a pause."""
    seen = _Seen()
    try:
        return _fit_and_test(spec, paths, attempt, seen, until_epoch)
    except Exception as exc:
        raise TrainingFailed(seen.placement, seen.tracking) from exc


def _fit_and_test(spec: RunSpec, paths: RunPaths, attempt: int, seen: _Seen, until_epoch: int | None) -> Trained:
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, LambdaCallback, ModelCheckpoint

    task = cached_task(spec.task, spec.code)
    split = staging.split_for(_read_splits(spec.splits_file)[spec.fold])  # with its node's staged data (Task.stage)
    cap_device_memory()
    L.seed_everything(spec.seed, workers=True, verbose=False)
    scoring = parse_scoring_metrics(spec.scoring_metric)
    first = scoring[0]
    checkpoint = ModelCheckpoint(
        dirpath=paths.checkpoints, filename="best", monitor=first.name, mode=first.mode
    )
    # The resume point, written at the end of EVERY epoch. Not save_last=True: Lightning (2.5+) then writes
    # last.ckpt only when the monitored metric improved, and a run whose metric plateaued would resume from an
    # old epoch after a preemption and train the epochs since then twice.
    last = ModelCheckpoint(dirpath=paths.checkpoints, filename="last", enable_version_counter=False)
    # A retrain (nestling retrain) has no validation samples: nothing to monitor, the final weights are tested.
    # A tune's runs keep no best.ckpt unless --score_epoch best reads it: nothing else would (RunSpec.keep_best).
    callbacks: list[Any] = [checkpoint, last] if spec.keep_best and not spec.retrain else [last]
    if not spec.retrain:  # before ModelCheckpoint and EarlyStopping fail on it with Lightning's own words

        def scoring_logged(trainer: Any, _module: Any) -> None:
            logged = _floats(trainer.callback_metrics)
            missing = [] if trainer.sanity_checking else _missing(scoring, logged)
            if missing:
                raise missing_metrics_error(spec, missing, list(logged))

        callbacks.insert(0, LambdaCallback(on_validation_end=scoring_logged))
    early: Any = None
    if spec.early_stopping_patience > 0 and not spec.retrain:
        early = EarlyStopping(monitor=first.name, mode=first.mode, patience=spec.early_stopping_patience)
        callbacks.append(early)
    callbacks += epoch_callbacks(paths, until_epoch)
    # One CSV log per attempt; a promoted run (the next segment of the same attempt) appends to it.
    loggers: list[Any] = [lightning_compat.appending_csv_logger(str(paths.dir), LOGS, paths.log_version(attempt))]
    wandb_logger = None
    if spec.wandb_project:
        wandb_logger, seen.tracking = start_wandb_logger(spec)
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    trainer = L.Trainer(
        max_epochs=spec.max_epochs,
        accelerator=spec.accelerator,
        strategy=spec.strategy,
        devices=pinned_devices(spec.devices),
        num_nodes=spec.num_nodes,
        callbacks=callbacks,
        logger=loggers,
        plugins=_cluster_plugins() or None,
        default_root_dir=str(paths.dir),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        limit_val_batches=0 if spec.retrain else None,  # a retrain's split has no val samples: never validate
    )
    seen.placement, cuda = _placement(trainer)
    resume_from = resume_checkpoint(paths)
    # The preemption signal (array_task.py, worker.py) saves this run while it trains or tests.
    try:
        with jobenv.on_preempt(lambda: on_preemption(trainer, paths)):
            model = task.build_model(dict(spec.hparams))
            datamodule = task.build_datamodule(dict(spec.hparams), split)
            trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
            metrics = _floats(trainer.callback_metrics)
            if resume_from is not None and _missing(scoring, metrics) and not spec.retrain:
                # Resumed from the end of training (the previous attempt failed after fit, e.g. in test):
                # fit had nothing left to train or validate, so validate the final weights, as its last epoch did.
                trainer.validate(model, datamodule=datamodule, ckpt_path=str(resume_from), verbose=False)
                metrics.update(_floats(trainer.callback_metrics))
            if spec.score_epoch == "best" and checkpoint.best_model_path:
                # --score_epoch best: score the epoch that best.ckpt (and test/*) come from, not the last one.
                # Validating the best checkpoint gives exactly that epoch's val metrics; train/* stay the last's.
                trainer.validate(model, datamodule=datamodule, ckpt_path=checkpoint.best_model_path, verbose=False)
                metrics.update(_floats(trainer.callback_metrics))
            stopped_early = early is not None and early.stopped_epoch > 0  # (in this process; not under ddp_fork)
            epochs, reason = _how_far(trainer, paths, spec.max_epochs, until_epoch, stopped_early)
            has_test = type(model).test_step is not L.LightningModule.test_step
            if spec.test and reason is not StopReason.PAUSED and split.test and has_test:
                ckpt = "best" if checkpoint.best_model_path else None
                trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
                metrics.update(
                    {k: v for k, v in _floats(trainer.callback_metrics).items() if k.startswith("test")}
                )
    finally:
        if cuda is not None:
            peak = max((cuda.max_memory_allocated(i) for i in range(cuda.device_count())), default=None)
            seen.placement = dataclasses.replace(seen.placement, peak_memory_bytes=peak)
        if wandb_logger is not None:
            finish_wandb(spec)
    missing = _missing(scoring, metrics)
    if missing:
        raise missing_metrics_error(spec, missing, list(metrics))
    best = checkpoint.best_model_path or last.best_model_path or None
    return Trained(metrics, best, trainer.world_size, seen.placement, seen.tracking, epochs, reason)


def epoch_callbacks(paths: RunPaths, until_epoch: int | None) -> list[Any]:
    """Two callbacks at every epoch end, on every rank: record the epoch's metrics in curve.json (rank 0 writes),
    and with `until_epoch` stop the fit after that epoch. Every rank counts the same epochs, so under DDP all
    ranks stop together without exchanging a decision; rank 0 (the worker) decides what happens next."""
    from lightning.pytorch.callbacks import Callback

    class RecordEpoch(Callback):
        def __init__(self) -> None:
            self.curve: list[dict[str, Any]] | None = None

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.is_global_zero or trainer.sanity_checking:
                return
            if self.curve is None:
                self.curve = read_curve(paths.dir)
            metrics = {k: v for k, v in _floats(trainer.callback_metrics).items() if not k.startswith("test")}
            self.curve = record_epoch(paths.dir, trainer.current_epoch, metrics, self.curve)

    class StopAtRung(Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if until_epoch is not None and trainer.current_epoch + 1 >= until_epoch:
                trainer.should_stop = True

    return [RecordEpoch(), StopAtRung()] if until_epoch is not None else [RecordEpoch()]


def _how_far(
    trainer: Any, paths: RunPaths, max_epochs: int, until_epoch: int | None, stopped_early: bool = False
) -> tuple[int, StopReason]:
    """Epochs trained after fit, and why it stopped. Under ddp_fork the fit ran in child processes and this
    process's Trainer does not know its epoch count: the curve rank 0 wrote does. Early stopping that fired at a
    rung's epoch counts as early stopping: the run is not paused, it is done."""
    curve = read_curve(paths.dir)
    epochs = max(int(trainer.current_epoch), max((int(e["epoch"]) + 1 for e in curve), default=0))
    if epochs >= max_epochs:
        return epochs, StopReason.COMPLETED
    if until_epoch is not None and epochs >= until_epoch and not stopped_early:
        return epochs, StopReason.PAUSED
    return epochs, StopReason.EARLY_STOPPED


def accelerator_name(accelerator: Any) -> str:
    """Lightning's accelerator object -> "cpu", "cuda", "mps", "xla", ... (its class name without the suffix)."""
    return type(accelerator).__name__.removesuffix("Accelerator").lower() or "unknown"


def _placement(trainer: Any, cuda: Any = None, environ: Mapping[str, str] | None = None) -> tuple[Placement, Any]:
    """What ran where, as far as the Trainer tells before it fits; on CUDA the peak memory counters are reset, so
    that the peak measured after the run is this run's. Returns torch.cuda on CUDA, else None, beside it."""
    accelerator = accelerator_name(trainer.accelerator)
    if accelerator != "cuda":
        return Placement(accelerator, ["cpu"] if accelerator == "cpu" else [accelerator]), None
    if cuda is None:
        import torch

        cuda = torch.cuda
    count = cuda.device_count()
    env = os.environ if environ is None else environ
    visible = None if env.get("CUDA_VISIBLE_DEVICES") is not None else ",".join(str(i) for i in range(count))
    for i in range(count):
        cuda.reset_peak_memory_stats(i)
    return Placement(accelerator, [cuda.get_device_name(i) for i in range(count)], visible), cuda


def pinned_devices(devices: Any, environ: Mapping[str, str] | None = None) -> Any:
    """The Trainer's `devices` in a worker the launcher pinned to the requested GPU ids (PINNED_GPUS_ENV): the
    ids are renumbered to what the worker sees (ids 2 5 -> 0 1 under CUDA_VISIBLE_DEVICES=2,5)."""
    env = os.environ if environ is None else environ
    pinned = env.get(PINNED_GPUS_ENV)
    if isinstance(devices, list) and pinned and pinned == ",".join(str(d) for d in devices):
        return list(range(len(devices)))
    return devices


class MissingMetricError(RuntimeError):
    """A run without every scoring metric cannot be scored, so it is not a success."""


def missing_metrics_error(spec: RunSpec, missing: list[str], logged: list[str]) -> MissingMetricError:
    """What the run did not log, what it logged, and the one command that goes on (issue 21 #10): log the metric
    and resume, or resume scoring on a logged metric (--force rescores: runs that finished are not trained again)."""
    text = f"the run logged no {' or '.join(missing)} to score (it logged {', '.join(sorted(logged)) or 'nothing'})"
    if spec.retrain:
        return MissingMetricError(f"{text}; a retrain is scored on test metrics: log {missing[0]} in test_step")
    kept = [m for m in spec.scoring_metric if m.rpartition(":")[0] not in missing and m not in missing]
    if not kept:  # nothing left to score on: the logged validation metric closest to the first one asked for
        validation = sorted(m for m in logged if m.startswith(("val", "valid")))
        kept = difflib.get_close_matches(missing[0], validation, n=1, cutoff=0.0) or ["val/NAME"]
    metrics = " ".join(kept)
    if spec.tune_name or spec.cv_name:
        kind, name = ("tune", spec.tune_name) if spec.tune_name else ("cv", spec.cv_name)
        return MissingMetricError(
            f"{text}; log it in validation_step and resume, or score on logged metrics: nestling {kind} --resume "
            f"{name} --scoring_metric {metrics} --force"
        )
    return MissingMetricError(f"{text}; log it in validation_step, or score on logged metrics: --scoring_metric {metrics}")


def _missing(scoring: list[Any], metrics: dict[str, float]) -> list[str]:
    return [m.name for m in scoring if m.name not in metrics]


def _floats(metrics: Any) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        out[key] = float(value.item() if hasattr(value, "item") else value)
    return out
