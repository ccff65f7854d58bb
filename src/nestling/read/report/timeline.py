"""Where the allocation went: every run on the lane (worker, array task, GPU) that ran it, and the gaps."""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.tree import naming
from nestling.core.tree.run_result import RunResult, read_result
from nestling.read.report import figures
from nestling.read.report.html import duration_text, para, percent
from nestling.read.report.page import Figure, Section

if TYPE_CHECKING:

    from nestling.plan.model import PlannedRun

GAP_S = 0.5  # idle time between two runs of a lane drawn as a gap


@dataclass(frozen=True)
class Timeline:
    runs: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    lanes: list[str]
    busy_s: float
    span_s: float
    idle_s: float
    last_end: float | None = None  # seconds since the epoch
    unit: str = "s"  # of the time axis: s, min or h, by the span
    stages: list[dict[str, Any]] = field(default_factory=list)  # Task.stage: staging or waiting for it, per run

    @property
    def utilisation(self) -> float:
        return self.busy_s / (self.span_s * len(self.lanes)) if self.span_s > 0 and self.lanes else math.nan


def timeline(runs: Iterable[PlannedRun]) -> Timeline:
    """Every run with a result on its lane (host + GPU, else host + SLURM task, else host + process), the idle gaps
    between consecutive runs of a lane, and the utilisation: busy time / (lanes x first start to last end)."""
    spans: list[tuple[str, float, float, RunResult, str]] = []
    for run in runs:
        result = read_result(run.dir)
        if result is None or not result.started_at:
            continue
        start, end = _span(run.dir, result)
        if start is None or end is None:
            continue
        spans.append((_lane(result), start, max(end, start), result, f"{run.run_name}-{run.run_id}"))
    if not spans:
        return Timeline([], [], [], 0.0, 0.0, 0.0)
    spans.sort(key=lambda s: (s[0], s[1]))
    rows: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []
    busy_per_lane: dict[str, float] = {}
    previous: dict[str, float] = {}
    for lane, start, end, result, name in spans:
        rows.append({"lane": lane, "start": start * 1000, "end": end * 1000, "status": result.status,
                     "run_name": name, "duration": end - start})  # fmt: skip
        busy_per_lane[lane] = busy_per_lane.get(lane, 0.0) + (end - start)
        if result.stage_s:  # staged before its clock started (execute/staging.py): drawn just before the run
            stages.append({"lane": lane, "start": (start - result.stage_s) * 1000, "end": start * 1000,
                           "stage_s": result.stage_s, "run_name": name})  # fmt: skip
        if lane in previous and start - previous[lane] >= GAP_S:
            gaps.append({"lane": lane, "start": previous[lane] * 1000, "end": start * 1000,
                         "idle_s": start - previous[lane]})  # fmt: skip
        previous[lane] = max(end, previous.get(lane, end))
    first, last = min(s[1] for s in spans), max(s[2] for s in spans)
    span = last - first
    unit, per = time_unit(span)
    for row in (*rows, *gaps, *stages):
        row["t0"], row["t1"] = (row["start"] / 1000 - first) / per, (row["end"] / 1000 - first) / per
    for row in rows:
        row["started"] = dt.datetime.fromtimestamp(row["start"] / 1000).astimezone().strftime("%H:%M:%S")
    labels = {lane: f"{lane} · {100 * min(1.0, busy / span):.0f}%" if span > 0 else lane
              for lane, busy in busy_per_lane.items()}  # fmt: skip
    for row in (*rows, *gaps, *stages):
        row["lane"] = labels[row["lane"]]
    return Timeline(rows, gaps, [labels[k] for k in sorted(labels)], sum(busy_per_lane.values()), span,
                    sum(g["idle_s"] for g in gaps), last, unit, stages)  # fmt: skip


def time_unit(span_s: float) -> tuple[str, float]:
    """The unit of a time axis over `span_s` seconds, and its length in seconds: s up to 3 min, min up to 3 h, h."""
    if span_s <= 180:
        return "s", 1.0
    if span_s <= 3 * 3600:
        return "min", 60.0
    return "h", 3600.0


def _span(run_dir: Path, result: RunResult) -> tuple[float | None, float | None]:
    """(start, end) in seconds since the epoch. started_at/finished_at have one-second resolution, which turns a
    tune of short runs into a bar code; run_result.json's mtime is the end to the nanosecond, so it is used when it
    agrees with finished_at (a copied tree's mtimes do not), and start = end - duration."""
    start, end = timestamp(result.started_at), timestamp(result.finished_at)
    duration = result.duration
    if end is not None and isinstance(duration, (int, float)):
        try:
            mtime = os.stat(naming.RunPaths(run_dir).result).st_mtime
        except OSError:
            mtime = None
        if mtime is not None and -0.5 <= mtime - end < 2.0:
            return mtime - float(duration), mtime
        if start is not None:
            return start, start + float(duration)
    return start, end


def _lane(result: RunResult) -> str:
    host = str(result.host or "?")
    if result.cuda_visible_devices:
        return f"{host} GPU {result.cuda_visible_devices}"
    if result.slurm_job_id:
        task = result.slurm_array_task_id
        return f"{host} job {result.slurm_job_id}" + (f"_{task}" if task is not None else "")
    return f"{host} pid {result.pid}"


def timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return float(value) if isinstance(value, (int, float)) else None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def as_of(last: float | None) -> str:
    if last is None:
        return ""
    return ", as of the last result " + dt.datetime.fromtimestamp(last).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def timeline_section(t: Timeline) -> Section:
    if not t.runs:
        return Section("Timeline", para("No run has started yet."))
    largest = max(t.gaps, key=lambda g: g["idle_s"], default=None)
    text = (
        f"{len(t.runs)} runs on {len(t.lanes)} lane{'s' if len(t.lanes) != 1 else ''} (worker process, SLURM task "
        f"or GPU) over "
        f"{duration_text(t.span_s)}: busy {duration_text(t.busy_s)}, utilisation {percent(t.utilisation)} of lanes x span "
        f"(each lane's share after its name). Idle gaps between runs: {duration_text(t.idle_s)}"
        + (f", the largest {duration_text(largest['idle_s'])} on {largest['lane']}." if largest else ".")
    )
    note = ("Lanes are worker processes (local), array tasks (SLURM) or GPUs. A lane that starts late or ends early "
            "(a task that waited in the queue, a restarted worker) shows as a lower share; the time a worker spends "
            "starting up before its first run is not on the chart.")  # fmt: skip
    if t.stages:
        staged = sum(s["stage_s"] for s in t.stages)
        text += f" Staging the task's data (Task.stage, once per node) took {duration_text(staged)}, drawn before the runs."
    chart = figures.timeline_chart(t.runs, t.gaps, t.lanes, t.unit, t.stages)
    return Section("Timeline: where the allocation went", para(text) + para(note, "note"),
                   [Figure("timeline", "timeline of every run", chart)])  # fmt: skip
