"""The built-in tasks: cheap torch-free metadata, the metric names the scorer reads, and the sleep task's timing."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import time
import warnings

import polars as pl
import pytest

from nestling.core.errors import UsageError
from nestling.core.ml.task import Split, load_task
from nestling.tasks.sleep import SleepTask
from nestling.tasks.synthetic import SyntheticSegmentation

METRICS = {"train/loss", "val/loss", "val/JaccardIndex", "val/Recall", "val/Precision", "val/F1Score"}


def _split(ids: list[str], n_train: int, n_val: int) -> Split:
    return Split(train=ids[:n_train], val=ids[n_train : n_train + n_val], test=ids[n_train + n_val :])


def _fit(model: object, datamodule: object, epochs: int = 1) -> object:
    import lightning

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    trainer = lightning.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule)
    return trainer


def test_synthetic_metadata_columns_and_regions() -> None:
    md = SyntheticSegmentation().metadata()
    assert md.columns == ["sample_id", "region", "label"]
    assert md.schema == {"sample_id": pl.String, "region": pl.String, "label": pl.Int64}
    assert md.height == 96
    assert md["sample_id"].n_unique() == 96
    assert md["sample_id"][7] == "s0007"
    assert set(md["label"].unique().to_list()) == {0, 1}
    rates = md.group_by("region").agg(pl.col("label").mean().alias("rate")).sort("region")
    assert rates.height >= 6
    assert rates["region"].to_list()[:6] == [f"region-{c}" for c in "abcdef"]
    assert rates["rate"].n_unique() == rates.height, rates


def test_synthetic_is_deterministic_in_seed() -> None:
    a, b = SyntheticSegmentation(seed=3), SyntheticSegmentation(seed=3)
    assert a.metadata().equals(b.metadata())
    assert not a.metadata().equals(SyntheticSegmentation(seed=4).metadata())
    (img_a, mask_a), (img_b, mask_b) = a.sample(5), b.sample(5)
    assert img_a.dtype.name == "float32" and img_a.shape == (1, 16, 16)
    assert (img_a == img_b).all() and (mask_a == mask_b).all()


def test_synthetic_positive_samples_have_masks() -> None:
    task = SyntheticSegmentation()
    md = task.metadata()
    for i, label in enumerate(md["label"].to_list()[:24]):
        assert (task.sample(i)[1].sum() > 0) == bool(label)


def test_synthetic_import_does_not_import_torch() -> None:
    code = "import sys, nestling.tasks.synthetic, nestling.tasks.sleep; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_default_hparams_and_unknown_key() -> None:
    task = SyntheticSegmentation()
    assert task.default_hparams() == {"lr": 1e-2, "base_channels": 8, "batch_size": 16, "depth": 2}
    assert set(SleepTask().default_hparams()) == {"sleep_s", "value", "lr", "fail_if_val_contains"}
    with pytest.raises(UsageError, match="base_channels"):
        task.build_model({"bogus": 1})


def test_builtin_names_load() -> None:
    assert isinstance(load_task("synthetic-segmentation"), SyntheticSegmentation)
    assert isinstance(load_task("sleep"), SleepTask)


def test_synthetic_fit_logs_exactly_the_metrics() -> None:
    task = SyntheticSegmentation()
    split = _split(task.metadata()["sample_id"].to_list(), 70, 20)
    trainer = _fit(task.build_model({"depth": 3}), task.build_datamodule({"batch_size": 32}, split))
    assert set(trainer.callback_metrics) == METRICS
    assert all(math.isfinite(float(v)) for v in trainer.callback_metrics.values())


def test_synthetic_empty_test_split() -> None:
    task = SyntheticSegmentation(n_samples=24)
    split = _split(task.metadata()["sample_id"].to_list(), 16, 8)
    assert split.test == []
    dm = task.build_datamodule({}, split)
    dm.setup("fit")
    assert len(dm.test_dataloader()) == 0


def test_sleep_fit_takes_sleep_s_and_logs_value(monkeypatch: pytest.MonkeyPatch) -> None:
    task = SleepTask()
    hp = {"sleep_s": 0.2, "value": 0.7}
    split = _split(task.metadata()["sample_id"].to_list(), 24, 8)
    slept: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: slept.append(s) or real_sleep(0))
    trainer = _fit(task.build_model(hp), task.build_datamodule(hp, split), epochs=2)
    assert slept.count(0.2) == 2  # sleep_s once per epoch, not per step
    metrics = trainer.callback_metrics
    assert float(metrics["val/JaccardIndex"]) == pytest.approx(0.7)
    assert float(metrics["val/Recall"]) == pytest.approx(0.7)
    assert {"train/loss", "val/loss"} <= set(metrics)


def test_sleep_injected_failure() -> None:
    task = SleepTask()
    ids = task.metadata()["sample_id"].to_list()
    split = _split(ids, 24, 8)
    hp = {"sleep_s": 0.0, "fail_if_val_contains": split.val[0]}
    with pytest.raises(RuntimeError, match=f"injected failure: sample {split.val[0]} in val"):
        _fit(task.build_model(hp), task.build_datamodule(hp, split))
    # The same sample in train is not a failure.
    hp_train = {"sleep_s": 0.0, "fail_if_val_contains": split.train[0]}
    _fit(task.build_model(hp_train), task.build_datamodule(hp_train, split))
