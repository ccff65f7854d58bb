"""Start-up: wall time of `nestling --help`, `nestling status DIR`, `nestling collect DIR` (the console script, as
a user runs it; median of 5 subprocess runs) against a bare `python -c pass`, and whether torch or lightning was
imported (`python -X importtime`). DIR is a fake tune of 100 finished runs (bench/collector.py's tree).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from bench._common import PYTHON, Row, env, median_time, scratch, standalone
from bench.collector import make_tree

NAME = "startup"
HEAVY = ("torch", "lightning")


def console_script() -> list[str]:
    script = Path(sys.executable).parent / "nestling"
    return [str(script)] if script.exists() else [PYTHON, "-m", "nestling.cli"]


def imports(args: list[str]) -> tuple[set[str], list[tuple[int, str]]]:
    """Top-level packages imported by `nestling ARGS`, and the slowest top-level imports (cumulative us, name)."""
    cmd = console_script()
    if cmd[0] != PYTHON:
        cmd = [PYTHON, *cmd]
    done = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:], *args], capture_output=True, text=True, env=env(),
                          timeout=120)  # fmt: skip
    seen: set[str] = set()
    top: list[tuple[int, str]] = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            name = match.group(3)
            seen.add(name.split(".")[0])
            if len(match.group(2)) <= 1:  # a top-level import of the program
                top.append((int(match.group(1)), name))
    return seen, sorted(top, reverse=True)[:3]


def run(quick: bool = False) -> list[Row]:
    """nestling --help / status / collect start-up time and heavy imports, vs a bare interpreter."""
    repeat = 5
    bare = median_time([PYTHON, "-c", "pass"], repeat=repeat)
    rows = []
    with scratch(NAME) as tmp:
        tune = make_tree(tmp, 100)
        cases = {"nestling --help": ["--help"], "nestling status DIR": ["status", str(tune)],
                 "nestling collect DIR": ["collect", str(tune), "--quiet"]}  # fmt: skip
        for label, args in cases.items():
            wall = median_time([*console_script(), *args], repeat=repeat)
            seen, slowest = imports(args)
            heavy = sorted(h for h in HEAVY if h in seen)
            rows.append(
                Row(NAME, label, wall, bare, baseline_name="python -c pass", target="< 0.5 s, no torch",
                    met=wall < 0.5 and not heavy, quick=quick,
                    note=f"imports torch/lightning: {', '.join(heavy) or 'no'}; slowest imports: "
                    + ", ".join(f"{name} {us / 1e6:.2f} s" for us, name in slowest))
            )  # fmt: skip
    return rows


if __name__ == "__main__":
    standalone(NAME, run)
