"""What a task author imports: `from nestling.task import Split, Task` (see docs/custom-task.md). The interface
lives in `nestling.core.ml.task`; this name is permanent."""

from nestling.core.ml.task import Split, Task, load_task

__all__ = ["Split", "Task", "load_task"]
