"""Exact names and paths, run ids, name validation, seeds, and how plans are grouped into work units."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from nestling.core.errors import UsageError
from nestling.core.options.config import parse_config
from nestling.core.tree import naming
from nestling.plan.build import plan_tune, plan_untuned, seeds_for
from nestling.plan.model import Plan
from nestling.plan.specs import run_specs
from nestling.plan.units import run_dirs_per_cv, work_units

ART = Path("/art")


def test_cv_and_run_names() -> None:
    assert naming.cv_name_for("brave-otter", 0) == "brave-otter-cv0"
    assert naming.cv_name_for("t", 12) == "t-cv12"
    assert naming.run_name_for("brave-otter-cv3", 1, 42) == "brave-otter-cv3-run-f1s42"
    assert naming.run_name_for("my.cv", 0, 21) == "my.cv-run-f0s21"


def test_run_dir_of_a_tune() -> None:
    path = naming.run_dir(ART, "t-cv0-run-f1s42", "abcd1234", cv_name="t-cv0", tune_name="t")
    assert path == Path("/art/t/t-cv0/t-cv0-run-f1s42-abcd1234")
    assert naming.tune_dir(ART, "t") == Path("/art/t")
    assert naming.cv_dir(ART, "t-cv0", "t") == Path("/art/t/t-cv0")


def test_run_dir_of_a_cv() -> None:
    path = naming.run_dir(ART, "c-run-f0s21", "0123abcd", cv_name="c")
    assert path == Path("/art/_cross_validations/c/c-run-f0s21-0123abcd")
    assert naming.cv_dir(ART, "c") == Path("/art/_cross_validations/c")


def test_run_dir_of_a_single_run() -> None:
    assert naming.run_dir(ART, "r", "zz99aa00") == Path("/art/_runs/r-zz99aa00")


def test_top_dirs() -> None:
    assert naming.top_dir(ART, "tune", "t") == Path("/art/t")
    assert naming.top_dir(ART, "cv", "c") == Path("/art/_cross_validations/c")
    assert naming.top_dir(ART, "run", "r") == Path("/art/_runs")


def test_run_paths() -> None:
    p = naming.RunPaths(Path("/x/r-1"))
    assert (p.spec, p.result) == (Path("/x/r-1/run_spec.json"), Path("/x/r-1/run_result.json"))
    assert p.checkpoints == Path("/x/r-1/checkpoints")
    assert p.last_checkpoint == Path("/x/r-1/checkpoints/last.ckpt")


def test_run_id_is_8_lowercase_alphanumerics() -> None:
    ids = {naming.new_run_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[a-z0-9]{8}", i) for i in ids)


def test_run_id_reproducible_with_rng() -> None:
    a = [naming.new_run_id(random.Random(7)) for _ in range(2)]
    assert a[0] == a[1]
    assert re.fullmatch(r"[a-z0-9]{8}", a[0])


def test_generated_name_is_valid_and_reproducible() -> None:
    a = naming.generate_name(random.Random(3))
    assert a == naming.generate_name(random.Random(3))
    assert re.fullmatch(r"[a-z]+(-[a-z]+)+", a)
    assert naming.validate_name(naming.generate_name()) is not None


@pytest.mark.parametrize("name", ["my-tune_1.2", "A", "x.y", "cv-3"])
def test_valid_names(name: str) -> None:
    assert naming.validate_name(name) == name


@pytest.mark.parametrize("name", ["a/b", "..", ".", "a b", "", "a\\b", "ä", "x\n"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(UsageError, match=re.escape(repr(name))):
        naming.validate_name(name, "--name")


def test_seeds_default() -> None:
    assert seeds_for(3, []) == [42, 21, 69]
    assert seeds_for(1, []) == [42]
    assert seeds_for(2, []) == [42, 21]


def test_seeds_more_than_three_are_reproducible_and_distinct() -> None:
    five = seeds_for(5, [])
    assert five[:3] == [42, 21, 69]
    assert len(five) == 5 and len(set(five)) == 5
    assert five == seeds_for(5, [])
    assert seeds_for(8, [])[:5] == five


def test_explicit_seeds_win() -> None:
    assert seeds_for(3, [7, 8]) == [7, 8]


def config(*argv: str):
    return parse_config(["--artifact_dir", "/art", "--accelerator", "cpu", *argv])


def tune_plan(*argv: str) -> Plan:
    return plan_tune(
        config("--n_seeds", "2", *argv),
        name="t",
        trials=[{"lr": 0.1}, {"lr": 0.2}],
        n_folds=3,
        rng=random.Random(0),
    )


def test_plan_tune_names_and_dirs() -> None:
    plan = tune_plan()
    assert (plan.kind, plan.name, plan.root, plan.n_folds) == ("tune", "t", Path("/art/t"), 3)
    assert [cv.cv_name for cv in plan.cvs] == ["t-cv0", "t-cv1"]
    assert [cv.hp_index for cv in plan.cvs] == [0, 1]
    assert [cv.dir for cv in plan.cvs] == [Path("/art/t/t-cv0"), Path("/art/t/t-cv1")]
    runs = plan.cvs[1].runs
    assert [(r.fold, r.seed) for r in runs] == [(0, 42), (0, 21), (1, 42), (1, 21), (2, 42), (2, 21)]
    assert [r.run_name for r in runs[:2]] == ["t-cv1-run-f0s42", "t-cv1-run-f0s21"]
    for r in run_specs(plan):
        assert r.run_dir == f"/art/t/{r.cv_name}/{r.run_name}-{r.run_id}"
        assert r.tune_name == "t"
        assert r.splits_file == "/art/t/splits.json"
        assert re.fullmatch(r"[a-z0-9]{8}", r.run_id)
    assert {r.hparams["lr"] for r in run_specs(plan)[:6]} == {0.1}
    assert len({r.run_id for r in plan.runs}) == 12


def test_plan_single_cv_and_run() -> None:
    cv = plan_untuned("cv", config("--n_seeds", "1"), name="c", hparams={}, n_folds=2)
    assert (cv.kind, cv.root) == ("cv", Path("/art/_cross_validations/c"))
    assert [r.run_dir for r in run_specs(cv)] == [
        f"/art/_cross_validations/c/c-run-f{f}s42-{r.run_id}" for f, r in enumerate(cv.runs)
    ]
    assert all(r.tune_name is None and r.cv_name == "c" for r in run_specs(cv))
    run = plan_untuned("run", config("--fold", "1"), name="r", hparams={}, n_folds=2)
    (spec,) = run_specs(run)
    assert (spec.run_name, spec.fold, spec.seed, spec.cv_name) == ("r", 1, 42, None)
    assert spec.run_dir == f"/art/_runs/r-{spec.run_id}"
    assert run.root == Path(spec.run_dir)


def test_parallel_strategy_gives_each_run_one_device_without_ddp() -> None:
    plan = tune_plan("--strategy", "cv-parallel", "--devices", "2")
    assert {(r.strategy, r.devices) for r in run_specs(plan)} == {("auto", 1)}
    plain = tune_plan("--strategy", "ddp", "--devices", "2")
    assert {(r.strategy, r.devices) for r in run_specs(plain)} == {("ddp_fork", 2)}


def test_work_units_cv_parallel() -> None:
    plan = tune_plan()
    units = work_units(run_dirs_per_cv(plan), "cv-parallel")
    assert [u.index for u in units] == list(range(12))
    assert [u.run_dirs for u in units] == [[str(r.dir)] for r in plan.runs]


def test_work_units_runs_per_task() -> None:
    plan = tune_plan()
    dirs = [str(r.dir) for r in plan.runs]
    units = work_units(run_dirs_per_cv(plan), "cv-parallel", runs_per_task=5)
    assert [u.run_dirs for u in units] == [dirs[0:5], dirs[5:10], dirs[10:12]]
    assert [u.index for u in units] == [0, 1, 2]


def test_work_units_tune_parallel() -> None:
    plan = tune_plan()
    units = work_units(run_dirs_per_cv(plan), "tune-parallel")
    assert [u.run_dirs for u in units] == [[str(r.dir) for r in cv.runs] for cv in plan.cvs]
    assert [len(u.run_dirs) for u in units] == [6, 6]


def test_work_units_serial() -> None:
    plan = tune_plan()
    (unit,) = work_units(run_dirs_per_cv(plan), "serial")
    assert unit.index == 0
    assert unit.run_dirs == [str(r.dir) for r in plan.runs]


def test_run_dirs_per_cv() -> None:
    plan = tune_plan()
    assert run_dirs_per_cv(plan) == [[str(r.dir) for r in cv.runs] for cv in plan.cvs]
    assert [len(d) for d in run_dirs_per_cv(plan)] == [6, 6]


def test_work_units_subset_renumbers_and_drops_empty() -> None:
    plan = tune_plan()
    subset = [[], [str(r.dir) for r in plan.cvs[1].runs[:2]]]  # e.g. what resume reruns
    units = work_units(subset, "tune-parallel")
    assert [(u.index, u.run_dirs) for u in units] == [(0, subset[1])]
    assert [(u.index, u.run_dirs) for u in work_units(subset, "cv-parallel")] == [
        (0, [subset[1][0]]),
        (1, [subset[1][1]]),
    ]
    assert work_units([[], []], "serial") == []


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("ddp", "ddp_fork"),
        ("auto", "ddp_fork"),
        ("ddp_spawn", "ddp_fork"),
        ("ddp_find_unused_parameters_true", "ddp_fork_find_unused_parameters_true"),
        ("ddp_spawn_find_unused_parameters_false", "ddp_fork_find_unused_parameters_false"),
        ("ddp_fork_find_unused_parameters_true", "ddp_fork_find_unused_parameters_true"),
        ("single_device", "single_device"),
    ],
)
def test_relaunching_strategies_become_their_fork_variant(strategy: str, expected: str) -> None:
    """Several devices inside a cv/tune or a local single run: a strategy that would re-run the worker is forked."""
    plan = tune_plan("--strategy", strategy, "--devices", "2")
    assert {(r.strategy, r.devices) for r in run_specs(plan)} == {(expected, 2)}
    run = plan_untuned("run", config("--strategy", strategy, "--devices", "2"), name="r", hparams={}, n_folds=2)
    assert [(r.strategy, r.devices) for r in run_specs(run)] == [(expected, 2)]
    one = tune_plan("--strategy", strategy, "--devices", "1")
    assert {r.strategy for r in run_specs(one)} == {strategy}  # one device: nothing is launched


def test_single_run_on_slurm_keeps_its_strategy() -> None:
    """There SLURM starts one task per device and Lightning's SLURMEnvironment wires DDP: no re-launch."""
    run = plan_untuned("run", config("--strategy", "ddp", "--devices", "2", "--launcher", "slurm"), name="r", hparams={},
                   n_folds=2)  # fmt: skip
    assert [(r.strategy, r.devices) for r in run_specs(run)] == [("ddp", 2)]


def test_fork_variants_cover_lightnings_relaunching_strategies() -> None:
    from lightning.pytorch.strategies import StrategyRegistry

    from nestling.plan.specs import FORK_VARIANTS, NO_FORK_VARIANT

    names = set(StrategyRegistry)
    assert set(FORK_VARIANTS.values()) <= names
    relaunching = {n for n in names if n.startswith(("ddp", "fsdp", "deepspeed"))} - {
        n for n in names if n.startswith(("ddp_fork", "ddp_notebook"))
    }
    assert relaunching == {n for n in FORK_VARIANTS if n != "auto"} | {
        n for n in names if n.startswith(NO_FORK_VARIANT)
    }


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed_stage_2", "fsdp_cpu_offload"])
@pytest.mark.parametrize("kind", ["cv", "tune", "run"])
def test_strategies_without_fork_variant_are_refused(
    strategy: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nestling.commands.cli import main

    space = tmp_path / "space.toml"
    space.write_text("[hyperparameters]\nvalue = { low = 0.0, high = 1.0 }\n")
    art = tmp_path / "art"
    argv = [kind, "--task", "sleep", "--accelerator", "cpu", "--strategy", strategy, "--devices", "2",
            "--artifact_dir", str(art), *(["--hpconfig", str(space)] if kind == "tune" else [])]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--strategy {strategy}" in err[0] and "ddp" in err[0], err
    assert not art.exists()
