"""How the summary tables name cvs and runs (issue 16: names cut to `mega-pot…` hid the part that matters)."""

from __future__ import annotations

from nestling.read.summary import short_name


def test_a_name_is_shown_by_what_follows_its_parent() -> None:
    assert short_name("mega-potato-tune-cv12", "mega-potato-tune") == "…-cv12"
    assert short_name("cv1-run-f0s42", "cv1") == "…-run-f0s42"


def test_a_long_name_without_its_parent_is_cut_from_the_middle() -> None:
    name = "a-very-long-prefix-that-goes-on-and-on-cv12"
    short = short_name(name, "other", width=20)
    assert len(short) == 20
    assert short.startswith("a-very-lo") and short.endswith("on-and-on-cv12"[-10:]) and "…" in short
    assert short_name("short", None) == "short"


def test_counts_are_plural_only_when_they_are_not_one() -> None:
    from pathlib import Path

    from nestling.launch.local import LocalLauncher
    from nestling.plan.model import WorkUnit

    one = LocalLauncher([None]).describe(Path("x"), [WorkUnit(0, ["a"])], "run x")
    assert one == "dry run: run x: 1 run in 1 work unit on the local launcher"
    two = LocalLauncher([None]).describe(Path("x"), [WorkUnit(0, ["a", "b"]), WorkUnit(1, ["c"])], "cv x")
    assert two == "dry run: cv x: 3 runs in 2 work units on the local launcher"
