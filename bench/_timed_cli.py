"""`python -m bench._timed_cli [--profile FILE] NESTLING ARGS...`: run the nestling CLI in this process and time it.

Prints one JSON line on stdout's last line: `total_s` is the wall time of `nestling.commands.cli.main(argv)` in-process
(everything nestling does, its lazy imports included; the interpreter's start-up excluded), plus the time spent in
named phases found by wrapping nestling's functions where they exist: `imports` (the libraries nestling loads on this
path: optuna, polars, submitit, ...; loaded first so the other phases are nestling's own work),
`plan` (checks, folds, trials, every run), `write tree` (every RunSpec, plan.json, run_specs.jsonl), `submit` (units.json, scripts, sbatch).
With --profile, cProfile stats of main() go to FILE (pstats format).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import time
from collections import defaultdict
from typing import Any

PHASES: dict[str, float] = defaultdict(float)
# What `nestling tune --launcher slurm` imports anyway (space: optuna, scripts: submitit's template). scikit-learn
# is not among them: the default fold method (kfold) does not import it.
THIRD_PARTY = (
    "simple_parsing",
    "optuna",
    "polars",
    "submitit",
    "coolname",
    "rich",
)


def _wrap(module_name: str, attr: str, phase: str) -> None:
    """Time calls of module.attr (a function, or Class.method as 'Class.method') under `phase`, if it exists."""
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    owner: Any = module
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return
    original = getattr(owner, name, None)
    if original is None:
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            PHASES[phase] += time.perf_counter() - start

    setattr(owner, name, timed)


def main() -> None:
    argv = sys.argv[1:]
    profile = None
    if argv[:1] == ["--profile"]:
        profile, argv = argv[1], argv[2:]
    start = time.perf_counter()  # every import counts, nestling's and the libraries' it loads on the way
    for (
        module
    ) in THIRD_PARTY:  # loaded here so that the phases below show nestling's own work apart from them
        t0 = time.perf_counter()
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
        PHASES["imports"] += time.perf_counter() - t0
    import nestling.commands.cli

    _wrap("nestling.core.options.config", "parse_config", "parse")
    _wrap("nestling.plan.preflight", "prepare", "plan")
    _wrap("nestling.launch.factory", "make_launcher", "launcher setup (sinfo/scontrol)")
    _wrap("nestling.plan.store", "write_plan", "write tree")
    _wrap("nestling.launch.slurm.launcher", "SlurmArrayLauncher.launch", "submit (scripts + sbatch)")
    _wrap("nestling.launch.slurm.launcher", "SlurmArrayLauncher.describe", "submit (scripts + sbatch)")  # --dry_run
    _wrap("nestling.commands.start", "save_launch", "launch.json")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if profile:
            import cProfile

            prof = cProfile.Profile()
            rc = prof.runcall(nestling.commands.cli.main, argv)
            prof.dump_stats(profile)
        else:
            rc = nestling.commands.cli.main(argv)
    total = time.perf_counter() - start
    sys.stderr.write(out.getvalue()[-2000:])
    print(json.dumps({"rc": rc, "total_s": total, "phases": dict(PHASES)}))


if __name__ == "__main__":
    main()
