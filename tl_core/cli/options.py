"""Command-line flags made from a config dataclass's fields, so a new setting is one field.

Each field becomes `--field-name` with the field's default; its `metadata` may give
`help`, `choices` (a registry: its keys are the valid values and the error lists them),
`min=1` (a whole number of at least 1), `metavar`, and `cli=False` (no flag). A bool field
that defaults to True becomes `--no-field-name`; one that defaults to False, `--field-name`.
A field without a default is a required flag. A field that is itself a config dataclass
(`RunSpec.train`) adds its own fields' flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection

from tl_core.cli.common import number, one_of, positive_int


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _argument(f: dataclasses.Field, hint, required: bool) -> tuple[str, dict]:
    meta = f.metadata
    kind = {t for t in typing.get_args(hint) if t is not type(None)} or {hint}
    default = None if f.default is dataclasses.MISSING else f.default
    kw: dict = {"dest": f.name, "help": meta.get("help", "")}
    if "metavar" in meta:
        kw["metavar"] = meta["metavar"]
    if kind == {bool}:
        kw["action"] = "store_false" if default else "store_true"
        return ("--no-" if default else "--") + f.name.replace("_", "-"), kw
    if "choices" in meta:
        names = list(meta["choices"])
        kw["type"] = one_of(names, f.name.replace("_", " "))
        kw["metavar"] = kw.get("metavar", f.name.upper())
        kw["help"] = ", ".join(names) + (f": {kw['help']}" if kw["help"] else "")
    elif kind == {int}:
        kw["type"] = positive_int if meta.get("min") == 1 else int
    elif kind == {float}:
        kw["type"] = number
    if required:
        kw["required"] = True
    else:
        kw["default"] = default
        if default is not None:
            kw["help"] += f" (default {default})" if kw["help"] else f"default {default}"
    return _flag(f.name), kw


def add_config_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: Collection[str] = (),
) -> None:
    """Add a flag for each field of dataclass `cls` (and of nested config dataclasses)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            add_config_options(parser, hint, skip=skip)
            continue
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        flag, kw = _argument(f, hint, required=missing)
        parser.add_argument(flag, **kw)


def config_from_args(cls: type, args: argparse.Namespace, **overrides):
    """An instance of `cls` from the parsed flags `add_config_options` added; fields
    without a flag keep their defaults, `overrides` win."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif dataclasses.is_dataclass(hints[f.name]):
            values[f.name] = config_from_args(hints[f.name], args)
        elif hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    return cls(**values)
