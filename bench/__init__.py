"""nestling's benchmarks: `python -m bench [--quick] [--only NAME ...]`, or one of them with `python -m bench.NAME`.

Every benchmark measures nestling and the baseline a user would otherwise pick in the same run on the same machine,
and reports the ratio nestling / baseline next to the raw figures. They are not timed tests: nothing fails when a
target is missed; the table says so. See docs/performance.md.
"""

BENCHMARKS = (
    "overhead", "submit", "collector", "makespan", "packing", "startup", "report", "search", "one_import", "gpu", "peer",
    "threads", "snapshot",
)
