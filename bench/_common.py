"""What every benchmark shares: result rows, the table, results.parquet, timed subprocesses, the local cluster."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results.parquet"
CLUSTER_SCRIPT = REPO / "slurm" / "local-cluster"
CLUSTER_OPTIONS = (
    "--cpus-per-node",
    "4",
)  # the options the test suite uses: `up` with others would restart it
PYTHON = sys.executable


@dataclass
class Row:
    """One line of the table: a nestling figure, the baseline's, their ratio and the target it is judged by."""

    benchmark: str
    case: str
    nestling: float | None
    baseline: float | None = None
    unit: str = "s"
    baseline_name: str = ""
    target: str = ""  # e.g. "ratio <= 1.5", "nestling < 2 s"
    met: bool | None = None
    note: str = ""
    ratio: float | None = field(default=None)
    quick: bool = False
    measured_at: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.nestling is not None and self.baseline:
            self.ratio = self.nestling / self.baseline
        if not self.measured_at:
            self.measured_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def judge(value: float | None, op: str, limit: float) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return {
        "<": value < limit,
        "<=": value <= limit,
        ">": value > limit,
        ">=": value >= limit,
        "==": value == limit,
    }[op]


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("calls", "runs", "files") or (float(value).is_integer() and abs(value) >= 10 and unit != "s"):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def table(rows: Sequence[Row]) -> str:
    """A plain-text table (pastes into Markdown as is)."""
    head = ["benchmark", "case", "nestling", "baseline", "ratio", "target", "met?"]
    lines = [head]
    for r in rows:
        unit = f" {r.unit}" if r.unit else ""
        base = "-" if r.baseline is None else f"{fmt(r.baseline, r.unit)}{unit}"
        if r.baseline_name and r.baseline is not None:
            base += f" ({r.baseline_name})"
        lines.append(
            [
                r.benchmark,
                r.case,
                "-" if r.nestling is None else f"{fmt(r.nestling, r.unit)}{unit}",
                base,
                "-" if r.ratio is None else f"{r.ratio:.2f}x",
                r.target,
                {True: "yes", False: "NO", None: "-"}[r.met],
            ]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines
    ]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [f"- {r.benchmark} / {r.case}: {r.note}" for r in rows if r.note]
    return "\n".join(out + ([""] + notes if notes else []))


def save(rows: Sequence[Row], benchmarks: Sequence[str]) -> None:
    """Replace these benchmarks' rows in bench/results.parquet, keep the others."""
    import polars as pl

    schema = {
        "benchmark": pl.Utf8, "case": pl.Utf8, "nestling": pl.Float64, "baseline": pl.Float64, "unit": pl.Utf8,
        "baseline_name": pl.Utf8, "target": pl.Utf8, "met": pl.Boolean, "note": pl.Utf8, "ratio": pl.Float64,
        "quick": pl.Boolean, "measured_at": pl.Utf8,
    }  # fmt: skip
    new = pl.DataFrame([asdict(r) for r in rows], schema=schema)
    if RESULTS.exists():
        try:
            old = pl.read_parquet(RESULTS).filter(~pl.col("benchmark").is_in(list(benchmarks)))
            new = pl.concat([old.select(list(schema)).cast(schema), new], how="vertical")  # type: ignore[arg-type]
        except Exception:  # an older layout: start again
            pass
    tmp = RESULTS.with_suffix(".parquet.tmp")
    new.write_parquet(tmp)
    os.replace(tmp, RESULTS)


def standalone(name: str, run: Callable[[bool], list[Row]]) -> None:
    """`python -m bench.NAME [--quick]`: run one benchmark, print its table, update results.parquet."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=run.__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes (the whole suite in under 3 minutes)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    rows = run(args.quick)
    print(table(rows))
    save(rows, [name])
    print(f"\n{name}: {time.perf_counter() - started:.0f} s; rows written to {RESULTS.relative_to(REPO)}")


# -- processes ---------------------------------------------------------------------------------------------------
def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), e.get("PYTHONPATH", "")) if p)
    e.setdefault("WANDB_MODE", "disabled")
    e.update(extra)
    return e


def timed(cmd: Sequence[str], *, check: bool = True, timeout: float = 900, **kw: Any) -> tuple[float, str]:
    """Wall time of a subprocess from fork to exit, and its stdout."""
    kw.setdefault("env", env())
    kw.setdefault("cwd", REPO)
    start = time.perf_counter()
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    wall = time.perf_counter() - start
    if check and done.returncode != 0:
        out = done.stdout + done.stderr
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{out[-3000:]}")
    return wall, done.stdout


def median_time(cmd: Sequence[str], repeat: int = 5, **kw: Any) -> float:
    return statistics.median(timed(cmd, **kw)[0] for _ in range(repeat))


def nestling_cmd(*args: str) -> list[str]:
    return [PYTHON, "-m", "nestling.cli", *args]


def scratch_base() -> str:
    """Where benchmark trees go: $NESTLING_BENCH_TMP, else /var/tmp. Not /tmp: on this VM, creating files in /tmp
    costs ~2 ms each against ~0.1 ms elsewhere on the same disk, which would swamp what is measured."""
    return os.environ.get("NESTLING_BENCH_TMP") or (
        "/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir()
    )


@contextmanager
def scratch(prefix: str, base: str | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"nestling-bench-{prefix}-", dir=base or scratch_base()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_space(path: Path, **hyperparameters: Any) -> Path:
    lines = ["[hyperparameters]"]
    for key, value in hyperparameters.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {v!r}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {value!r}")
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


# -- the local SLURM cluster -----------------------------------------------------------------------------------
class ClusterUnavailable(RuntimeError):
    pass


def cluster_env() -> dict[str, str]:
    """`slurm/local-cluster up` with the suite's options (idempotent: no restart when it is up) -> an env with
    SLURM_CONF. The cluster is never brought down here: other developers may be using it."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    if shutil.which("slurmctld", path=path) is None:
        raise ClusterUnavailable("SLURM is not installed (slurm/local-cluster install)")
    done = subprocess.run(
        [str(CLUSTER_SCRIPT), "up", *CLUSTER_OPTIONS],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise ClusterUnavailable(f"slurm/local-cluster up failed: {done.stderr.strip()[-500:]}")
    line = done.stdout.strip().splitlines()[-1]
    return env(SLURM_CONF=line.split("=", 1)[1])


def job_records(e: dict[str, str]) -> int:
    """Job records slurmctld holds now (pending, running, and ended ones it keeps for MinJobAge)."""
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i"], capture_output=True, text=True, env=e,
                         timeout=30).stdout  # fmt: skip
    return len(out.split())


def slurm_config(e: dict[str, str], key: str, default: int) -> int:
    import re

    out = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, env=e, timeout=30
    ).stdout
    match = re.search(rf"^{key}\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else default


def squeue_ids(e: dict[str, str], job_ids: Sequence[str]) -> list[str]:
    wanted = {str(j) for j in job_ids}
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, env=e, timeout=30
    ).stdout
    return [j for j in out.split() if j.split("_")[0] in wanted]


def scancel(e: dict[str, str], job_ids: Sequence[str]) -> None:
    """Cancel these jobs (dependent collector jobs first, so they never start), nothing else."""
    ids = [str(j) for j in job_ids if j]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, env=e, timeout=60, check=False)


def wait_gone(e: dict[str, str], job_ids: Sequence[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not squeue_ids(e, job_ids):
            return True
        time.sleep(0.5)
    return False


SHIM = """#!/bin/sh
# Logs every sbatch call (start, end, args), then runs the real sbatch.
start=$(date +%s.%N)
"{real}" "$@"
rc=$?
echo "$start $(date +%s.%N) $rc $*" >> "{log}"
exit $rc
"""


STUB = """#!/bin/sh
# Logs every sbatch call and answers like sbatch without submitting anything (job ids from 900000).
n=$(wc -l < "{log}")
now=$(date +%s.%N)
echo "$now $now 0 $*" >> "{log}"
if [ "$1" = "--parsable" ]; then echo "$((900000 + n))"; else echo "Submitted batch job $((900000 + n))"; fi
"""


@contextmanager
def sbatch_shim(e: dict[str, str], stub: bool = False) -> Iterator[tuple[dict[str, str], Path]]:
    """An env whose PATH starts with an `sbatch` that logs each call to a file, and that file. The shim runs the
    real sbatch, or with `stub` only answers with a fake job id (for sizes the cluster cannot hold)."""
    real = shutil.which("sbatch", path=e.get("PATH"))
    if real is None and not stub:
        raise ClusterUnavailable("sbatch not found")
    with scratch("shim") as d:
        log = d / "sbatch.log"
        log.touch()
        shim = d / "bin" / "sbatch"
        shim.parent.mkdir()
        shim.write_text((STUB if stub else SHIM).format(real=real, log=log))
        shim.chmod(0o755)
        yield {**e, "PATH": f"{shim.parent}{os.pathsep}{e.get('PATH', '')}"}, log


def sbatch_calls(log: Path) -> list[tuple[float, float, str]]:
    calls = []
    for line in log.read_text().splitlines():
        start, end, _rc, *args = line.split(" ")
        calls.append((float(start), float(end), " ".join(args)))
    return calls
