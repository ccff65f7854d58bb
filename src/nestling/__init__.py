"""nestling: how a model is born — tune -> cross-validation -> training run."""

from __future__ import annotations

__version__ = "0.1.0"
