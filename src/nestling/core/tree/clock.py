"""The one timestamp format written into the tree: ISO 8601, UTC, whole seconds, a trailing "Z"
(run_result.json's started_at/finished_at, an attempt lock's `started`)."""

from __future__ import annotations

import datetime as dt


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
