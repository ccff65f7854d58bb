"""A run's W&B run: started eagerly (online, or offline when W&B cannot be reached), never at the cost of the run."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from nestling.core.host import tracking
from nestling.core.host.jobenv import JobEnvironment
from nestling.core.tree.run_spec import RunSpec

log = logging.getLogger("nestling.run")


@dataclass(frozen=True)
class Tracking:
    """What became of the run's W&B run, for its result: online, offline or disabled, and why when not online.
    None and None where nothing was decided (no W&B project, a rank other than 0, a run that failed before)."""

    mode: str | None = None
    reason: str | None = None


def start_wandb_logger(spec: RunSpec) -> tuple[Any, Tracking]:
    """A WandbLogger whose run is already started, online or offline (None when wandb cannot start at all), and
    the tracking outcome the run's result records.

    Tracking never costs a run: the mode comes from tracking.decide (bounded probe in auto mode), and the start
    happens here, eagerly, so that a failure is caught before training (Lightning would start it lazily, inside
    fit, where it would fail the run). An online start that raises is retried offline. Only rank 0 starts a W&B
    run (the other ranks get Lightning's dummy experiment), so only rank 0 decides.
    """

    if JobEnvironment.from_environ().global_rank != 0:
        return _new_wandb_logger(spec, tracking.OFFLINE), Tracking()
    decision = tracking.decide(spec.wandb_mode)
    if decision.mode == tracking.DISABLED:
        return None, Tracking(tracking.DISABLED, decision.reason)
    try:
        logger = _start_wandb(spec, decision.mode)
    except Exception as exc:  # online or not, W&B's start must not fail the run
        reason = f"W&B {decision.mode} start failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        log.warning("run %s: %s", spec.run_name, reason)
        if decision.mode == tracking.OFFLINE:
            return None, Tracking(tracking.DISABLED, reason)
        tracking.remember_failure(os.environ, reason)
        decision = tracking.Decision(tracking.OFFLINE, reason)
        try:
            logger = _start_wandb(spec, tracking.OFFLINE)
        except Exception as again:
            reason = f"{reason}; offline start failed too: {type(again).__name__}: {' '.join(str(again).split())}"
            return None, Tracking(tracking.DISABLED, reason[:1000])
    if decision.mode != tracking.ONLINE:
        log.warning("run %s: W&B offline (%s)", spec.run_name, decision.reason)
    return logger, Tracking(decision.mode, decision.reason)


def finish_wandb(spec: RunSpec) -> None:
    """End the run's W&B run; a failure to do so (the service gone, a lost connection) is logged, not the run's."""
    import wandb

    try:
        wandb.finish()
    except Exception as exc:
        log.warning("run %s: W&B did not finish cleanly: %s: %s", spec.run_name, type(exc).__name__, exc)


def _start_wandb(spec: RunSpec, mode: str) -> Any:
    """Create the logger and start its W&B run now; after a failed start, wandb's service is torn down so that
    the same run id can start again (offline) in this process."""
    logger = _new_wandb_logger(spec, mode)
    try:
        logger.experiment  # noqa: B018  (starts the W&B run: wandb.init)
    except BaseException:
        import wandb

        with contextlib.suppress(Exception):
            wandb.teardown()
        raise
    return logger


def _new_wandb_logger(spec: RunSpec, mode: str) -> Any:
    from lightning.pytorch.loggers import WandbLogger

    extra: dict[str, Any] = {"mode": mode}
    if mode == tracking.ONLINE and not os.environ.get("WANDB_INIT_TIMEOUT"):
        import wandb

        extra["settings"] = wandb.Settings(init_timeout=tracking.INIT_TIMEOUT_S)
    return WandbLogger(
        project=spec.wandb_project,
        entity=spec.wandb_entity,
        id=spec.run_id,
        name=spec.run_name,
        group=spec.tune_name,
        job_type=spec.cv_name,
        save_dir=spec.run_dir,
        resume="allow",
        config=spec.hparams,
        **extra,
    )
