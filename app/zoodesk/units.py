"""Sizes and durations as people read them, for the command line and the desktop
application alike (cheap to import: standard library only)."""

from __future__ import annotations

import math

__all__ = ["duration", "human_size"]


def human_size(n: int) -> str:
    """``512 B``, ``1.5 kB``, ``6.0 MB``, ``2.3 GB`` (decimal units, as file managers
    show file sizes)."""
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``; ``–`` when not finite."""
    if not math.isfinite(seconds):
        return "–"
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, seconds_left = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {seconds_left:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
