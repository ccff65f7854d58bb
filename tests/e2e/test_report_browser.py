"""The report of a real tune, opened in a real browser (headless Chromium): every figure renders, no console
message, the screenshot is not blank, and the numbers in the rendered table are the parquet's.

`./dev test` installs Debian's `chromium`; without it the browser tests are skipped (the page is still checked), and
fail under CI.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import polars as pl
import pytest
from support import cli, require, tables

from nestling.read.collect import collect, ranked

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FAST = ["--max_epochs", "2", "--n_seeds", "2", "--accelerator", "cpu", "--quiet"]
SPACE = """[hyperparameters]
value = {low = 0.0, high = 1.0}
lr = {distribution = "loguniform", low = 1e-5, high = 1e-1}
sleep_s = 0.0
fail_if_val_contains = ["", "s0001"]
"""


@pytest.fixture(scope="module")
def tune(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 trials x 2 folds x 2 seeds of the sleep task, 2 epochs; trials with fail_if_val_contains=s0001 lose a fold.
    Scored on val/JaccardIndex (the trial's constant `value`) and val/loss, which differs between folds and seeds,
    so that every trial's runs have a spread for the table's sem and lcb."""
    base = tmp_path_factory.mktemp("report")
    (base / "hp.toml").write_text(SPACE)
    done = ok(cli(
        "tune", "--task", "sleep", "--hpconfig", str(base / "hp.toml"), "--n_trials", "4", "--n_folds", "2",
        "--scoring_metric", "val/JaccardIndex", "val/loss:lower", *FAST, "--artifact_dir", str(base / "art"), "--name", "rt",
    ))  # fmt: skip
    tune = base / "art" / "rt"
    assert f"report: {tune / 'report.html'}" not in done.stdout  # --quiet: written, not announced
    return tune


@pytest.fixture
def needs_chromium() -> None:
    require(CHROMIUM is not None, "chromium", "apt-get install -y chromium; ./dev test installs it")


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def chromium(url: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--window-size=1400,1000", *args,
        url.as_uri(),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def console_messages(stderr: str) -> list[str]:
    """What the page wrote to its console (errors, warnings, logs): the report writes nothing there."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def distinct_pixels(png: bytes) -> int:
    """The number of distinct pixel values of an 8-bit RGB(A) PNG, decoded with zlib and numpy (no image library).

    Rows filtered with None, Sub or Up (nearly all: Chromium and vl_convert filter with Sub and Up) are undone with
    numpy; Average and Paeth rows byte by byte."""
    import numpy as np

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, channels = 8, b"", 0, 0
    while pos < len(png):
        (length,), kind = struct.unpack(">I", png[pos : pos + 4]), png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, _, depth, color = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    stride = width * channels
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(-1, stride + 1)
    image = np.zeros((raw.shape[0], stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y, (kind, line) in enumerate(zip(raw[:, 0], raw[:, 1:], strict=True)):
        if kind == 0:
            row = line.copy()
        elif kind == 1:  # Sub: a running sum per channel, modulo 256
            row = np.cumsum(line.reshape(width, channels), axis=0, dtype=np.uint8).reshape(stride)
        elif kind == 2:  # Up
            row = line + previous
        else:  # Average or Paeth
            row, up = bytearray(line.tobytes()), previous.tobytes()
            for i in range(stride):
                left = row[i - channels] if i >= channels else 0
                corner = up[i - channels] if i >= channels else 0
                if kind == 3:
                    row[i] = (row[i] + (left + up[i]) // 2) & 0xFF
                else:
                    p = left + up[i] - corner
                    pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
                    row[i] = (row[i] + (left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner)) & 0xFF
            row = np.frombuffer(bytes(row), dtype=np.uint8)
        image[y] = previous = row
    pixels = image.reshape(-1, channels)
    return len(np.unique(pixels, axis=0))


@pytest.mark.min_versions
def test_tune_writes_its_report_and_nestling_report_its_pngs(tune: Path) -> None:
    """The tune writes the page alone (its figures export themselves; issue 21: PNGs were most of a report's
    time); `nestling report` adds one PNG per figure and links them."""
    page = (tune / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "tune rt" in page
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", page)  # one file: nothing to fetch
    figures = re.findall(r'<div class="figure" id="fig-([a-z-]+)"', page)
    assert figures == ["learning-curves", "score-vs-hparams", "parallel-coordinates", "top-configurations",
                       "best-so-far", "timeline"]
    assert not (tune / "report_figures").exists() and 'href="report_figures/' not in page
    ok(cli("report", str(tune)))
    page = (tune / "report.html").read_text()
    for key in figures:
        assert f'href="report_figures/{key}.png"' in page
        png = (tune / "report_figures" / f"{key}.png").read_bytes()
        assert distinct_pixels(png) > 20, key


@pytest.fixture(scope="module")
def pages(tune: Path) -> dict[str, Path]:
    """The tune's report, and `nestling report` of one of its cvs and one of its runs."""
    cv = tune / "rt-cv0"
    run = sorted(p for p in cv.iterdir() if "-run-" in p.name)[0]
    for target in (cv, run):
        done = ok(cli("report", str(target)))
        assert done.stdout.strip() == f"report: {target / 'report.html'}"
    return {"tune": tune / "report.html", "cv": cv / "report.html", "run": run / "report.html"}


@pytest.mark.usefixtures("needs_chromium")
@pytest.mark.parametrize("kind", ["tune", "cv", "run"])
def test_report_renders_in_chromium(pages: dict[str, Path], kind: str, tmp_path: Path) -> None:
    page = pages[kind]
    done = chromium(page, tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-3000:]
    assert console_messages(done.stderr) == []
    dom = done.stdout
    assert re.search(r'<div id="report-errors">\s*</div>', dom), re.findall(r'id="report-errors">(.*?)</div>', dom)
    figures = re.findall(r'<div class="figure[^"]*" id="fig-([a-z-]+)"[^>]*>', dom)
    rendered = re.findall(r'<div class="figure[^"]*" id="fig-([a-z-]+)"[^>]*data-rendered="1"', dom)
    expected = {"tune": 6, "cv": 2, "run": 1}[kind]
    assert len(figures) == expected and sorted(rendered) == sorted(figures), (figures, rendered)
    for key in figures:  # vega-embed drew each one as SVG with marks in it
        block = dom.split(f'id="fig-{key}"', 1)[1].split('<div class="figure', 1)[0]
        assert "<svg" in block and block.count("<path") + block.count("<rect") > 3, key
    if kind != "tune":  # one screenshot is enough to see the page is drawn; each browser start costs seconds
        return
    shot = tmp_path / "shot.png"
    done = chromium(page, tmp_path, f"--screenshot={shot}")
    assert done.returncode == 0 and console_messages(done.stderr) == [], done.stderr[-3000:]
    assert distinct_pixels(shot.read_bytes()) > 50  # text, tables and charts; a blank page has one value


def _spreads(tune: Path) -> dict[str, tuple[int, float, float]]:
    """Per trial, from run_infos.parquet and splits.json alone: (n, sample std) of the scores of its runs that count
    (successful, stable, finite) and the mean n_val/n_train of their folds, the inputs of Nadeau & Bengio's
    sem = std * sqrt(1/n + n_val/n_train)."""
    splits = json.loads((tune / "splits.json").read_text())
    ratio = [len(s["val"]) / len(s["train"]) for s in splits]
    runs = pl.read_parquet(tune / "run_infos.parquet").filter(
        (pl.col("status") == "success") & ~pl.col("is_unstable") & pl.col("run_score").is_finite()
    )
    found = {}
    for (cv_name,), group in runs.group_by("cv_name"):
        scores, folds = group["run_score"].to_list(), group["fold"].to_list()
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((x - mean) ** 2 for x in scores) / (len(scores) - 1))
        found[str(cv_name)] = (len(scores), std, sum(ratio[f] for f in folds) / len(folds))
    return found


@pytest.mark.usefixtures("needs_chromium")
def test_rendered_table_numbers_equal_the_parquet(pages: dict[str, Path], tmp_path: Path) -> None:
    """The ranked table as the browser shows it: trial order, score, runs and failures of tune_infos.parquet."""
    done = chromium(pages["tune"], tmp_path, "--dump-dom")
    rows = tables(done.stdout)["ranked"]
    head = [text for text, _ in rows[0]]
    parquet = pl.read_parquet(pages["tune"].parent / "tune_infos.parquet")
    assert len(rows) - 1 == parquet.height == 4
    order = [cv.cv_name for cv in ranked(collect(pages["tune"].parent, write=False).cvs)]
    oracle = _spreads(pages["tune"].parent)
    shown = [{head[i]: cell for i, cell in enumerate(row)} for row in rows[1:]]
    assert [r["trial"][0] for r in shown] == order
    for rank, r in enumerate(shown, 1):
        expected = parquet.filter(pl.col("cv_name") == r["trial"][0]).row(0, named=True)
        assert int(r["rank"][0]) == rank
        assert float(r["score"][0]) == pytest.approx(expected["score"], rel=1e-5)
        assert float(r["score"][1]["data-value"]) == expected["score"]
        assert (int(r["runs"][0]), int(r["failed"][0])) == (expected["n_runs"], expected["n_failed"])
        assert float(r["value"][0]) == pytest.approx(expected["value"], rel=1e-5)
        assert r["state"][0] == ("unstable" if expected["score_is_unstable"] else "ok")
        # the spread of the trial's run scores (2 folds x 2 seeds, or 2 seeds of the fold left): the tune table's
        # mean, its corrected sem (Nadeau-Bengio: folds share training data) and lcb = mean - corrected sem
        mean, sem, lcb = expected["run_score_mean"], expected["run_score_sem_corrected"], expected["lcb"]
        n, std, ratio = oracle[r["trial"][0]]
        assert n >= 2 and std > 0  # a spread to show, so a wrong formula below shows as a wrong number
        assert expected["run_score_std"] == pytest.approx(std, rel=1e-9)
        assert expected["run_score_sem"] == pytest.approx(std / math.sqrt(n), rel=1e-9)
        assert sem == pytest.approx(std * math.sqrt(1 / n + ratio), rel=1e-9)
        shown_mean, shown_sem = (float(x) for x in r["mean ± sem"][0].split(" ± "))
        assert shown_mean == pytest.approx(mean, rel=1e-5)
        assert shown_sem == float(f"{sem:.2g}")  # the sem to 2 significant digits, as the console shows it
        assert float(r["mean ± sem"][1]["data-sem"]) == sem and float(r["lcb"][1]["data-value"]) == lcb
        assert lcb == pytest.approx(mean - sem)


@pytest.mark.usefixtures("needs_chromium")
def test_the_browser_check_sees_a_broken_figure(pages: dict[str, Path], tmp_path: Path) -> None:
    """The checks above can fail: a figure whose spec Vega-Lite refuses leaves a console error, a message in the
    page's error box, and one figure without data-rendered."""
    page = pages["tune"].read_text()
    broken = tmp_path / "report.html"
    broken.write_text(page.replace('"mark":{"type":"line"', '"mark":{"type":"no-such-mark"', 1))
    assert broken.read_text() != page
    done = chromium(broken, tmp_path, "--dump-dom")
    assert console_messages(done.stderr), done.stderr[-2000:]
    box = done.stdout.split('<div id="report-errors">', 1)[1].split("<nav>", 1)[0]
    assert box.startswith("<div>learning-curves: "), box  # which figure failed, and why
    assert len(re.findall(r'data-rendered="1"', done.stdout)) == 5


def _labels(dom: str, key: str) -> list[str]:
    """The text a reader sees in figure `key` of the rendered page (axis labels, legend labels, annotations)."""
    block = dom.split(f'id="fig-{key}"', 1)[1].split('<div class="figure', 1)[0]
    texts = re.findall(r"<text([^>]*)>([^<]*)</text>", block)
    return [text for attrs, text in texts if 'opacity="0"' not in attrs and text.strip()]


def _numbers(labels: list[str]) -> list[float]:
    out = []
    for label in labels:
        try:
            out.append(float(label.replace("−", "-")))
        except ValueError:
            continue
    return out


@pytest.mark.usefixtures("needs_chromium")
def test_axes_and_legends_read_as_a_reader_expects(pages: dict[str, Path], tmp_path: Path) -> None:
    """Issue 21 #7, in the rendered SVG: the timeline's ticks are distinct times (it read `.500` on every tick), the
    uniform `value` is on a linear axis and the log `lr` axis has round labels that do not run together, the
    parallel coordinates label every axis between its ends, and the colour legend reaches the best score."""
    dom = chromium(pages["tune"], tmp_path, "--dump-dom").stdout
    timeline = _numbers(_labels(dom, "timeline"))
    assert len(timeline) >= 3 and len(set(timeline)) == len(timeline) and timeline == sorted(timeline), timeline
    assert "time since the first run started (s)" in _labels(dom, "timeline")
    hparams = _labels(dom, "score-vs-hparams")
    assert not any(re.fullmatch(r"\d*\.\d+\.\d+.*", label) for label in hparams), hparams  # `0.0010.002`
    infos = pl.read_parquet(pages["tune"].parent / "tune_infos.parquet")
    parallel = _labels(dom, "parallel-coordinates")
    numbers = _numbers(parallel)
    assert len(numbers) >= 3 * 3  # value, lr and score: round values between the ends, not just min and max
    best = infos["score"].drop_nans().max()
    assert f"{best:.3g}" in parallel  # the legend's top is the best score
    assert "(geometric)" in pages["tune"].read_text()  # two scoring metrics here; one metric would not say it
