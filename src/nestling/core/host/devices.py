"""Turning `--accelerator/--devices` into Trainer arguments and into the device slots of a local worker pool.

No torch import: GPUs are counted from CUDA_VISIBLE_DEVICES or `nvidia-smi -L`.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from nestling.core.errors import UsageError

TrainerDevices = str | int | list[int]


def parse_devices(values: list[str]) -> TrainerDevices:
    """`auto` -> "auto"; one integer -> a count; several integers (or "3,") -> a list of device ids."""
    items = [v for value in values for v in str(value).replace(",", " , ").split() if v]
    if not items or items == ["auto"]:
        return "auto"
    single_id = items[-1] == "," and len([i for i in items if i != ","]) == 1
    ids = [i for i in items if i != ","]
    try:
        numbers = [int(i) for i in ids]
    except ValueError:
        raise UsageError(
            f"--devices {' '.join(values)!r} is not valid: use auto, a count (--devices 2) or ids (--devices 0 2 5)"
        ) from None
    if any(n < 0 for n in numbers) or len(set(numbers)) != len(numbers):
        raise UsageError(
            f"--devices {' '.join(values)!r}: ids must be distinct and >= 0, e.g. --devices 0 2 5"
        )
    if len(numbers) == 1 and not single_id:
        if numbers[0] == 0:
            raise UsageError(
                "--devices 0 is a count of zero devices; use --devices 0, (id 0) or --accelerator cpu"
            )
        return numbers[0]
    return numbers


def visible_gpu_ids() -> list[str]:
    """The GPU ids this process may use, without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
    return []


MEMORY_FRACTION_ENV = "NESTLING_MEMORY_FRACTION"  # set by launchers with --runs_per_gpu K > 1; read by execute/training.py


PINNED_GPUS_ENV = "NESTLING_PINNED_GPUS"  # the --devices ids a serial worker was pinned to; execute/training.py renumbers them


def serial_slot(accelerator: str, devices: TrainerDevices) -> list[str] | None:
    """The GPUs a serial worker is pinned to, as parallel workers are: with --accelerator gpu/cuda and --devices a
    count (the first N visible) or ids (mapped through this process's CUDA_VISIBLE_DEVICES). None (not pinned, the
    Trainer decides) for auto, CPUs, or ids this process cannot see (the Trainer then reports them, as before)."""
    if accelerator not in ("gpu", "cuda") or devices == "auto":
        return None
    visible = visible_gpu_ids()
    if isinstance(devices, int):
        return visible[:devices] if 0 < devices <= len(visible) else None
    if isinstance(devices, list) and devices and all(0 <= d < len(visible) for d in devices):
        return [visible[d] for d in devices]
    return None


def memory_fraction(runs_per_gpu: int) -> str | None:
    """The share of each GPU's memory one of K packed workers may take (the env value), None when not packed."""
    return None if runs_per_gpu <= 1 else f"{1 / runs_per_gpu:.6g}"


def packed_slots(slots: list[list[str] | None], runs_per_gpu: int) -> list[list[str] | None]:
    """K workers per GPU slot, interleaved (g0, g1, g0, g1, ...) so that a plan with fewer units than slots still
    spreads over the GPUs; CPU slots (None) are left as they are."""
    if runs_per_gpu <= 1 or not any(slot is not None for slot in slots):
        return slots
    return [slot for _ in range(runs_per_gpu) for slot in slots]


def uses_gpu(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return True
    if accelerator == "auto":
        return bool(visible_gpu_ids())
    return False


def worker_slots(accelerator: str, devices: TrainerDevices) -> list[list[str] | None]:
    """One entry per parallel worker: the GPU ids pinned to it, or None for a CPU worker."""
    if not uses_gpu(accelerator):
        count = devices if isinstance(devices, int) else (len(devices) if isinstance(devices, list) else 1)
        return [None] * count
    if isinstance(devices, list):
        return [[str(d)] for d in devices]
    available = visible_gpu_ids()
    if not isinstance(devices, int):  # "auto"
        return [[g] for g in available] or [None]
    if devices > len(available):
        raise UsageError(
            f"--devices {devices} asks for more GPUs than the {len(available)} visible here; use --devices {len(available) or 'auto'}"
        )
    return [[g] for g in available[:devices]]
