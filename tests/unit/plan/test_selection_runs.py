"""A tune's runs only select a configuration (issue 21, per run against the peer script): no test pass after fit and
no best.ckpt unless --score_epoch best reads it; a cv's runs (and a single run, a retrain) are evaluations. The real
path: tests/e2e/test_retrain.py (a tune with --retrain: untested trials, a tested retrain)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestling.core.options.config import parse_config
from nestling.plan.preflight import prepare
from nestling.plan.specs import run_specs


@pytest.mark.parametrize(
    ("kind", "extra", "tested", "best"),
    [("tune", [], False, False), ("tune", ["--score_epoch", "best"], False, True), ("cv", [], True, True),
     ("run", [], True, True)],
)  # fmt: skip
def test_which_runs_test_and_keep_best(tmp_path: Path, kind: str, extra: list[str], tested: bool, best: bool) -> None:
    space = tmp_path / "space.toml"
    space.write_text("[hyperparameters]\nvalue = [0.2, 0.8]\n")
    argv = ["--task", "sleep", "--n_folds", "2", "--n_seeds", "1", "--test_split", "random", "--accelerator", "cpu",
            "--hpconfig", str(space), "--sampler", "grid", "--artifact_dir", str(tmp_path), *extra]  # fmt: skip
    plan = prepare(parse_config(argv), kind).plan
    assert {(s.test, s.keep_best) for s in run_specs(plan)} == {(tested, best)}
