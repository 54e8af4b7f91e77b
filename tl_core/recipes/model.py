"""What a recipe is: its registry entry (`Recipe`, added by the `@recipe` decorator) and the
`Plan` its plan function produces (data to build first, then stages of `RunSpec`s)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from tl_core.errors import LabError
from tl_core.jobs import RunSpec


@dataclass(frozen=True)
class Reference:
    """What the original experiment reported: a sentence, numbers by run label, a source."""

    text: str
    figures: dict[str, float] = field(default_factory=dict)  # label -> best val accuracy
    source: str = ""


@dataclass(frozen=True)
class Recipe:
    """A named experiment: what it shows, what it should reproduce, and its plan function."""

    name: str
    title: str
    description: str
    planner: Callable = field(repr=False, compare=False)  # (Context) -> list[Stage]
    reference: Reference = Reference("")
    data_hint: str = ""  # what --data takes, for --help and the page
    needs_network: str = ""  # what needs a network without --offline ("" for nothing)
    chart: str = "strategies"  # "strategies", "overlay" (per-epoch curves) or "efficiency"
    seeds: int = 1  # training seeds per run of the last stage, unless --seeds says otherwise
    classroom: bool = False  # a one-click lesson of the app (Home, Learn), not a reproduction

    @property
    def takes_data(self) -> bool:
        """Whether the recipe runs on a data set the user gives (the others build their own)."""
        return not self.data_hint.startswith("nothing")


# The published experiments the lab reproduces (`recipe --list`, the Experiments page), and
# the app's one-click lessons (Home, Learn). Both are filled by `@recipe`, in that order.
RECIPES: dict[str, Recipe] = {}
CLASSROOM: dict[str, Recipe] = {}


def recipe(*, name: str, title: str, description: str, **fields) -> Callable:
    """Register the decorated plan function as recipe `name` (fields: those of `Recipe`)."""

    def register(planner: Callable) -> Callable:
        if name in RECIPES or name in CLASSROOM:
            raise ValueError(f"recipe {name!r} is registered twice")
        entry = Recipe(name, title, description, planner, **fields)
        (CLASSROOM if entry.classroom else RECIPES)[name] = entry
        return planner

    return register


def get_recipe(name: str) -> Recipe:
    found = RECIPES.get(name) or CLASSROOM.get(name)
    if found is None:
        raise LabError(
            f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)} "
            f"(classroom: {', '.join(CLASSROOM)})"
        )
    return found


@dataclass(frozen=True)
class DataStep:
    """A data set to build before the runs: a built-in set, or a source/target class split."""

    builtin: str
    name: str  # the data set name the runs use
    target_classes: tuple[str | int, ...] = ()  # a split: B keeps these, A keeps the rest
    target_name: str | None = None
    per_class_target: int | None = None  # cap B per class and split (keeps validation small)
    per_class: int | None = None  # a built-in set: images per class to build (None: all)

    @property
    def description(self) -> str:
        if not self.target_classes:
            return f"build the built-in set {self.builtin!r} as {self.name!r} (once)"
        return (
            f"split {self.builtin!r} into source {self.name!r} (all classes but "
            f"{', '.join(map(str, self.target_classes))}) and target {self.target_name!r}"
        )


@dataclass(frozen=True)
class Stage:
    title: str
    specs: tuple[RunSpec, ...]


@dataclass(frozen=True)
class Plan:
    """Everything a recipe will do, decided before anything runs."""

    recipe: str
    title: str
    offline: bool
    data: str | None  # the --data the user gave, if any
    stages: tuple[Stage, ...]
    prepare: tuple[DataStep, ...] = ()
    notes: tuple[str, ...] = ()  # substitutions and caveats, said plainly

    @property
    def specs(self) -> list[RunSpec]:
        return [spec for stage in self.stages for spec in stage.specs]

    def to_dict(self) -> dict:
        return {
            "recipe": self.recipe,
            "title": self.title,
            "offline": self.offline,
            "data": self.data,
            "notes": list(self.notes),
            "prepare": [asdict(d) for d in self.prepare],
            "stages": [
                {"title": s.title, "specs": [spec.to_dict() for spec in s.specs]}
                for s in self.stages
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(
            recipe=d["recipe"],
            title=d["title"],
            offline=d["offline"],
            data=d.get("data"),
            notes=tuple(d.get("notes", ())),
            prepare=tuple(
                DataStep(**{**p, "target_classes": tuple(p.get("target_classes", ()))})
                for p in d.get("prepare", ())
            ),
            stages=tuple(
                Stage(s["title"], tuple(RunSpec.from_dict(x) for x in s["specs"]))
                for s in d["stages"]
            ),
        )
