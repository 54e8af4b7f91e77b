"""`plan`: what a recipe will run, stage by stage, decided before anything runs.

A recipe's plan function gets a `Context` (the user's choices, and lists to add data steps
and notes to) and returns its stages. `plan` then applies what is common to every recipe:
seeds (`tl_core.jobs.expand`, the lab's one seed rule), an epochs override, and validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tl_core import paths
from tl_core.data.folder import looks_like_path
from tl_core.errors import LabError
from tl_core.jobs import RunSpec, expand
from tl_core.models import BACKBONES
from tl_core.recipes.model import DataStep, Plan, Recipe, Stage, get_recipe

OFFLINE_BACKBONE = "efficientnet_lite0"  # its ImageNet weights ship with the lab
SOURCE_PREFIX = "@stage"  # init_from="@stage0": the first run of stage 0


def dataset_exists(name: str) -> bool:
    return (paths.datasets_dir() / name).is_dir()


@dataclass
class Context:
    """What a plan function gets: the user's choices, and where to say what it changed."""

    recipe: Recipe
    data: str | None
    offline: bool
    workspace: str = ""
    sizes: tuple[int | None, ...] | None = None
    notes: list[str] = field(default_factory=list)
    prepare: list[DataStep] = field(default_factory=list)

    def backbone(self, name: str) -> str:
        """`name`, or the offline backbone (with a note) when offline and `name`'s ImageNet
        weights would have to be downloaded (the backbone registry says which)."""
        entry = BACKBONES[name]
        if self.offline and entry.has_imagenet_weights and not entry.works_offline:
            self.notes.append(
                f"offline: {name} replaced by {OFFLINE_BACKBONE} (its ImageNet weights ship "
                "with the lab); reference figures are for " + name
            )
            return OFFLINE_BACKBONE
        return name

    def builtin_data(self, builtin: str, name: str | None = None, **step) -> str | None:
        """A built-in set used without --data: here already, or built first (None offline
        for a set that downloads; `shapes` is generated, so it is always built)."""
        name = name or builtin
        if dataset_exists(name):
            return name
        if self.offline and builtin != "shapes":
            return None
        self.prepare.append(DataStep(builtin=builtin, name=name, **step))
        return name

    def refuse_data(self) -> None:
        if self.data is not None:
            raise LabError(
                f"recipe {self.recipe.name} builds its own data from a built-in set; drop --data"
            )

    def spec(self, data: str, backbone: str, strategy: str, **fields) -> RunSpec:
        """A run of this recipe (its `recipe` field set)."""
        return RunSpec(data, backbone, strategy, recipe=self.recipe.name, **fields)


def plan(
    recipe: str | Recipe,
    data: str | None = None,
    offline: bool = False,
    *,
    epochs: int | None = None,
    seeds: int | None = None,
    sizes: tuple[int | None, ...] | None = None,
    workspace: str = "",
) -> Plan:
    """What `recipe` will run, stage by stage; raises LabError when it cannot run as asked.

    `data` is a folder or data set name (where the recipe takes one); `offline` swaps what
    needs a network for what does not, with a note. `epochs`, `seeds` and `sizes` (images per
    class, data-efficiency) shrink a recipe for a quick look or a test; a run that used them
    is no longer the recipe's reference configuration, and the plan's notes say so.
    `workspace` names the app workspace whose data sets a classroom recipe uses.
    """
    r = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    if data is not None and looks_like_path(data) and Path(data).expanduser().is_dir():
        data = str(Path(data).expanduser().resolve())  # runs may train in another folder
    ctx = Context(r, data, offline, workspace, sizes)
    stages: list[Stage] = list(r.planner(ctx))
    stages[-1] = Stage(stages[-1].title, tuple(_seeded(stages[-1].specs, r, seeds, ctx.notes)))
    if epochs is not None:
        ctx.notes.append(f"{epochs} epoch(s) per run instead of the recipe's own")
        stages = [
            Stage(
                st.title, tuple(replace(s, train=replace(s.train, epochs=epochs)) for s in st.specs)
            )
            for st in stages
        ]
    result = Plan(
        recipe=r.name,
        title=r.title,
        offline=offline,
        data=ctx.data,
        stages=tuple(stages),
        prepare=tuple(ctx.prepare),
        notes=tuple(ctx.notes),
    )
    for spec in result.specs:
        spec.validate()  # "@stageN" passes as a starting point; it is bound at launch
    return result


def _seeded(
    specs: tuple[RunSpec, ...], r: Recipe, seeds: int | None, notes: list[str]
) -> list[RunSpec]:
    """Each spec once per seed (`expand`); a count other than the recipe's own gets a note."""
    count = r.seeds if seeds is None else seeds
    if count != r.seeds:
        notes.append(
            f"{count} seeds per run"
            if r.seeds == 1
            else f"{count} seed(s) per point instead of {r.seeds}"
        )
    return [s for spec in specs for s in expand(spec, None, count)]
