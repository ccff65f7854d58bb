"""Issue 15 #3: the synthetic task's data is made once per process, vectorised, and batched where it lives."""

from __future__ import annotations

import numpy as np
import torch

from nestling.core.ml.task import Split
from nestling.tasks import _synthetic_torch as st
from nestling.tasks.synthetic import SyntheticSegmentation, sample_id


def test_images_are_generated_once_vectorised_and_keep_labels_and_regions() -> None:
    task = SyntheticSegmentation(n_samples=60, image_size=16, n_regions=3, seed=1)
    images, masks = task.images_and_masks
    assert images.shape == masks.shape == (60, 1, 16, 16) and images.dtype == np.float32
    assert task.images_and_masks[0] is images  # cached: made once per process
    labels = task.metadata()["label"].to_numpy()
    assert ((masks.reshape(60, -1).sum(axis=1) > 0) == (labels == 1)).all()  # a mask exactly on positives
    negatives = [images[i].std() for i in range(60) if labels[i] == 0]
    regions = [i % 3 for i in range(60) if labels[i] == 0]
    by_region = [np.mean([s for s, r in zip(negatives, regions, strict=True) if r == k]) for k in range(3)]
    assert by_region == sorted(by_region)  # noise grows with the region, as the task's docstring says
    same = SyntheticSegmentation(n_samples=60, image_size=16, n_regions=3, seed=1).images_and_masks[0]
    assert (same == images).all()
    assert (task.arrays([sample_id(5), sample_id(2)])[0] == images[[5, 2]]).all()


def test_tensors_are_shared_by_the_runs_of_a_process_and_batches_are_slices() -> None:
    task = SyntheticSegmentation(n_samples=40, seed=2)
    a = st.task_tensors(task, torch.device("cpu"))
    assert st.task_tensors(task, torch.device("cpu"))[0] is a[0]  # one copy per process and device
    ids = [sample_id(i) for i in range(40)]
    dm = task.build_datamodule({"batch_size": 16}, Split(train=ids[:30], val=ids[30:], test=[]))
    dm.setup("fit")
    torch.manual_seed(7)
    train = dm.train_dataloader()
    assert isinstance(train, st.TensorBatches) and len(train) == 2
    batches = list(train)
    assert [len(x) for x, _ in batches] == [16, 14]
    seen = torch.cat([x for x, _ in batches]).reshape(30, -1)
    expected = a[0][:30].reshape(30, -1)
    # every training sample exactly once per epoch, in a shuffled order
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, expected.tolist()))
    assert not torch.equal(seen, expected)
    torch.manual_seed(7)
    again = torch.cat([x for x, _ in dm.train_dataloader()]).reshape(30, -1)
    assert torch.equal(again, seen)  # the run's seed fixes the order
    assert len(dm.test_dataloader()) == 0
