"""A string enum whose values are written to the tree (run_result.json, parquet tables) and read back, perhaps by
another version of nestling: reading a value this version does not know gives None, never an error, so that a
reader can skip what it cannot use (RunState, StopReason, FailureClass)."""

from __future__ import annotations

from enum import StrEnum
from typing import Self, cast


class RecordedEnum(StrEnum):
    @classmethod
    def named(cls, value: object) -> Self | None:
        """The member a file's string names; None for anything else (another version's value, a missing key)."""
        if not isinstance(value, str):
            return None
        return cast("Self | None", cls._value2member_map_.get(value))
