"""Choose and configure the launcher for a plan; checks launcher options before anything is written."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nestling.config import PARALLEL_STRATEGIES, Config
from nestling.devices import worker_slots
from nestling.launch.base import Launcher

if TYPE_CHECKING:
    from nestling.preflight import Prepared


def make_launcher(config: Config, prepared: Prepared) -> Launcher:
    name = config.launch.launcher
    if name == "local":
        from nestling.launch.local import LocalLauncher

        if config.device.strategy in PARALLEL_STRATEGIES:
            slots = worker_slots(config.device.accelerator, prepared.devices)
        else:
            slots = [None]  # one worker; the Trainer gets the device flags as given
        return LocalLauncher(slots)
    raise NotImplementedError(name)
