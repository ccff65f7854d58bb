"""A synthetic binary-segmentation task with regions: the demo, learnable in seconds on a CPU.

Samples are generated from the task's parameters alone, so every process (login node, worker, container) sees the
same data without files. All images are generated at once, vectorised, the first time a process needs them (and
kept: a worker's runs share them); the labels come from each sample's own `(seed, index)` stream, so metadata()
generates no image. The model's size is set by the hyperparameters `base_channels` (width) and `depth`. Regions differ in positive rate and noise so region-aware folds and scores have something to
show. Only numpy and polars are imported here; torch and lightning load when a model or datamodule is built.
"""

from __future__ import annotations

import string
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from nestling.core.errors import UsageError
from nestling.core.lazy import lazy_module
from nestling.core.ml.task import Split, Task

if TYPE_CHECKING:
    import lightning

    from nestling.tasks import _synthetic_torch
else:
    _synthetic_torch = lazy_module("nestling.tasks._synthetic_torch")

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

    @cached_property
    def images_and_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, masks) of every sample, float32 of shape (n, 1, size, size), generated in one vectorised pass:
        1-3 Gaussian disks on positive samples, Gaussian noise of the sample's region everywhere."""
        n, size = self.n_samples, self.image_size
        rng = np.random.default_rng([self.seed, n, size, self.n_regions])
        n_blobs = rng.integers(1, 4, size=n)
        radius = (rng.uniform(0.12, 0.22, size=(n, 3)) * size).astype(np.float32)
        centre = rng.uniform(0.0, 1.0, size=(n, 3, 2)).astype(np.float32)
        centre = radius[..., None] * 0.5 + centre * (size - radius[..., None])  # within [r/2, size - r/2]
        active = (np.arange(3)[None, :] < n_blobs[:, None]) & (self.labels[:, None] == 1)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        dist2 = (yy - centre[..., 0, None, None]) ** 2 + (xx - centre[..., 1, None, None]) ** 2  # (n, 3, s, s)
        blobs = BLOB_AMPLITUDE * np.exp(-dist2 / (2 * (radius[..., None, None] * 0.8) ** 2))
        image = np.where(active[..., None, None], blobs, 0.0).max(axis=1)
        mask = ((dist2 <= radius[..., None, None] ** 2) & active[..., None, None]).any(axis=1)
        levels = self.noise_levels[np.arange(n) % self.n_regions].astype(np.float32)
        noise = rng.standard_normal(size=(n, size, size), dtype=np.float32) * levels[:, None, None]
        return (image + noise).astype(np.float32)[:, None], mask.astype(np.float32)[:, None]

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask), both float32 of shape (1, size, size); deterministic in the task's parameters."""
        images, masks = self.images_and_masks
        return images[index], masks[index]

    def indices(self, ids: list[str]) -> np.ndarray:
        """Row numbers of `ids` in `images_and_masks`, in that order."""
        rows = np.array([sample_index(sid) for sid in ids], dtype=np.int64)
        if len(rows) and rows.max() >= self.n_samples:
            sid = ids[int(np.argmax(rows))]
            raise UsageError(f"sample id {sid!r} is out of range: this task has {self.n_samples} samples")
        return rows

    def arrays(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Stacked (images, masks) for `ids`, in that order."""
        rows = self.indices(ids)
        images, masks = self.images_and_masks
        return images[rows], masks[rows]

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
        hp = resolve_hparams(self.default_hparams(), hparams, "synthetic-segmentation")
        max_depth = int(np.log2(self.image_size)) - 1
        if not 1 <= int(hp["depth"]) <= max_depth or self.image_size % 2 ** (int(hp["depth"]) - 1):
            raise UsageError(
                f"depth={hp['depth']} does not fit image_size={self.image_size}: use 1..{max_depth} with "
                "image_size divisible by 2**(depth-1)"
            )
        return _synthetic_torch.SegmentationModule(hp)

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> lightning.LightningDataModule:
        hp = resolve_hparams(self.default_hparams(), hparams, "synthetic-segmentation")
        return _synthetic_torch.ArrayDataModule(self, split, batch_size=int(hp["batch_size"]))
