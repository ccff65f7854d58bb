"""Tables printed to a terminal: every cell whole, at any width (issue 21 #12).

rich shrinks a table that is wider than the terminal by cutting its cells (`0.00…`) and wrapping them over lines. A
number cut short reads as another number, so here numbers are formatted to a few significant digits first, each
column is as wide as its longest cell, and the columns that still do not fit are left out, least useful first, and
named below the table. Only free text (an error message) may wrap.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

FREE_TEXT_MIN = 24  # a wrapping column still gets this many characters


@dataclass(frozen=True)
class Column:
    """One column as printed: its header (a line break allowed), its cells as text, and how long it stays when the
    terminal is narrow (the higher `keep`, the later it is left out; the name column is never left out)."""

    header: str
    cells: list[str]
    keep: int = 0
    numeric: bool = False  # right-aligned
    wraps: bool = False  # free text: wraps instead of being left out

    @property
    def width(self) -> int:
        widest = max((len(line) for text in (self.header, *self.cells) for line in text.splitlines()), default=0)
        return min(widest, max(FREE_TEXT_MIN, *(len(h) for h in self.header.splitlines()))) if self.wraps else widest


def table_width(columns: list[Column]) -> int:
    """What rich's default box takes: each column plus one space either side, and a border before each and after."""
    return sum(c.width + 2 for c in columns) + len(columns) + 1


def fit(columns: list[Column], width: int) -> tuple[list[Column], list[Column]]:
    """(shown, left out): metric headers broken after their prefix if the table is too wide, then columns left out,
    lowest `keep` first (the rightmost of equals first), until the rest fit `width`; the first column always stays."""
    shown = list(columns)
    if table_width(shown) > width:
        shown = [dataclasses.replace(c, header=header(c.header)) for c in shown]
    left_out: list[Column] = []
    while table_width(shown) > width and len(shown) > 1:
        candidates = shown[1:]
        drop = min(reversed(candidates), key=lambda c: c.keep)
        shown.remove(drop)
        left_out.append(drop)
    return shown, left_out


def print_table(console: Any, title: str, columns: list[Column], hint: str) -> None:
    """Print the columns that fit the console as one table, then a line naming those left out and `hint` (where
    they are: a file, a wider terminal)."""
    from rich.table import Table

    shown, left_out = fit(columns, console.width)
    table = Table(title=title)
    for column in shown:
        table.add_column(column.header, justify="right" if column.numeric else "left", no_wrap=not column.wraps,
                         overflow="fold")  # fmt: skip
    for row in zip(*(c.cells for c in shown), strict=True):
        table.add_row(*row)
    console.print(table)
    if left_out:
        names = ", ".join(c.header.replace("\n", "") for c in left_out)
        console.print(f"not shown at {console.width} columns: {names}; {hint}", markup=False, highlight=False,
                      soft_wrap=True)  # fmt: skip


def significant(value: Any, digits: int = 4) -> str:
    """A cell: numbers to `digits` significant digits (0.001284, 5.1e-05, 0.4178), ints and text as they are,
    nothing for None."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def plus_minus(sem: float) -> str:
    """`± 0.03`, or nothing where there is no spread to show (a NaN sem: fewer than two runs)."""
    return "" if sem is None or math.isnan(sem) else f"± {significant(sem, 2)}"


def header(name: str) -> str:
    """A metric's header broken after its prefix (`val/` over `JaccardIndex`): names are longer than numbers."""
    prefix, slash, rest = name.partition("/")
    return f"{prefix}/\n{rest}" if slash and rest and "\n" not in name else name
