"""The signatures of `shutil.which` and `subprocess.run` as the modules that look for or start programs take them:
injectable, so a unit test can answer for a program this machine lacks."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

Which = Callable[[str], "str | None"]
Run = Callable[..., "subprocess.CompletedProcess[Any]"]
