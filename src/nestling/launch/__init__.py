"""Launchers execute the work units of a written plan. See base.Launcher for the interface."""

from __future__ import annotations
