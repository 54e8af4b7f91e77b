"""Numbers as text: durations, percentages, the mistakes gallery's heading."""

from __future__ import annotations

from tl_core.fmt import format_duration, mistakes_heading, percent


def test_the_mistakes_heading_says_when_it_shows_only_some():
    assert mistakes_heading(83, 153, 24) == (
        "**Misclassified validation images:** 83 of 153 (showing the 24 most confident)"
    )
    assert mistakes_heading(5, 153, 5) == "**Misclassified validation images:** 5 of 153"


def test_durations_and_percentages():
    assert format_duration(75) == "1 min 15 s" and format_duration(None) == "-"
    assert percent(0.9673) == "96.7%" and percent(None) == "-"
