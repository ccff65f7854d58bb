"""`nestling report DIR`: write DIR/report.html and a PNG per figure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nestling.core.errors import UsageError, strict_parser
from nestling.read.report.build import write_report

if TYPE_CHECKING:

    pass


def report_main(argv: list[str]) -> int:
    parser = strict_parser("nestling report", "write DIR/report.html (and a PNG per figure) for a tune, cv or run dir")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--no_png", action="store_true", help="only the HTML page (PNGs take most of the time)")
    args = parser.parse_args(argv)
    if not args.dir.exists():
        raise UsageError(f"{str(args.dir)!r} does not exist; pass a tune, cv or run directory")
    path = write_report(args.dir, png=not args.no_png)
    print(f"report: {path}")
    return 0
