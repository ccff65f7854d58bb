"""Report: `nestling report` of a fake tune of 1,000 runs (100 trials x 5 folds x 2 seeds), target < 5 s.

The tree is bench/collector.py's fake tune, given what a real sweep has and the collector tree lacks: three
hyperparameters that vary (one log-uniform, one a choice), and every run its own start time on one of 8 lanes (host
+ GPU), with idle gaps. Timed in-process around `write_report(tune)` (HTML + the 5 PNGs; the Vega bundle cached on
disk, as after the first report on a machine); the cold bundle (first report on a machine) and the whole command
in a fresh interpreter are timed too. The baseline is the floor: collect() of the same tree, which every report
does first.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import resource
import time
from pathlib import Path

from bench._common import Row, judge, nestling_cmd, scratch, standalone, timed
from bench.collector import make_tree

NAME = "report"
LANES = 8


def make_sweep(root: Path, n_runs: int) -> Path:
    """bench.collector's tree, with varied hyperparameters, per-run times on LANES GPUs and a space file."""
    tune = make_tree(root, n_runs, name="rep")
    rng = random.Random(7)
    plan = json.loads((tune / "plan.json").read_text())
    space = root / "space.toml"
    space.write_text('[hyperparameters]\nlr = {distribution = "loguniform", low = 1e-5, high = 1e-1}\n'
                     'value = {low = 0.0, high = 1.0}\nbatch = [16, 32, 64]\n')  # fmt: skip
    plan["options"]["tune"]["hpconfig"] = str(space)
    clock = dict.fromkeys(range(LANES), 1_767_225_600.0)  # 2026-01-01, each lane's next free time
    for cv in plan["cvs"]:
        cv["hparams"] = {**cv["hparams"], "lr": 10 ** rng.uniform(-5, -1), "batch": rng.choice([16, 32, 64])}
        for run in cv["runs"]:
            lane = min(clock, key=lambda k: clock[k])
            start = clock[lane] + (rng.expovariate(1 / 20) if rng.random() < 0.1 else 0.0)  # some idle gaps
            duration = rng.uniform(30, 300)
            clock[lane] = start + duration
            path = tune / run["dir"] / "run_result.json"
            result = json.loads(path.read_text())
            result.update(started_at=_iso(start), finished_at=_iso(start + duration), duration=duration,
                          host=f"node{lane // 4}", cuda_visible_devices=str(lane % 4), hparams=cv["hparams"])  # fmt: skip
            path.write_text(json.dumps(result))
    (tune / "plan.json").write_text(json.dumps(plan))
    return tune


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run(quick: bool = False) -> list[Row]:
    """write_report() of a 1,000-run tune (HTML + PNGs), the same without PNGs, and `nestling report` end to end."""
    from nestling.read.collect import collect
    from nestling.read.report import assets, compose

    n = 1_000
    rows: list[Row] = []
    with scratch(NAME) as tmp:
        tune = make_sweep(tmp, n)
        start = time.perf_counter()
        collect(tune, write=False)
        floor = time.perf_counter() - start
        start = time.perf_counter()
        assets.javascript_bundle()
        bundle = time.perf_counter() - start  # cold on a fresh machine, a file read after
        compose.write_report(tune, png=False)  # warm-up: Altair's first chart, vl_convert's runtime
        timings, cpu = {}, {}
        for png in (False, True):
            start, cpu0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
            compose.write_report(tune, png=png)
            timings[png], cpu[png] = time.perf_counter() - start, _cpu(resource.RUSAGE_SELF) - cpu0
        cpu0 = _cpu(resource.RUSAGE_CHILDREN)
        wall, _ = timed(nestling_cmd("report", str(tune)))
        cli_cpu = _cpu(resource.RUSAGE_CHILDREN) - cpu0
        size = (tune / "report.html").stat().st_size
    note = (f"{n // 10} trials; page {size / 1e6:.1f} MB incl. the ~0.9 MB Vega bundle; 5 PNGs; CPU time "
            f"{cpu[True]:.2f} s (wall above CPU: other processes had the cores)")  # fmt: skip
    rows.append(Row(NAME, f"{n:,} runs: HTML + PNGs, in process", timings[True], floor,
                    baseline_name="collect() only", target="< 5 s", met=judge(timings[True], "<", 5.0),
                    quick=quick, note=note))  # fmt: skip
    rows.append(Row(NAME, f"{n:,} runs: HTML only, in process", timings[False], floor,
                    baseline_name="collect() only", quick=quick, note=f"CPU time {cpu[False]:.2f} s"))  # fmt: skip
    rows.append(Row(NAME, f"{n:,} runs: `nestling report DIR`, fresh interpreter", wall, None, target="< 5 s",
                    met=judge(wall, "<", 5.0), quick=quick,
                    note=f"imports (polars, Altair, vl_convert's runtime) + the above; CPU time {cli_cpu:.2f} s"))  # fmt: skip
    rows.append(Row(NAME, "Vega bundle (first report on a machine; then cached)", bundle, None, quick=quick,
                    note="vl_convert.javascript_bundle(), kept in ~/.cache/nestling"))  # fmt: skip
    return rows


if __name__ == "__main__":
    standalone(NAME, run)
