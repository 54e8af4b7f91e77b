"""Benchmark code that is not part of the lab: the tutorial loop the lab is measured against.

Run it through the CLI: `python -m tl_core bench --data PATH --backbone NAME --strategy NAME`
(README, "Speed"). It ships with the source checkout, not with an installed package.
"""
