"""The report's section on the choice of the winner (issue 25 #5): its p_best and the bootstrap optimism of its cv
score, as the collector computed them; a real plan and the real collector, run results written by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_p_best import CLOSE, _tune

from nestling.core.ml.bootstrap import bootstrap_selection
from nestling.read.collect import collect, ranked
from nestling.read.report import compose
from nestling.read.report.html import num
from nestling.read.selection import fold_means


def test_the_tune_page_says_how_sure_and_how_optimistic_the_choice_is(tmp_path: Path) -> None:
    root = _tune(tmp_path, CLOSE)
    collected = collect(root)
    winner = ranked(collected.cvs)[0]
    racing = [cv for cv in collected.cvs if not math.isnan(cv.p_best)]
    again = bootstrap_selection([list(fold_means(cv).values()) for cv in racing], seed=0)  # --tune_seed 0
    assert collected.optimism == pytest.approx(again.optimism) and collected.optimism > 0  # close leaders: optimistic
    page = compose.build_page(root, collected)
    (section,) = [s for s in page.sections if s.title.startswith("Choosing the winner")]
    assert f"{winner.cv_name} is the best of the 3 complete, stable trials in {winner.p_best:.0%}" in section.body
    assert f"by about {num(collected.optimism)}" in section.body
    assert f"corrected, {num(winner.score - collected.optimism)}" in section.body
    if winner.p_best < 0.5:
        assert "The choice is uncertain" in section.body
