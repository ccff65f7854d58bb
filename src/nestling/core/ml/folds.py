"""Test split and fold assignment from a task's metadata table.

The planner calls `make_splits` once per cross-validation; every run of that cv gets one of the returned `Split`s.
The splits depend only on the arguments (metadata, method, seed, ...), so a resumed or re-planned cv trains on
exactly the same samples, and sample ids keep the metadata's order inside every list.

Two steps, in this order:

1. The test split (`test_split`) removes samples that no fold will ever train or validate on:
   `none` (empty test set), `random` (a `test_fraction` of the samples, stratified by `label` when that column
   exists) or `region` (every sample of the regions named in `test_regions`).
2. The fold method (`fold_method`) splits what is left into train/val per fold:
   `kfold`, `stratified` (by `label`), `region` (whole regions per val fold), `region-stratified` (whole regions
   per val fold, label mix kept alike across folds), `shuffle` (`n_folds` independent random splits, val share
   `1 / n_folds`) or `none` (one split, train == val == everything left).

Why `region-stratified` goes best with a `random` test split
-------------------------------------------------------------
With `region-stratified`, each fold already validates on regions that its training set never saw, so the cv score
measures generalisation to unseen regions. The test split then need not remove whole regions as well: a `random`
test split keeps every region available for training (more data-efficient, which matters when there are few
regions), while the stratified group folds still answer "how well does it do on a new region?". A `region` test
split on top would throw whole regions out of every fold for a question the folds already answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import polars as pl

from nestling.core.errors import UsageError
from nestling.core.ml.task import Split
from nestling.core.options.choices import check_choice

FOLD_METHODS = ("kfold", "stratified", "shuffle", "region", "region-stratified", "none")
TEST_SPLITS = ("none", "random", "region")

_REGION_METHODS = ("region", "region-stratified")
_LABEL_METHODS = ("stratified", "region-stratified")

# (train positions, val positions), both into the array of samples left for folds.
_Fold = tuple[np.ndarray, np.ndarray]


def make_splits(
    metadata: pl.DataFrame,
    *,
    fold_method: str = "kfold",
    n_folds: int = 5,
    fold_seed: int = 42,
    test_split: str = "none",
    test_fraction: float = 0.2,
    test_regions: list[str] | None = None,
) -> list[Split]:
    """One Split per fold (exactly one for `fold_method="none"`); test samples are never in train or val."""
    check_choice("fold_method", fold_method, FOLD_METHODS)
    check_choice("test_split", test_split, TEST_SPLITS)
    ids = _column(metadata, "sample_id", why="every sample needs an id")
    if not ids:
        raise UsageError("the task's metadata has no samples; Task.metadata() must return at least one row")
    duplicates = sorted(i for i, c in Counter(ids).items() if c > 1)
    if duplicates:
        raise UsageError(
            f"the task's metadata repeats sample_id {duplicates[0]!r} ({len(duplicates)} ids appear more than once); "
            "make sample_id unique in Task.metadata()"
        )

    is_test = _test_mask(metadata, test_split, test_fraction, test_regions, fold_seed)
    test = [ids[i] for i in np.flatnonzero(is_test)]
    rest = np.flatnonzero(~is_test)
    rest_ids = [ids[i] for i in rest]
    if not rest_ids:
        hint = "a smaller --test_fraction" if test_split == "random" else "fewer --test_regions"
        raise UsageError(
            f"--test_split {test_split} leaves no samples for the folds; use {hint} or --test_split none"
        )
    if fold_method == "none":
        return [Split(train=list(rest_ids), val=list(rest_ids), test=test)]

    folds = _folds(metadata[rest.tolist()], fold_method, n_folds, fold_seed)
    return [
        Split(
            train=[rest_ids[i] for i in np.sort(train)],
            val=[rest_ids[i] for i in np.sort(val)],
            test=list(test),
        )
        for train, val in folds
    ]


def _column(metadata: pl.DataFrame, name: str, *, why: str) -> list[str]:
    """Values of one metadata column as str (labels may be any hashable); missing column or nulls are usage errors."""
    if name not in metadata.columns:
        raise UsageError(
            f"the task's metadata has no {name!r} column ({why}); add it in Task.metadata() "
            f"(columns now: {', '.join(metadata.columns) or 'none'})"
        )
    column = metadata.get_column(name)
    if column.null_count():
        raise UsageError(
            f"the task's metadata column {name!r} has {column.null_count()} missing values; "
            "fill them in Task.metadata()"
        )
    return [str(v) for v in column.to_list()]


def _test_mask(
    metadata: pl.DataFrame,
    test_split: str,
    test_fraction: float,
    test_regions: list[str] | None,
    seed: int,
) -> np.ndarray:
    """Boolean mask over metadata rows: True where the sample is held out for testing."""
    n = metadata.height
    if test_regions and test_split != "region":
        raise UsageError(
            f"--test_regions {' '.join(test_regions)} is only used with --test_split region, "
            f"not --test_split {test_split}; drop --test_regions or use --test_split region"
        )
    if test_split == "none":
        return np.zeros(n, dtype=bool)
    if test_split == "random":
        from sklearn.model_selection import train_test_split

        if not 0 < test_fraction < 1:
            raise UsageError(
                f"--test_fraction {test_fraction} is not between 0 and 1 (exclusive); use e.g. --test_fraction 0.2"
            )
        labels = (
            _column(metadata, "label", why="stratifies the random test split")
            if "label" in metadata.columns
            else None
        )
        try:
            _, test_idx = train_test_split(
                np.arange(n), test_size=test_fraction, random_state=seed, stratify=labels
            )
        except ValueError as exc:
            hint = " (stratified by the 'label' column)" if labels is not None else ""
            raise UsageError(
                f"--test_split random with --test_fraction {test_fraction} on {n} samples{hint} fails: {exc}; "
                "use another --test_fraction or --test_split none"
            ) from exc
        mask = np.zeros(n, dtype=bool)
        mask[test_idx] = True
        return mask
    # region
    if not test_regions:
        raise UsageError(
            "--test_split region needs --test_regions; name the regions to hold out, e.g. --test_regions A B"
        )
    regions = np.array(_column(metadata, "region", why="--test_split region holds out whole regions"))
    known = sorted(set(regions.tolist()))
    unknown = [r for r in test_regions if r not in known]
    if unknown:
        raise UsageError(
            f"--test_regions {' '.join(unknown)} not in the metadata; use some of {', '.join(known)}"
        )
    return np.isin(regions, list(test_regions))


def _folds(rest: pl.DataFrame, method: str, n_folds: int, seed: int) -> list[_Fold]:
    """Train/val positions per fold over `rest`, the samples the test split left."""
    n = rest.height
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise UsageError(
            f"--n_folds {n_folds} is too few for --fold_method {method}; use --n_folds 2 or more, "
            "or --fold_method none for a single split"
        )
    if n_folds > n:
        raise UsageError(
            f"--n_folds {n_folds} is more than the {n} samples left for folds (after the test split); "
            f"use --n_folds {n} or fewer"
        )
    labels = (
        _column(rest, "label", why=f"--fold_method {method} stratifies by it")
        if method in _LABEL_METHODS
        else None
    )
    regions = None
    if method in _REGION_METHODS:
        regions = np.array(
            _column(rest, "region", why=f"--fold_method {method} keeps whole regions together")
        )
        n_regions = len(set(regions.tolist()))
        if n_folds > n_regions:
            raise UsageError(
                f"--n_folds {n_folds} is more than the {n_regions} regions left for folds (after the test split); "
                f"use --n_folds {n_regions} or fewer, or --fold_method kfold"
            )
    if labels is not None:  # a label with fewer samples than folds cannot be in every val fold
        _check_class_sizes(labels, n_folds, method)

    if method == "kfold":
        return _kfold(n, n_folds, seed)
    from sklearn.model_selection import (  # 1-2 s to import: only the methods that need it pay for it
        ShuffleSplit,
        StratifiedGroupKFold,
        StratifiedKFold,
        StratifiedShuffleSplit,
    )

    x = np.zeros((n, 1))
    if method == "stratified":
        return list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x, labels))
    if method == "region" and regions is not None:
        return _region_folds(regions, n_folds, seed)
    if method == "region-stratified" and regions is not None and labels is not None:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        folds = list(splitter.split(x, labels, groups=regions))
        _check_every_fold_has_all_labels(folds, labels, n_folds)
        return folds
    # shuffle (the only method left): independent random splits, stratified when a label keeps the mix alike
    has_label = "label" in rest.columns
    try:
        if has_label:
            y = _column(rest, "label", why="stratifies --fold_method shuffle")
            splitter_s = StratifiedShuffleSplit(n_splits=n_folds, test_size=1 / n_folds, random_state=seed)
            return list(splitter_s.split(x, y))
        return list(ShuffleSplit(n_splits=n_folds, test_size=1 / n_folds, random_state=seed).split(x))
    except ValueError as exc:
        raise UsageError(
            f"--fold_method shuffle with --n_folds {n_folds} on {n} samples fails: {exc}; "
            "use fewer --n_folds or --fold_method kfold"
        ) from exc


def _kfold(n: int, n_folds: int, seed: int) -> list[_Fold]:
    """Exactly sklearn's KFold(n_folds, shuffle=True, random_state=seed), without importing scikit-learn.

    The default fold method is on the path of every `nestling cv` and `tune`; importing scikit-learn (and scipy)
    for it would cost more than planning 10,000 runs. tests/unit/core/test_folds.py checks the splits are sklearn's.
    """
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    folds = []
    start = 0
    for size in sizes:
        val: np.ndarray = np.zeros(n, dtype=bool)
        val[order[start : start + size]] = True
        folds.append((np.flatnonzero(~val), np.flatnonzero(val)))
        start += size
    return folds


def _check_class_sizes(labels: Iterable[str], n_folds: int, method: str) -> None:
    """StratifiedKFold only warns when a class cannot reach every fold; a fold without it is a silent bad score."""
    counts = Counter(labels)
    label, count = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if count < n_folds:
        raise UsageError(
            f"--n_folds {n_folds} is more than the {count} samples of label {label!r} left for folds; "
            f"use --n_folds {count} or fewer, or --fold_method kfold (with --fold_method {method} "
            "every fold needs every label)"
        )


def _region_folds(regions: np.ndarray, n_folds: int, seed: int) -> list[_Fold]:
    """Seeded GroupKFold: regions in a seeded random order, each into the fold with the fewest samples so far.

    sklearn's GroupKFold ignores the seed (or, with shuffle, ignores region sizes, and only from 1.6 on); this keeps
    folds balanced by sample count, lets `fold_seed` choose which regions share a fold, and does not vary with the
    installed sklearn.
    """
    unique, inverse, counts = np.unique(regions, return_inverse=True, return_counts=True)
    load: np.ndarray = np.zeros(n_folds, dtype=np.int64)
    fold_of: np.ndarray = np.empty(len(unique), dtype=np.int64)
    for group in np.random.default_rng(seed).permutation(len(unique)):
        # the first n_folds regions fill the n_folds empty folds, so no fold stays empty
        fold = int(np.argmin(load))
        fold_of[group] = fold
        load[fold] += counts[group]
    sample_fold = fold_of[inverse.reshape(-1)]
    return [(np.flatnonzero(sample_fold != f), np.flatnonzero(sample_fold == f)) for f in range(n_folds)]


def _check_every_fold_has_all_labels(folds: list[_Fold], labels: list[str], n_folds: int) -> None:
    """Whole regions per fold can leave a label out of a fold; its val score would then be meaningless."""
    y = np.array(labels)
    every = sorted(set(labels))
    for index, (train, val) in enumerate(folds):
        for part, positions in (("val", val), ("train", train)):
            missing = sorted(set(every) - set(y[positions].tolist()))
            if missing:
                raise UsageError(
                    f"--fold_method region-stratified with --n_folds {n_folds} gives fold {index} no "
                    f"{part} samples with label {', '.join(map(repr, missing))} (every fold needs every label); "
                    "use fewer --n_folds, or --fold_method stratified"
                )
