"""How the summary tables name cvs and runs (issue 16: names cut to `mega-pot…` hid the part that matters)."""

from __future__ import annotations

from nestling.report import short_name


def test_a_name_is_shown_by_what_follows_its_parent() -> None:
    assert short_name("mega-potato-tune-cv12", "mega-potato-tune") == "…-cv12"
    assert short_name("cv1-run-f0s42", "cv1") == "…-run-f0s42"


def test_a_long_name_without_its_parent_is_cut_from_the_middle() -> None:
    name = "a-very-long-prefix-that-goes-on-and-on-cv12"
    short = short_name(name, "other", width=20)
    assert len(short) == 20
    assert short.startswith("a-very-lo") and short.endswith("on-and-on-cv12"[-10:]) and "…" in short
    assert short_name("short", None) == "short"
