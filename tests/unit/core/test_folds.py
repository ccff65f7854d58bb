"""Properties of make_splits over several seeds and sizes, and one test per usage error."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from nestling.core.errors import UsageError
from nestling.core.ml.folds import FOLD_METHODS, TEST_SPLITS, make_splits
from nestling.core.ml.task import Split

SEEDS = range(5)
SIZES = [(60, 6), (200, 8)]
PARTITIONING = ("kfold", "stratified", "region", "region-stratified")


def metadata(
    n: int = 60, n_regions: int = 6, seed: int = 0, *, label: bool = True, region: bool = True
) -> pl.DataFrame:
    """n samples spread over n_regions regions with random binary labels (positive rate about 0.4)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {"sample_id": [f"s{i:03d}" for i in range(n)]}
    if region:
        columns["region"] = [f"r{i % n_regions}" for i in rng.permutation(n)]
    if label:
        columns["label"] = (rng.random(n) < 0.4).astype(int).tolist()
    return pl.DataFrame(columns)


def test_constants() -> None:
    assert FOLD_METHODS == ("kfold", "stratified", "shuffle", "region", "region-stratified", "none")
    assert TEST_SPLITS == ("none", "random", "region")


def _test_kwargs(test_split: str) -> dict:
    return {"test_split": test_split, "test_regions": ["r1"] if test_split == "region" else None}


@pytest.mark.parametrize("method", PARTITIONING)
@pytest.mark.parametrize("test_split", TEST_SPLITS)
@pytest.mark.parametrize(("n", "n_regions"), SIZES)
def test_partition(method: str, test_split: str, n: int, n_regions: int) -> None:
    for seed in SEEDS:
        meta = metadata(n, n_regions, seed)
        ids = meta["sample_id"].to_list()
        position = {sample: i for i, sample in enumerate(ids)}
        splits = make_splits(meta, fold_method=method, n_folds=4, fold_seed=seed, **_test_kwargs(test_split))
        assert len(splits) == 4
        test = set(splits[0].test)
        assert all(set(s.test) == test for s in splits)
        rest = set(ids) - test
        vals = [set(s.val) for s in splits]
        assert set().union(*vals) == rest
        assert sum(len(v) for v in vals) == len(rest)  # disjoint
        for s in splits:
            assert s.val and s.train
            assert set(s.train) | set(s.val) == rest
            assert not set(s.train) & set(s.val)
            assert not test & (set(s.train) | set(s.val))
            for part in (s.train, s.val, s.test):  # metadata order kept
                assert part == sorted(part, key=position.__getitem__)


@pytest.mark.parametrize("method", ["region", "region-stratified"])
@pytest.mark.parametrize(("n", "n_regions"), SIZES)
def test_region_folds_keep_regions_whole(method: str, n: int, n_regions: int) -> None:
    for seed in SEEDS:
        meta = metadata(n, n_regions, seed)
        region_of = dict(zip(meta["sample_id"], meta["region"], strict=True))
        for s in make_splits(meta, fold_method=method, n_folds=3, fold_seed=seed):
            assert not {region_of[i] for i in s.train} & {region_of[i] for i in s.val}


def test_region_fold_seed_decides_which_regions_share_a_fold() -> None:
    meta = metadata(80, 8, 0)
    region_of = dict(zip(meta["sample_id"], meta["region"], strict=True))

    def grouping(seed: int) -> set[frozenset[str]]:
        splits = make_splits(meta, fold_method="region", n_folds=4, fold_seed=seed)
        return {frozenset(region_of[i] for i in s.val) for s in splits}

    assert len({frozenset(grouping(seed)) for seed in SEEDS}) > 1


@pytest.mark.parametrize(("n", "n_regions"), SIZES)
def test_stratified_balance(n: int, n_regions: int) -> None:
    for seed in SEEDS:
        meta = metadata(n, n_regions, seed)
        positive = set(meta.filter(pl.col("label") == 1)["sample_id"])
        n_folds = 5
        for s in make_splits(meta, fold_method="stratified", n_folds=n_folds, fold_seed=seed):
            assert abs(len(positive & set(s.val)) - len(positive) / n_folds) <= 1


def test_region_stratified_every_fold_has_both_labels() -> None:
    for seed in SEEDS:
        meta = metadata(200, 8, seed)
        label_of = dict(zip(meta["sample_id"], meta["label"], strict=True))
        for s in make_splits(
            meta, fold_method="region-stratified", n_folds=4, fold_seed=seed, test_split="random"
        ):
            assert {label_of[i] for i in s.val} == {0, 1}
            assert {label_of[i] for i in s.train} == {0, 1}


@pytest.mark.parametrize("method", [m for m in FOLD_METHODS if m != "none"])
@pytest.mark.parametrize("test_split", TEST_SPLITS)
def test_deterministic(method: str, test_split: str) -> None:
    meta = metadata(60, 6, 3)
    kwargs = {"fold_method": method, "n_folds": 3, "fold_seed": 7, **_test_kwargs(test_split)}
    first = make_splits(meta, **kwargs)
    assert make_splits(meta, **kwargs) == first
    assert make_splits(meta.clone(), **kwargs) == first


@pytest.mark.parametrize("method", ["kfold", "stratified", "shuffle"])
def test_fold_seed_changes_folds(method: str) -> None:
    meta = metadata(60, 6, 0)
    assert make_splits(meta, fold_method=method, fold_seed=0) != make_splits(
        meta, fold_method=method, fold_seed=1
    )


def test_random_test_split_is_stratified_and_sized() -> None:
    for seed in SEEDS:
        meta = metadata(200, 8, seed)
        positive = set(meta.filter(pl.col("label") == 1)["sample_id"])
        (split,) = make_splits(
            meta, fold_method="none", fold_seed=seed, test_split="random", test_fraction=0.25
        )
        assert len(split.test) == 50
        assert abs(len(positive & set(split.test)) - len(positive) * 0.25) <= 1
    meta = metadata(60, 6, 0, label=False)
    (split,) = make_splits(meta, fold_method="none", test_split="random", test_fraction=0.2)
    assert len(split.test) == 12


def test_region_test_split_holds_out_exactly_those_regions() -> None:
    meta = metadata(60, 6, 0)
    splits = make_splits(
        meta, fold_method="region", n_folds=4, test_split="region", test_regions=["r0", "r5"]
    )
    expected = meta.filter(pl.col("region").is_in(["r0", "r5"]))["sample_id"].to_list()
    assert all(s.test == expected for s in splits)


def test_none_method() -> None:
    meta = metadata(60, 6, 0)
    ids = meta["sample_id"].to_list()
    assert make_splits(meta, fold_method="none") == [Split(train=ids, val=ids, test=[])]
    (split,) = make_splits(meta, fold_method="none", test_split="region", test_regions=["r2"])
    rest = meta.filter(pl.col("region") != "r2")["sample_id"].to_list()
    assert split.train == split.val == rest
    assert set(split.test).isdisjoint(rest)


def test_none_method_needs_only_sample_id() -> None:
    meta = pl.DataFrame({"sample_id": ["a", "b"]})
    assert make_splits(meta, fold_method="none") == [Split(train=["a", "b"], val=["a", "b"], test=[])]


@pytest.mark.parametrize(("n", "n_regions"), SIZES)
@pytest.mark.parametrize("label", [True, False])
def test_shuffle(n: int, n_regions: int, label: bool) -> None:
    for seed in SEEDS:
        meta = metadata(n, n_regions, seed, label=label)
        splits = make_splits(meta, fold_method="shuffle", n_folds=4, fold_seed=seed)
        assert len(splits) == 4
        for s in splits:
            assert abs(len(s.val) - round(n / 4)) <= 1
            assert len(s.train) + len(s.val) == n
            assert not set(s.train) & set(s.val)
        assert len({tuple(s.val) for s in splits}) == 4


def test_labels_of_any_hashable_type() -> None:
    meta = metadata(60, 6, 0).with_columns(pl.col("label").cast(pl.Boolean))
    splits = make_splits(meta, fold_method="stratified", n_folds=3)
    assert len(splits) == 3


@pytest.mark.parametrize(
    ("meta", "kwargs", "needle"),
    [
        (metadata(), {"fold_method": "bogus"}, "bogus"),
        (metadata(), {"test_split": "bogus"}, "bogus"),
        (metadata(), {"n_folds": 1}, "--n_folds 1"),
        (metadata(), {"fold_method": "shuffle", "n_folds": 0}, "--n_folds 0"),
        (metadata(10, 6), {"n_folds": 11}, "--n_folds 11"),
        (metadata(60, 6), {"fold_method": "region", "n_folds": 8}, "--n_folds 8"),
        (
            metadata(60, 6),
            {
                "fold_method": "region-stratified",
                "n_folds": 6,
                "test_split": "region",
                "test_regions": ["r0"],
            },
            "5 regions",
        ),
        (
            pl.DataFrame({"sample_id": [f"s{i}" for i in range(10)], "label": [1, 1] + [0] * 8}),
            {"fold_method": "stratified", "n_folds": 3},
            "--n_folds 3",
        ),
        (
            # a label smaller than --n_folds: sklearn's StratifiedGroupKFold raised a bare ValueError here
            pl.DataFrame({"sample_id": [f"s{i}" for i in range(6)], "region": [f"r{i}" for i in range(6)],
                          "label": [0, 0, 0, 1, 1, 1]}),
            {"fold_method": "region-stratified", "n_folds": 4},
            "--n_folds 4 is more than the 3 samples of label '0'",
        ),  # fmt: skip
        (metadata(label=False), {"fold_method": "stratified"}, "'label'"),
        (metadata(label=False), {"fold_method": "region-stratified"}, "'label'"),
        (metadata(region=False), {"fold_method": "region"}, "'region'"),
        (metadata(region=False), {"fold_method": "region-stratified"}, "'region'"),
        (metadata(region=False), {"test_split": "region", "test_regions": ["r0"]}, "'region'"),
        (
            # r0 and r1 hold every positive: with 4 folds some val fold has none
            pl.DataFrame(
                {
                    "sample_id": [f"s{i}" for i in range(40)],
                    "region": [f"r{i // 5}" for i in range(40)],
                    "label": [1] * 10 + [0] * 30,
                }
            ),
            {"fold_method": "region-stratified", "n_folds": 4},
            "val samples with label '1'",
        ),
        (metadata(), {"test_split": "region", "test_regions": ["r0", "nowhere"]}, "nowhere"),
        (metadata(), {"test_split": "region"}, "--test_regions"),
        (metadata(), {"test_split": "random", "test_regions": ["r0"]}, "--test_regions r0"),
        (metadata(), {"test_split": "random", "test_fraction": 0.0}, "--test_fraction 0.0"),
        (metadata(), {"test_split": "random", "test_fraction": 1.5}, "--test_fraction 1.5"),
        (
            metadata(60, 2),
            {"fold_method": "none", "test_split": "region", "test_regions": ["r0", "r1"]},
            "--test_split region leaves no samples",
        ),
        (metadata(20, 6), {"test_split": "random", "test_fraction": 0.9, "n_folds": 5}, "--n_folds 5"),
        (pl.DataFrame({"id": ["a"]}), {}, "'sample_id'"),
        (pl.DataFrame({"sample_id": ["a", "a", "b"]}), {"fold_method": "none"}, "'a'"),
        (
            pl.DataFrame({"sample_id": ["a", "b"], "label": [1, None]}),
            {"fold_method": "stratified", "n_folds": 2},
            "missing",
        ),
        (pl.DataFrame({"sample_id": []}, schema={"sample_id": pl.String}), {}, "no samples"),
    ],
)
def test_usage_errors(meta: pl.DataFrame, kwargs: dict, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        make_splits(meta, **kwargs)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize("n", [5, 7, 10, 31, 100])
@pytest.mark.parametrize("n_folds", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 42, 12345])
def test_kfold_is_sklearns_kfold_without_importing_it(n: int, n_folds: int, seed: int) -> None:
    from sklearn.model_selection import KFold

    from nestling.core.ml.folds import _kfold

    ours = _kfold(n, n_folds, seed)
    theirs = list(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros((n, 1))))
    assert len(ours) == len(theirs) == n_folds
    for (train, val), (train_sk, val_sk) in zip(ours, theirs, strict=True):
        assert train.tolist() == train_sk.tolist()
        assert val.tolist() == val_sk.tolist()


def test_default_fold_method_does_not_import_sklearn() -> None:
    import subprocess
    import sys

    code = (
        "import sys, polars as pl; from nestling.core.ml.folds import make_splits; "
        "make_splits(pl.DataFrame({'sample_id': [str(i) for i in range(20)]}), n_folds=4); "
        "print('sklearn' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
