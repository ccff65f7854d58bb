"""The report's content, from hand-made trees with known numbers: tables equal the parquet, timeline utilisation,
log axes, valid Vega-Lite, escaping, later columns shown when present. The browser tests are in
tests/e2e/test_report_browser.py."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from support import tables

from nestling.commands.cli import main
from nestling.core.errors import UsageError
from nestling.core.options.config import Config
from nestling.read import collect as C
from nestling.read.report import compose as R
from nestling.read.report import page as P
from nestling.read.report import timeline as TL
from nestling.read.report import tune_page as TP
from nestling.read.report.html import num

pytestmark = pytest.mark.min_versions  # altair and vl-convert: the lowest accepted versions draw it too

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
METRICS = ["val/JaccardIndex", "val/Recall"]


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def make_tune(
    root: Path, trials: list[dict[str, Any]], runs: list[list[dict[str, Any]]], hpconfig: Path | None = None
) -> Path:
    """A tune dir in nestling's layout: trial i has hparams trials[i] and the runs runs[i], each a dict with
    fold, seed, value (its metrics), and optionally status, lane, start, duration (seconds after T0)."""
    tune = root / "t"
    tune.mkdir(parents=True)
    cvs = []
    for h, (hparams, cv_runs) in enumerate(zip(trials, runs, strict=True)):
        cv_name = f"t-cv{h}"
        planned = []
        for k, run in enumerate(cv_runs):
            run_name, run_id = f"{cv_name}-run-f{run['fold']}s{run['seed']}", f"id{h:03d}{k:03d}"
            rel = f"{cv_name}/{run_name}-{run_id}"
            planned.append({"run_name": run_name, "run_id": run_id, "fold": run["fold"], "seed": run["seed"],
                            "dir": rel})  # fmt: skip
            if run.get("status") == "missing":
                continue
            (tune / rel).mkdir(parents=True)
            failed = run.get("status") == "failed"
            start, duration = T0 + run.get("start", 10.0 * k), run.get("duration", 5.0)
            result = {
                "run_name": run_name, "run_id": run_id, "cv_name": cv_name, "tune_name": "t", "fold": run["fold"],
                "seed": run["seed"], "hparams": hparams, "status": "failed" if failed else "success",
                "error": "RuntimeError: boom <b>" if failed else None,
                "metrics": {} if failed else dict.fromkeys(METRICS, run["value"]),
                "duration": duration, "started_at": _iso(start), "finished_at": _iso(start + duration),
                "host": "h", "pid": 100 + h, "cuda_visible_devices": run.get("lane"), "attempt": 1,
            }  # fmt: skip
            (tune / rel / "run_result.json").write_text(json.dumps(result))
        cvs.append({"cv_name": cv_name, "hp_index": h, "hparams": hparams, "dir": cv_name, "runs": planned})
    folds = sorted({run["fold"] for cv_runs in runs for run in cv_runs})
    splits = [{"train": [f"s{f}{i}" for i in range(4)], "val": [f"v{f}"], "test": []} for f in folds]
    (tune / "splits.json").write_text(json.dumps(splits))  # n_val / n_train = 1/4 on every fold
    options = Config().to_dict()
    options["data"]["task"] = "sleep"
    options["cv"]["scoring_metric"] = METRICS
    options["tune"]["hpconfig"] = str(hpconfig) if hpconfig else None
    (tune / "plan.json").write_text(json.dumps({"kind": "tune", "name": "t", "n_folds": 2, "options": options,
                                                "cvs": cvs}))  # fmt: skip
    return tune


def four_runs(value: float, **extra: Any) -> list[dict[str, Any]]:
    return [{"fold": f, "seed": s, "value": value + 0.01 * f - 0.005 * (s == 21), **extra}
            for f in (0, 1) for s in (42, 21)]  # fmt: skip


@pytest.fixture
def tune(tmp_path: Path) -> Path:
    space = tmp_path / "space.toml"
    space.write_text('[hyperparameters]\nlr = {distribution = "loguniform", low = 1e-4, high = 1e-1}\n'
                     'opt = ["adam", "sgd"]\n')  # fmt: skip
    trials = [{"lr": 0.001, "opt": "adam"}, {"lr": 0.01, "opt": "sgd"}, {"lr": 0.05, "opt": "adam"},
              {"lr": 0.0002, "opt": "sgd"}]  # fmt: skip
    runs = [four_runs(0.5), four_runs(0.7), four_runs(0.9), four_runs(0.3)]
    runs[2][3] = {**runs[2][3], "status": "failed"}  # trial 2: best mean but unstable
    runs[3] = [{**r, "status": "failed"} for r in runs[3]]  # trial 3: every run failed
    return make_tune(tmp_path, trials, runs, hpconfig=space)


def test_ranked_table_equals_tune_infos_parquet(tune: Path) -> None:
    C.collect(tune)  # writes tune_infos.parquet
    page = R.write_report(tune, png=False).read_text()
    parquet = pl.read_parquet(tune / "tune_infos.parquet")
    rows = tables(page)["ranked"]
    head = [text for text, _ in rows[0]]
    assert head == ["rank", "trial", "lr", "opt", "score", "mean ± sem", "lcb", "p_best", "state", "runs",
                    "failed"]
    body = [{head[i]: cell for i, cell in enumerate(row)} for row in rows[1:]]
    assert [r["trial"][0] for r in body] == ["t-cv1", "t-cv0", "t-cv2", "t-cv3"]  # stable first, then unstable
    assert [r["state"][0] for r in body] == ["ok", "ok", "unstable", "failed"]
    for r in body:
        expected = parquet.filter(pl.col("cv_name") == r["trial"][0]).row(0, named=True)
        shown, attrs = r["score"]
        if shown == "nan":
            assert expected["score"] != expected["score"]
        else:
            assert float(attrs["data-value"]) == expected["score"]  # the exact number
            assert float(shown) == pytest.approx(expected["score"], rel=1e-5)  # the one a reader sees
        assert int(r["runs"][0]) == expected["n_runs"]
        assert int(r["failed"][0]) == expected["n_failed"]
        assert float(r["lr"][0]) == expected["lr"]
        if expected["p_best"] == expected["p_best"]:  # NaN for the trials not racing (unstable, failed)
            assert float(r["p_best"][1]["data-value"]) == expected["p_best"]
        # the spread cells show the tune table's numbers (NaN where fewer than two runs scored)
        text, spread = r["mean ± sem"]
        mean, sem, lcb = expected["run_score_mean"], expected["run_score_sem_corrected"], expected["lcb"]
        assert same(float(spread["data-value"]), mean) and same(float(spread["data-sem"]), sem), (r["trial"], spread)
        assert text == (num(mean) if math.isnan(sem) else f"{num(mean)} ± {sem:.2g}")  # sem to 2 digits, no "± nan"
        assert same(float(r["lcb"][1]["data-value"]), lcb) and r["lcb"][0] == num(lcb)
    # ... which are the run scores' mean, corrected standard error and mean - sem: t-cv1's four runs, all stable
    values = [0.7, 0.7 - 0.005, 0.71, 0.71 - 0.005]
    mean = sum(values) / 4
    sem = (sum((v - mean) ** 2 for v in values) / 3) ** 0.5 * (1 / 4 + 1 / 4) ** 0.5  # Nadeau-Bengio: 4 runs, 1/4
    spread = body[0]["mean ± sem"][1]
    assert float(spread["data-value"]) == pytest.approx(mean) and float(spread["data-sem"]) == pytest.approx(sem)
    assert float(body[0]["lcb"][1]["data-value"]) == pytest.approx(mean - sem)
    assert float(body[0]["score"][0]) == pytest.approx(0.7 + 0.005 - 0.0025)


def same(shown: float, expected: float | None) -> bool:
    """Equal numbers, or both not a number (NaN / no value)."""
    if expected is None or math.isnan(expected):
        return math.isnan(shown)
    return shown == expected


def test_tune_page_figures_are_valid_vega_lite(tune: Path) -> None:
    import altair
    from altair.utils.schemapi import validate_jsonschema

    # the Vega-Lite schema of the installed altair (v5 from altair 5.4, the lowest version accepted; v6 after)
    major = altair.SCHEMA_VERSION.split(".")[0]
    load_schema = importlib.import_module(f"altair.vegalite.{major}.schema.core").load_schema

    page = R.build_page(tune, C.collect(tune, write=False))
    keys = [f.key for f in page.figures]
    assert keys == ["score-vs-hparams", "parallel-coordinates", "top-configurations", "best-so-far", "timeline"]
    schema = load_schema()
    for fig in page.figures:
        validate_jsonschema(fig.spec, schema)  # raises on an invalid spec
    by_key = {f.key: f.spec for f in page.figures}
    lr, opt = by_key["score-vs-hparams"]["concat"]
    assert lr["encoding"]["x"]["scale"] == {"type": "log"} and lr["encoding"]["x"]["axis"]["title"] == "lr"
    assert lr["encoding"]["x"]["axis"]["values"] == [0.0003, 0.001, 0.003, 0.01, 0.03]  # round, apart (issue 21 #7)
    assert opt["encoding"]["x"]["type"] == "nominal"
    best = by_key["best-so-far"]["datasets"]["trials"]
    assert [r["best"] for r in best] == [pytest.approx(0.5025), pytest.approx(0.7025), pytest.approx(0.7025),
                                         pytest.approx(0.7025)]  # unstable and failed trials do not count
    summary = {r["trial"]: r for r in by_key["top-configurations"]["datasets"]["summary"]}
    assert set(summary) == {"t-cv0", "t-cv1", "t-cv2"}  # the failed trial has no score to show
    assert summary["t-cv2"]["n"] == 3  # the failed run is not in the mean
    values = [0.7, 0.7 - 0.005, 0.71, 0.71 - 0.005]
    mean = sum(values) / 4
    sem = (sum((v - mean) ** 2 for v in values) / 3) ** 0.5 * (1 / 4 + 1 / 4) ** 0.5  # Nadeau-Bengio: 4 runs, 1/4
    assert summary["t-cv1"]["mean"] == pytest.approx(mean) and summary["t-cv1"]["sem"] == pytest.approx(sem)


def test_timeline_lanes_gaps_and_utilisation(tmp_path: Path) -> None:
    """GPU 0 runs [0,10] and [15,25], GPU 1 runs [0,25]: busy 45 s of 2 lanes x 25 s, one 5 s gap."""
    runs = [[
        {"fold": 0, "seed": 42, "value": 0.5, "lane": "0", "start": 0.0, "duration": 10.0},
        {"fold": 1, "seed": 42, "value": 0.5, "lane": "0", "start": 15.0, "duration": 10.0},
        {"fold": 0, "seed": 21, "value": 0.5, "lane": "1", "start": 0.0, "duration": 25.0},
    ]]  # fmt: skip
    tune = make_tune(tmp_path, [{"lr": 0.1}], runs)
    collected = C.collect(tune, write=False)
    t = TL.timeline(collected.plan.runs)
    assert t.lanes == ["h GPU 0 · 80%", "h GPU 1 · 100%"]
    assert t.span_s == pytest.approx(25.0) and t.busy_s == pytest.approx(45.0)
    assert t.utilisation == pytest.approx(0.9)
    assert len(t.gaps) == 1 and t.gaps[0]["idle_s"] == pytest.approx(5.0)
    assert t.gaps[0]["lane"] == "h GPU 0 · 80%"
    assert [r["start"] for r in t.runs if r["lane"].startswith("h GPU 0")] == [T0 * 1000, (T0 + 15) * 1000]
    text = TL.timeline_section(t).body
    assert "utilisation 90%" in text and "largest 5.0 s" in text


def test_timeline_uses_the_result_mtime_for_sub_second_runs(tmp_path: Path) -> None:
    """started_at has one-second resolution; the result file's mtime, when it agrees, places short runs exactly."""
    import os

    tune = make_tune(tmp_path, [{"lr": 0.1}], [[{"fold": 0, "seed": 42, "value": 0.5, "start": 0.0, "duration": 0.25}]])
    result = next(tune.rglob("run_result.json"))
    os.utime(result, (T0 + 0.75, T0 + 0.75))  # finished_at says T0 (truncated); the file was written at T0+0.75
    (row,) = TL.timeline(C.collect(tune, write=False).plan.runs).runs
    assert row["start"] == pytest.approx((T0 + 0.5) * 1000) and row["end"] == pytest.approx((T0 + 0.75) * 1000)


def test_log_axes_from_the_space_file_or_the_span(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("hyperparameters:\n  lr: {distribution: loguniform, low: 0.001, high: 0.01}\n"
                     "  dropout: {distribution: uniform, low: 0.0001, high: 0.5}\n")  # fmt: skip
    trials = [{"lr": 0.001 * (1 + i), "wd": 10.0 ** -(i + 3), "drop": 0.1 * i, "neg": -(10.0**i), "opt": str(i),
               "fixed": 1, "dropout": 0.0001 * 10**i} for i in range(4)]  # fmt: skip
    tune = make_tune(tmp_path, trials, [four_runs(0.5) for _ in trials], hpconfig=space)
    collected = C.collect(tune, write=False)
    axes = {a.name: a for a in TP._hp_axes(collected.cvs, collected.plan)}
    assert set(axes) == {"lr", "wd", "drop", "neg", "opt", "dropout"}  # `fixed` does not vary
    assert axes["lr"].log  # the space says so, though it spans less than a decade
    assert not axes["dropout"].log  # uniform in the space, though its values span three decades (issue 21 #7)
    assert axes["wd"].log  # not in the space (its file lost it): 1e-3 .. 1e-6, three decades
    assert not axes["drop"].log and axes["drop"].numeric
    assert not axes["neg"].log  # no log axis through zero
    assert not axes["opt"].numeric


def test_page_is_self_contained_and_escapes_values(tmp_path: Path) -> None:
    evil = "</script><script>alert(1)</script>"
    tune = make_tune(tmp_path, [{"opt": evil}, {"opt": "b"}], [four_runs(0.5), four_runs(0.6, status="failed")])
    page = R.write_report(tune, png=False).read_text()
    assert "alert(1)</script>" not in page  # in tables as &lt;/script&gt;, in the specs as \u003c/script>
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page
    assert "RuntimeError: boom &lt;b&gt;" in page  # errors are shown, escaped
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"?https?:", page)  # nothing fetched
    assert page.count("<script") == 4  # error hook, Vega bundle, the specs (JSON), the embed call
    specs = json.loads(re.search(r'<script type="application/json" id="report-specs">(.*?)</script>', page,
                                 re.S).group(1))  # fmt: skip
    assert set(specs) == {"score-vs-hparams", "parallel-coordinates", "top-configurations", "best-so-far", "timeline"}
    assert evil in json.dumps(specs["score-vs-hparams"]["datasets"])


def test_columns_of_later_versions_are_shown_when_present(tune: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mean/sem/lcb per trial (variance-aware choice) and a `state` such as pruned (adaptive search)."""
    plain = C.tune_table

    def richer(cvs: list[C.CvSummary], select: str = "score") -> pl.DataFrame:
        return plain(cvs, select).with_columns(
            pl.lit(0.6).alias("mean"), pl.lit(0.05).alias("sem"), pl.lit(0.55).alias("lcb"),
            pl.when(pl.col("cv_name") == "t-cv0").then(pl.lit("pruned")).otherwise(None).alias("state"),
        )  # fmt: skip

    monkeypatch.setattr(C, "tune_table", richer)
    page = R.write_report(tune, png=False).read_text()
    rows = tables(page)["ranked"]
    head = [text for text, _ in rows[0]]
    assert head == ["rank", "trial", "lr", "opt", "score", "mean ± sem", "lcb", "p_best", "state", "runs",
                    "failed"]
    cells = {row[1][0]: {head[i]: c[0] for i, c in enumerate(row)} for row in rows[1:]}
    assert cells["t-cv0"]["state"] == "pruned" and cells["t-cv1"]["state"] == "ok"
    assert cells["t-cv1"]["mean ± sem"] == "0.6 ± 0.05" and cells["t-cv1"]["lcb"] == "0.55"


def test_retrain_test_metrics_are_shown(tune: Path) -> None:
    final = tune / "t-final"
    final.mkdir()
    pl.DataFrame({"seed": [42, 21], "test/JaccardIndex": [0.81, 0.79]}).write_parquet(final / "final_infos.parquet")
    page = R.write_report(tune, png=False).read_text()
    assert "Retrain: test metrics" in page
    rows = tables(page)["final-t-final"]
    assert [[c[0] for c in r] for r in rows] == [["seed", "test/JaccardIndex"], ["42", "0.81"], ["21", "0.79"]]


def test_cv_and_run_pages_inside_a_tune(tune: Path) -> None:
    run_dir = next(p for p in (tune / "t-cv1").iterdir() if p.name.startswith("t-cv1-run-f1s21"))
    for attempt, losses in ((1, [0.9, 0.8]), (2, [0.7])):
        log = run_dir / "logs" / f"attempt-{attempt}"
        log.mkdir(parents=True)
        lines = ["epoch,step,train/loss,val/loss"] + [f"{e},{e},{v},\n{e},{e},,{v + 0.1:.2f}"
                                                      for e, v in enumerate(losses)]  # fmt: skip
        (log / "metrics.csv").write_text("\n".join(lines) + "\n")
    collected = C.collect(tune, write=False)
    cv_page = R.build_page(tune / "t-cv1", collected)
    assert cv_page.title == "cv t-cv1 in tune t"
    assert [f.key for f in cv_page.figures] == ["metrics-by-fold", "timeline"]
    by_fold = cv_page.figures[0].spec["datasets"]["values"]
    assert {(r["metric"], r["fold"], r["seed"]) for r in by_fold} >= {("run_score", 1, 21), ("val/Recall", 0, 42)}
    run_page = R.build_page(run_dir, collected)
    assert run_page.title.startswith("run t-cv1-run-f1s21-")
    (curves,) = run_page.figures
    rows = curves.spec["datasets"]["values"]
    assert sorted((r["attempt"], r["metric"], r["step"], r["value"]) for r in rows) == sorted([
        ("1", "train/loss", 0.0, 0.9), ("1", "val/loss", 0.0, 1.0), ("1", "train/loss", 1.0, 0.8),
        ("1", "val/loss", 1.0, 0.9), ("2", "train/loss", 0.0, 0.7), ("2", "val/loss", 0.0, 0.8),
    ])  # fmt: skip
    with pytest.raises(UsageError, match="not its dir or one of its cv or run dirs"):
        R.build_page(run_dir / "logs", collected)


def test_cli_report_and_collect_report(tune: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tune), "--no_png"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {tune / 'report.html'}"
    (tune / "report.html").unlink()
    assert main(["collect", str(tune), "--quiet", "--report"]) == 0
    assert (tune / "report.html").is_file() and (tune / "tune_infos.parquet").is_file()
    assert sorted(p.name for p in (tune / "report_figures").iterdir()) == [
        "best-so-far.png", "parallel-coordinates.png", "score-vs-hparams.png", "timeline.png",
        "top-configurations.png",
    ]  # fmt: skip
    assert (tune / "report_figures" / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_and_status_import_no_plotting() -> None:
    code = ("import sys; from nestling.cli import main; main(['--help']); "
            "print('PLOT', 'altair' in sys.modules or 'vl_convert' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "report" in out and out.strip().endswith("PLOT False")


def test_collector_job_writes_the_report(tmp_path: Path) -> None:
    from nestling.launch.slurm.launcher import SlurmArrayLauncher
    from nestling.launch.slurm.resources import SlurmResources

    resources = SlurmResources(partition=None, time_min=5, cpus_per_task=1, mem_gb=1.0, gpus_per_task=0,
                               account=None, qos=None, constraint=None, array_parallelism=1, setup=[], extra={})  # fmt: skip
    launcher = SlurmArrayLauncher(resources, dry_run_folder=tmp_path)
    script = launcher._collector_script(tmp_path, tmp_path / "t", ["17"])
    assert re.search(r"-m nestling\.cli collect \S+/t --report", script), script


def test_a_failing_report_does_not_fail_the_plan(tune: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from nestling.commands import start as commands

    def broken(*args: Any, **kwargs: Any) -> Path:
        raise RuntimeError("no plots today")

    monkeypatch.setattr(commands, "write_report", broken)  # the name start.py calls
    assert commands.collect_and_report(tune, quiet=True) == 0  # some runs succeeded
    err = capsys.readouterr().err
    assert "report not written (RuntimeError: no plots today)" in err and f"nestling report {tune}" in err


def test_an_unchanged_tree_gives_the_same_files_untouched(tune: Path) -> None:
    """A second collect, or a resume with nothing to do, must not touch the tree: same bytes, same mtimes."""
    R.write_report(tune)
    files = [tune / "report.html", *sorted((tune / "report_figures").iterdir())]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    R.write_report(tune)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before
    day = dt.datetime.fromtimestamp(T0 + 30).astimezone().strftime("%Y-%m-%d")  # the last run ends at T0 + 35 s
    assert f"as of the last result {day}" in (tune / "report.html").read_text()


def test_edge_cases_still_give_a_valid_page(tmp_path: Path) -> None:
    """Every run failed; one trial without hyperparameters; runs not started yet (no results)."""
    import altair
    from altair.utils.schemapi import validate_jsonschema

    # the Vega-Lite schema of the installed altair (v5 from altair 5.4, the lowest version accepted; v6 after)
    major = altair.SCHEMA_VERSION.split(".")[0]
    load_schema = importlib.import_module(f"altair.vegalite.{major}.schema.core").load_schema

    cases = {
        "all-failed": ([{"lr": 0.1}, {"lr": 0.2}], [four_runs(0.5, status="failed"), four_runs(0.5, status="failed")]),
        "no-hparams": ([{}], [four_runs(0.5)]),
        "not-started": ([{"lr": 0.1}, {"lr": 0.2}], [four_runs(0.5, status="missing"), four_runs(0.5)]),
    }
    schema = load_schema()
    for name, (trials, runs) in cases.items():
        tune = make_tune(tmp_path / name, trials, runs)
        page = R.build_page(tune, C.collect(tune, write=False))
        for fig in page.figures:
            validate_jsonschema(fig.spec, schema)
        text = P.render(page, "")
        assert "<h1>tune t</h1>" in text, name
    assert "No trial has a score." in R.build_page(tmp_path / "all-failed" / "t",
                                                   C.collect(tmp_path / "all-failed" / "t", write=False)).subtitle


def test_a_trial_with_one_good_run_has_no_error_bar(tmp_path: Path) -> None:
    """One rule for mean ± sem (scoring.spread): with fewer than two runs the sem is NaN, shown as no bar, not as a
    bar of width 0 that would claim a perfectly reproducible score."""
    one_good = [{"fold": 0, "seed": 42, "value": 0.8}, {"fold": 1, "seed": 42, "value": 0.0, "status": "failed"}]
    tune = make_tune(tmp_path, [{"lr": 0.1}, {"lr": 0.2}], [four_runs(0.5), one_good])
    page = R.build_page(tune, C.collect(tune, write=False))
    spec = {f.key: f.spec for f in page.figures}["top-configurations"]
    summary = {r["trial"]: r for r in spec["datasets"]["summary"]}
    assert summary["t-cv1"] == {"trial": "t-cv1", "mean": 0.8, "sem": None, "lo": None, "hi": None, "n": 1}
    assert summary["t-cv0"]["sem"] > 0 and summary["t-cv0"]["lo"] < summary["t-cv0"]["mean"] < summary["t-cv0"]["hi"]
    json.dumps(spec, allow_nan=False)  # the page embeds its specs as strict JSON
