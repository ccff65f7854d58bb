"""Resume against a planned tree (nothing trained): which option changes are found, refused, or forced into the
rerun specs. Runs through `nestling.commands.cli.main` in-process where the answer is a refusal, and through
`resume.prepare_resume` (no launching) where the answer is what the reruns will run with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestling.commands.cli import main
from nestling.commands.resume import Resumption, prepare_resume
from nestling.core.options.config import explicit_options, given_options, parse_config
from nestling.core.tree import naming
from nestling.plan.preflight import prepare
from nestling.plan.store import load_plan, write_plan

SLEEP = ["--task", "sleep", "--accelerator", "cpu", "--n_seeds", "1", "--quiet", "--launcher", "local"]


def planned(tmp_path: Path, *extra: str) -> Path:
    art = tmp_path / "art"
    args = [*SLEEP, "--n_folds", "2", "--max_epochs", "1", "--artifact_dir", str(art), "--name", "c", *extra]
    prepared = prepare(parse_config(args), "cv")
    write_plan(prepared.plan, prepared.splits)
    return art


def resume_args(art: Path, *extra: str) -> list[str]:
    return [*SLEEP, "--resume", "c", "--artifact_dir", str(art), *extra]


def test_explicit_options() -> None:
    assert explicit_options(["--max_epochs", "10", "--devices=2", "--quiet", "--hp", "a=1", "x", "--", "--fold"]) == {
        "max_epochs", "devices", "quiet", "hp"
    }  # fmt: skip


def test_an_option_set_back_to_its_default_is_a_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Planned with --max_epochs 1; --max_epochs 10 (the default) on resume is refused, not silently dropped."""
    art = planned(tmp_path)
    assert main(["cv", *resume_args(art, "--max_epochs", "10")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max_epochs 1 -> 10" in err[0] and "--force" in err[0], err


def test_force_applies_an_option_set_back_to_its_default(tmp_path: Path) -> None:
    art = planned(tmp_path)
    args = resume_args(art, "--max_epochs", "10", "--force")
    resumed = prepare_resume("cv", parse_config(args), explicit_options(args))
    assert resumed.changes == ["--max_epochs 1 -> 10"]
    assert resumed.record["forced_changes"] == ["--max_epochs 1 -> 10"]
    specs = [json.loads(naming.RunPaths(r.dir).spec.read_text()) for r in load_plan(resumed.root).runs]
    assert [s["max_epochs"] for s in specs] == [10, 10]


def test_force_applies_every_reported_device_option(tmp_path: Path) -> None:
    """--strategy ddp --devices 2 reach the rerun specs through the planning device rule (ddp_fork, 2 devices)."""
    art = planned(tmp_path)
    args = resume_args(art, "--strategy", "ddp", "--devices", "2", "--max_epochs", "2", "--force")
    resumed = prepare_resume("cv", parse_config(args), explicit_options(args))
    assert sorted(resumed.changes) == sorted(
        ["--strategy 'auto' -> 'ddp'", "--devices ['auto'] -> ['2']", "--max_epochs 1 -> 2"]
    )
    assert resumed.total == 2
    for run in load_plan(resumed.root).runs:
        spec = json.loads(naming.RunPaths(run.dir).spec.read_text())
        assert (spec["strategy"], spec["devices"], spec["max_epochs"]) == ("ddp_fork", 2, 2)
    assert (resumed.config.device.strategy, resumed.config.device.devices) == ("ddp", ["2"])


@pytest.mark.parametrize(
    ("extra", "named"),
    [(["--n_folds", "3"], "--n_folds 2 -> 3"), (["--hp", "value=0.9"], "--hp value None -> 0.9"),
     (["--score_epoch", "best"], "--score_epoch 'last' -> 'best'")],
)  # fmt: skip
def test_force_refuses_what_it_cannot_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], named: str
) -> None:
    """An option that defines the plan (folds, hyperparameters, which epoch's metrics a run records) cannot reach
    the reruns: refused, even with --force, instead of being reported as forced and ignored; nothing in the tree
    changes. (The scoring metrics and their combination can: a forced resume rescores, tests/e2e/test_rescoring.py.)"""
    art = planned(tmp_path)
    before = sorted(p.relative_to(art) for p in art.rglob("*"))
    assert main(["cv", *resume_args(art, *extra, "--force")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "--force cannot" in err[0], err
    assert sorted(p.relative_to(art) for p in art.rglob("*")) == before


def test_forced_strategy_without_fork_variant_is_refused_before_anything_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = planned(tmp_path)
    before = sorted(p.relative_to(art) for p in art.rglob("*"))
    assert main(["cv", *resume_args(art, "--strategy", "fsdp", "--devices", "2", "--force")]) == 2
    assert "--strategy fsdp" in capsys.readouterr().err
    assert sorted(p.relative_to(art) for p in art.rglob("*")) == before


@pytest.mark.parametrize("kind", ["cv", "tune", "run"])
def test_a_moved_tree_gives_specs_inside_itself(tmp_path: Path, kind: str) -> None:
    """Specs read from run_specs.jsonl or from a run's run_spec.json point into the tree where they are now."""
    import shutil

    from nestling.plan.store import load_spec

    space = tmp_path / "space.toml"
    space.write_text("[hyperparameters]\nvalue = { low = 0.0, high = 1.0 }\n")
    art = tmp_path / "art"
    args = [*SLEEP, "--n_folds", "2", "--artifact_dir", str(art), "--name", "m",
            *(["--hpconfig", str(space), "--n_trials", "2"] if kind == "tune" else [])]  # fmt: skip
    prepared = prepare(parse_config(args), kind)
    write_plan(prepared.plan, prepared.splits)
    started = prepared.plan.runs[0].dir
    load_spec(started)  # this run started: it has its own run_spec.json
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.move(str(art), str(moved))
    new_root = moved / prepared.plan.root.relative_to(art)
    for run in load_plan(new_root).runs:
        spec = load_spec(run.dir)
        assert spec.run_dir == str(run.dir) and Path(spec.run_dir).is_relative_to(moved)
        assert spec.splits_file == str(new_root / naming.SPLITS) and Path(spec.splits_file).is_file()
    assert not art.exists()


def test_specs_with_absolute_paths_from_older_trees_still_load(tmp_path: Path) -> None:
    from nestling.plan.store import load_spec

    art = planned(tmp_path)
    root = art / "_cross_validations" / "c"
    lines = [json.loads(line) for line in (root / naming.RUN_SPECS).read_text().splitlines()]
    old = [{**d, "run_dir": str(root / d["run_dir"]), "splits_file": str(root / "splits.json"), "extra": {}}
           for d in lines]  # fmt: skip
    (root / naming.RUN_SPECS).write_text("".join(json.dumps(d) + "\n" for d in old))
    for data in old:
        spec = load_spec(Path(data["run_dir"]))
        assert (spec.run_dir, spec.splits_file, spec.run_id) == (data["run_dir"], data["splits_file"], data["run_id"])


SLURM_PLAN = ("--launcher", "slurm", "--partition", "gpu", "--cpus_per_task", "1", "--mem_gb", "3", "--time_min", "7",
              "--slurm_setup", "module load cuda", "--container_image", "localhost/img:1", "--container_runtime",
              "podman", "--container_env", "A=1")  # fmt: skip


def resumed_with(tmp_path: Path, *extra: str, files: dict[str, str] | None = None) -> tuple[Path, Resumption]:
    art = planned(tmp_path, *SLURM_PLAN)
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    args = ["--resume", "c", "--artifact_dir", str(art), *extra]
    return art, prepare_resume("cv", parse_config(args), given_options(args))


def test_a_resume_takes_launcher_resources_and_container_from_the_plan(tmp_path: Path) -> None:
    """Issue 21 #1: `--resume NAME` alone runs where the plan ran (the real SLURM path:
    tests/cluster/test_slurm_resume.py)."""
    _, resumed = resumed_with(tmp_path)
    launch, container = resumed.config.launch, resumed.config.container
    assert (launch.launcher, launch.partition, launch.cpus_per_task, launch.mem_gb, launch.time_min) == (
        "slurm", "gpu", 1, 3.0, 7
    )  # fmt: skip
    assert launch.slurm_setup == ["module load cuda"] and launch.resume == "c"
    assert (container.container_image, container.container_runtime, container.container_env) == (
        "localhost/img:1", "podman", ["A=1"]
    )  # fmt: skip
    assert resumed.overrides == ()
    assert resumed.where() == "resuming c: 2 runs on --launcher slurm in localhost/img:1 (as planned)"


def test_launch_options_given_on_resume_replace_the_plan_s(tmp_path: Path) -> None:
    _, resumed = resumed_with(tmp_path, "--launcher", "local", "--cpus_per_task", "4", "--container_image", "",
                              "--quiet", "--wait")  # fmt: skip
    config = resumed.config
    assert (config.launch.launcher, config.launch.cpus_per_task, config.launch.partition) == ("local", 4, "gpu")
    assert config.container.container_image == "" and config.container.container_env == ["A=1"]
    assert (config.launch.wait, config.logging.quiet) == (True, True)  # this invocation's own
    assert resumed.overrides == ("container_image", "cpus_per_task", "launcher")
    assert resumed.record["launch_overrides"] == ["container_image", "cpus_per_task", "launcher"]


def test_a_config_file_given_on_resume_counts_as_given(tmp_path: Path) -> None:
    """A key of the resume's --config file is given, even at its default value (launcher = "local")."""
    file = tmp_path / "here.toml"
    _, resumed = resumed_with(tmp_path, "--config", str(file), files={"here.toml": 'launcher = "local"\n'})
    assert resumed.config.launch.launcher == "local"
    assert resumed.config.launch.partition == "gpu"


def test_tracking_options_define_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--wandb_project on a resume used to be dropped without a word; it would split one plan over two projects.
    --wandb_mode is applied to the reruns with --force."""
    art = planned(tmp_path)
    assert main(["cv", *resume_args(art, "--wandb_project", "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--wandb_project None -> 'other'" in err[0], err
    args = resume_args(art, "--wandb_mode", "offline", "--force")
    resumed = prepare_resume("cv", parse_config(args), given_options(args))
    assert resumed.changes == ["--wandb_mode 'auto' -> 'offline'"]
    specs = [json.loads(naming.RunPaths(r.dir).spec.read_text()) for r in load_plan(resumed.root).runs]
    assert [s["wandb_mode"] for s in specs] == ["offline", "offline"]


def test_a_dry_run_resume_says_where_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = planned(tmp_path)
    run = load_plan(art / "_cross_validations" / "c").runs[0].dir
    run.mkdir(parents=True, exist_ok=True)
    (run / naming.RUN_RESULT).write_text(json.dumps({"status": "failed", "attempt": 1}))
    before = {p: p.read_bytes() for p in art.rglob("*") if p.is_file()}
    assert main(["cv", *resume_args(art, "--dry_run")]) == 0
    out = capsys.readouterr().out
    assert "resuming c: 2 runs on --launcher local (--launcher given)" in out and "dry run: cv c: 2 runs" in out
    assert {p: p.read_bytes() for p in art.rglob("*") if p.is_file()} == before  # the failed result stays


def test_detach_is_checked_against_the_plan_s_launcher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    art = planned(tmp_path, *SLURM_PLAN)
    assert main(["cv", "--resume", "c", "--artifact_dir", str(art), "--detach"]) == 2
    assert "--detach is for --launcher local; --launcher slurm" in capsys.readouterr().err
