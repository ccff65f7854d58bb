"""`nestling collect DIR`: rebuild the parquet tables of a tune, cv or run dir from its run results."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nestling.core.errors import UsageError, strict_parser
from nestling.core.lazy import lazy_module
from nestling.core.options.choices import Select
from nestling.read.report.compose import write_report

if TYPE_CHECKING:
    from nestling.read import collect, summary
    from nestling.read.collect import Collected
else:
    collect = lazy_module("nestling.read.collect")
    summary = lazy_module("nestling.read.summary")


def collect_main(argv: list[str], description: str) -> int:
    parser = strict_parser("nestling collect", description)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--all", action="store_true", help="show every logged metric, not only the scoring metrics and score"
    )
    parser.add_argument("--report", action="store_true", help="also write DIR/report.html (as `nestling report`)")
    parser.add_argument(
        "--select", choices=("score", "lcb"), default=None, help="rank a tune by this (default: the tune's --select)"
    )
    args = parser.parse_args(argv)
    collect_tables(args.dir, select=args.select, all_columns=args.all, report=args.report, quiet=args.quiet)
    return 0


def collect_tables(
    dir: Path, *, select: Select | None = None, all_columns: bool = False, report: bool = False, quiet: bool = False
) -> Collected:
    """Rebuild the tables of the plan holding `dir` and print its summary (unless quiet), ranked by `select`
    (default: the tune's); with `report`, write its report.html too."""
    if not Path(dir).exists():
        raise UsageError(f"{str(dir)!r} does not exist; pass a tune, cv or run directory")
    collected = collect.collect(Path(dir))
    if not quiet:
        summary.print_summary(collected, select, all_columns=all_columns)
    if report:
        print(f"report: {write_report(Path(dir), collected)}")
    return collected
