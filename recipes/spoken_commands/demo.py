"""`stenograph demo`: the spoken-commands recipe end to end (see `recipe.py`)."""

from __future__ import annotations

from .recipe import register, run, run_demo

__all__ = ["register", "run", "run_demo"]
