"""`nestling report DIR`: write DIR/report.html and a PNG per figure."""

from __future__ import annotations

from pathlib import Path

from nestling.core.errors import UsageError, strict_parser
from nestling.read.report.compose import write_report


def report_main(argv: list[str], description: str) -> int:
    parser = strict_parser("nestling report", description)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--no_png", action="store_true", help="only the HTML page (PNGs take most of the time)")
    args = parser.parse_args(argv)
    print(f"report: {report_dir(args.dir, png=not args.no_png)}")
    return 0


def report_dir(dir: Path, *, png: bool = True) -> Path:
    """Write the report of a tune, cv or run dir (and, with `png`, one PNG per figure); the page's path."""
    if not Path(dir).exists():
        raise UsageError(f"{str(dir)!r} does not exist; pass a tune, cv or run directory")
    return write_report(Path(dir), png=png)
