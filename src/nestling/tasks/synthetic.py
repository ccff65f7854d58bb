"""A synthetic binary-segmentation task with regions: the demo, learnable in seconds on a CPU.

Samples are generated from `(seed, index)` alone, so every process (login node, worker, container) sees the same
data without files. Regions differ in positive rate and noise so region-aware folds and scores have something to
show. Only numpy and polars are imported here; torch and lightning load when a model or datamodule is built.
"""

from __future__ import annotations

import string
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from nestling.errors import UsageError
from nestling.task import Split, Task

if TYPE_CHECKING:
    import lightning

MIN_POSITIVE_RATE = 0.2
MAX_POSITIVE_RATE = 0.9
MIN_NOISE = 0.1
MAX_NOISE = 0.35
BLOB_AMPLITUDE = 1.0


def resolve_hparams(defaults: dict[str, Any], given: dict[str, Any], task_name: str) -> dict[str, Any]:
    """Defaults overlaid with `given`; an unknown key is a typo in a space file, so it fails loudly."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise UsageError(
            f"task {task_name!r} got unknown hyperparameter(s) {', '.join(map(repr, unknown))}; "
            f"valid keys are {', '.join(sorted(defaults))}"
        )
    return {**defaults, **given}


def region_name(i: int) -> str:
    """'region-a', 'region-b', ...; past 'z' the letters repeat with a number so names stay unique."""
    letter = string.ascii_lowercase[i % 26]
    return f"region-{letter}" if i < 26 else f"region-{letter}{i // 26}"


def sample_id(index: int) -> str:
    return f"s{index:04d}"


def sample_index(sid: str) -> int:
    """Inverse of `sample_id`; a foreign id means the split came from another task's metadata."""
    if not (sid.startswith("s") and sid[1:].isdigit()):
        raise UsageError(f"sample id {sid!r} is not one of this task's ids (like 's0007')")
    return int(sid[1:])


class SyntheticSegmentation(Task):
    """Gaussian-disk blobs on noisy single-channel images; the target is the disk mask."""

    def __init__(self, n_samples: int = 96, image_size: int = 16, n_regions: int = 6, seed: int = 0) -> None:
        if n_samples < 1 or image_size < 4 or n_regions < 1:
            raise UsageError(
                f"SyntheticSegmentation(n_samples={n_samples}, image_size={image_size}, n_regions={n_regions}): "
                "need n_samples >= 1, image_size >= 4, n_regions >= 1"
            )
        self.n_samples = n_samples
        self.image_size = image_size
        self.n_regions = n_regions
        self.seed = seed
        self.positive_rates = np.linspace(MIN_POSITIVE_RATE, MAX_POSITIVE_RATE, n_regions)
        self.noise_levels = np.linspace(MIN_NOISE, MAX_NOISE, n_regions)

    # -- numpy-only generation -------------------------------------------------------------------------------

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index])

    def _region(self, index: int) -> int:
        return index % self.n_regions

    @cached_property
    def labels(self) -> np.ndarray:
        """Per region, exactly round(rate * n) positives: the samples whose first draw ranks lowest.

        Exact counts (not coin flips) keep the regions' positive rates distinct even with few samples, and the
        first draw of each sample's own stream keeps metadata() free of image generation.
        """
        first_draw = np.array([self._rng(i).random() for i in range(self.n_samples)])
        regions = np.arange(self.n_samples) % self.n_regions
        labels = np.zeros(self.n_samples, dtype=np.int64)
        for region in range(self.n_regions):
            members = np.flatnonzero(regions == region)
            n_pos = round(float(self.positive_rates[region]) * len(members))
            labels[members[np.argsort(first_draw[members], kind="stable")[:n_pos]]] = 1
        return labels

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask), both float32 of shape (1, size, size); deterministic in (seed, index)."""
        rng = self._rng(index)
        rng.random()  # the label's draw, see `labels`
        label = self.labels[index]
        size = self.image_size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        image = np.zeros((size, size), dtype=np.float32)
        mask = np.zeros((size, size), dtype=bool)
        if label:
            for _ in range(int(rng.integers(1, 4))):
                radius = float(rng.uniform(0.12, 0.22) * size)
                cy, cx = rng.uniform(radius * 0.5, size - radius * 0.5, size=2)
                dist2 = (yy - cy) ** 2 + (xx - cx) ** 2
                image = np.maximum(image, BLOB_AMPLITUDE * np.exp(-dist2 / (2 * (radius * 0.8) ** 2)))
                mask |= dist2 <= radius**2
        noise = rng.normal(0.0, self.noise_levels[self._region(index)], size=(size, size))
        image = (image + noise).astype(np.float32)
        return image[None], mask[None].astype(np.float32)

    def arrays(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Stacked (images, masks) for `ids`, in that order."""
        size = self.image_size
        images = np.empty((len(ids), 1, size, size), dtype=np.float32)
        masks = np.empty((len(ids), 1, size, size), dtype=np.float32)
        for row, sid in enumerate(ids):
            index = sample_index(sid)
            if index >= self.n_samples:
                raise UsageError(f"sample id {sid!r} is out of range: this task has {self.n_samples} samples")
            images[row], masks[row] = self.sample(index)
        return images, masks

    # -- Task interface --------------------------------------------------------------------------------------

    def metadata(self) -> pl.DataFrame:
        indices = range(self.n_samples)
        return pl.DataFrame(
            {
                "sample_id": [sample_id(i) for i in indices],
                "region": [region_name(self._region(i)) for i in indices],
                "label": self.labels.tolist(),
            },
            schema={"sample_id": pl.String, "region": pl.String, "label": pl.Int64},
        )

    def default_hparams(self) -> dict[str, Any]:
        return {"lr": 1e-2, "base_channels": 8, "batch_size": 16, "depth": 2}

    def scoring_metrics(self) -> list[str]:
        return ["val/JaccardIndex", "val/Recall"]  # of the val/* metrics SegmentationModule logs

    def build_model(self, hparams: dict[str, Any]) -> lightning.LightningModule:
        from nestling.tasks import _synthetic_torch

        hp = resolve_hparams(self.default_hparams(), hparams, "synthetic-segmentation")
        max_depth = int(np.log2(self.image_size)) - 1
        if not 1 <= int(hp["depth"]) <= max_depth or self.image_size % 2 ** (int(hp["depth"]) - 1):
            raise UsageError(
                f"depth={hp['depth']} does not fit image_size={self.image_size}: use 1..{max_depth} with "
                "image_size divisible by 2**(depth-1)"
            )
        return _synthetic_torch.SegmentationModule(hp)

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> lightning.LightningDataModule:
        from nestling.tasks import _synthetic_torch

        hp = resolve_hparams(self.default_hparams(), hparams, "synthetic-segmentation")
        return _synthetic_torch.ArrayDataModule(self, split, batch_size=int(hp["batch_size"]))
