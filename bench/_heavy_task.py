"""A task module the way real projects write one: lightning imported at the top (issue 15 #1).

The CLI that loads it to plan pays the torch + Lightning import, and so does every worker. The training itself is
the built-in sleep task's (each 1-epoch fit holds the CPU for sleep_s seconds)."""

from __future__ import annotations

import lightning  # noqa: F401  - on purpose, at the top

from nestling.tasks.sleep import SleepTask

TASK = SleepTask()
