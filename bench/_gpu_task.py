"""The synthetic task at a size where a GPU has work (issue 15 #3): 1,024 images of 64 x 64, generated once per
worker as tensors kept on the device. Model size comes from the hyperparameters (base_channels, depth)."""

from __future__ import annotations

from nestling.tasks.synthetic import SyntheticSegmentation

TASK = SyntheticSegmentation(n_samples=1024, image_size=64, n_regions=6)
