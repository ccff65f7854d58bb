"""`python -m bench [--quick] [--only NAME ...]`: run the benchmarks, print one table, write bench/results.parquet."""

from __future__ import annotations

import argparse
import importlib
import time
import traceback

from bench import BENCHMARKS
from bench._common import REPO, RESULTS, Row, save, table


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes (4 minutes on the shared 2-core machine, see docs/performance.md)",
    )
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)})")  # fmt: skip
    args = parser.parse_args()
    names = args.only or list(BENCHMARKS)
    rows: list[Row] = []
    started = time.perf_counter()
    took: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        print(f"bench: {name} ...", flush=True)
        try:
            rows += importlib.import_module(f"bench.{name}").run(args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            rows.append(
                Row(name, "(failed)", None, note=f"{type(exc).__name__}: {str(exc)[:300]}", quick=args.quick)
            )
        took[name] = time.perf_counter() - t0
    print()
    print(table(rows))
    save(rows, names)
    total = time.perf_counter() - started
    print(f"\n{'quick' if args.quick else 'full'} run: {total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in
          took.items()) + f"); results in {RESULTS.relative_to(REPO)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
