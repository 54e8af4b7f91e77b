"""Numbers as people read them: durations and percentages, for the pages and the CLI."""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    """'45 s', '3 min 5 s', '1 h 2 min'; '-' for unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def percent(x: float | None) -> str:
    """0.1234 -> '12.3%'; '-' for unknown."""
    return "-" if x is None else f"{100 * x:.1f}%"


def mistakes_heading(wrong: int, total: int, shown: int) -> str:
    """The heading over the gallery of misclassified pictures, which may show only some."""
    text = f"**Misclassified validation images:** {wrong} of {total}"
    return text + (f" (showing the {shown} most confident)" if shown < wrong else "")
