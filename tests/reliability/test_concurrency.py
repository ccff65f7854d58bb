"""Concurrency: two collectors at once never leave a torn parquet; two tunes with one name: one wins, one exits 2.

Each race is made real: the racers meet at a barrier just before the contested step, and the test asserts that
they did (otherwise one after the other would pass as well)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
from _reliability import FIGURES, SLEEP, check_tree, fake_success, ok, planned_runs, write_tree

COLLECT_20 = "import sys; from nestling.read.collect import collect\nfor _ in range(20): collect(sys.argv[1])"
# Two collectors meet at a barrier (a file each, then wait for both) before their 20 rewrites, and print when
# their rewrites began and ended (CLOCK_MONOTONIC: one clock for every process of this machine).
RACING_COLLECT_20 = """
import os, sys, time
from pathlib import Path
from nestling.read.collect import collect
root, barrier = sys.argv[1], Path(sys.argv[2])
(barrier / str(os.getpid())).touch()
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.005)
began = time.monotonic()
for _ in range(20):
    collect(root)
print(began, time.monotonic())
"""
# Both `nestling tune` processes pass every check of the name, then meet here before either writes its plan.
RACING_WRITE_PLAN = """
import os, time
from pathlib import Path
import nestling.plan.store as store

_write_plan = store.write_plan


def write_plan(plan, splits, *rest):
    barrier = Path(os.environ["RACE_BARRIER"])
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    return _write_plan(plan, splits, *rest)


store.write_plan = write_plan
"""


def test_two_collectors_never_leave_a_torn_parquet(tmp_path: Path) -> None:
    root = write_tree("cv", [*SLEEP, "--n_folds", "5", "--n_seeds", "4", "--artifact_dir", str(tmp_path / "art"),
                             "--name", "many"])  # fmt: skip
    runs = planned_runs(root)
    for i, run in enumerate(runs):
        fake_success(run["dir"], value=0.3 + i / 100)
    ok(subprocess.run([sys.executable, "-c", COLLECT_20.replace("range(20)", "range(1)"), str(root)],
                      capture_output=True, text=True, timeout=120))  # fmt: skip
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    collectors = [
        subprocess.Popen([sys.executable, "-c", RACING_COLLECT_20, str(root), str(barrier)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
        for _ in range(2)
    ]
    FIGURES.fault("two collectors at once (2 x 20 rewrites)")
    reads, bad = 0, []
    while any(c.poll() is None for c in collectors):
        try:
            table = pl.read_parquet(root / "run_infos.parquet")
            if table.height != len(runs) or table["status"].to_list() != ["success"] * len(runs):
                bad.append(f"{table.height} rows: {table['status'].to_list()}")
        except Exception as exc:  # a torn file would land here
            bad.append(f"{type(exc).__name__}: {exc}")
        reads += 1
    spans = []
    for c in collectors:
        out, err = c.communicate()
        assert c.returncode == 0, err
        spans.append(tuple(map(float, out.split())))
    (a_began, a_ended), (b_began, b_ended) = spans
    assert a_began < b_ended and b_began < a_ended, spans  # their rewrites overlapped: a real race
    assert reads > 20 and bad == [], (reads, bad[:5])
    assert not list(root.glob(".*.tmp"))  # no temporary file left behind
    table = pl.read_parquet(root / "run_infos.parquet")
    assert sorted(table["run_id"].to_list()) == sorted(r["run_id"] for r in runs)


def test_two_tunes_with_one_name_one_wins_one_exits_2(tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_text("[hyperparameters]\nvalue = [0.4, 0.6]\n")
    art = tmp_path / "art"
    args = ["tune", *SLEEP, "--hpconfig", str(space), "--sampler", "grid", "--n_trials", "1", "--n_folds", "2",
            "--max_epochs", "1", "--hp", "sleep_s=0", "--launcher", "local", "--artifact_dir", str(art),
            "--name", "race"]  # fmt: skip
    (tmp_path / "race").mkdir()
    (tmp_path / "race" / "sitecustomize.py").write_text(RACING_WRITE_PLAN)  # imported by every Python started
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    pythonpath = os.pathsep.join(p for p in (str(tmp_path / "race"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "RACE_BARRIER": str(barrier)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "nestling.cli", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        for _ in range(2)
    ]
    FIGURES.fault("two tunes with one name at once")
    outs = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    assert len(list(barrier.iterdir())) == 2, outs  # both passed the name's checks and wrote at once: a real race
    assert sorted(rc for rc, _, _ in outs) == [0, 2], outs
    (loser,) = [err for rc, _, err in outs if rc == 2]
    lines = loser.strip().splitlines()
    assert len(lines) == 1 and "'race'" in lines[0] and "already exists" in lines[0], loser
    check_tree(art / "race", max_epochs=1)
