"""Recipes: named experiments, each one registered plan function.

- `model`: the registry (`RECIPES`, the published experiments the lab reproduces;
  `CLASSROOM`, the app's one-click lessons), filled by the `@recipe` decorator, and the
  `Plan` a recipe makes (data steps, stages of `RunSpec`s).
- `published`, `classroom`: the recipes themselves; adding one is one decorated function.
- `planning`: `plan(name, data, offline, ...)` calls a recipe's plan function with a
  `Context` (offline substitution from the backbone registry, built-in data, notes), then
  applies seeds (`tl_core.jobs.expand`), an epochs override and validation.
- `launch`: `prepare_data`, `start_recipe` (queues every stage in the run store, each stage
  waiting for the one before), `queue_recipe` (the pages' one click), `run_recipe` (the
  CLI: train here), `launch_status`.
- `results`: `recipe_results`, what the runs measured beside the reference; `charts` draws
  it. The `recipe` command (`tl_core/cli/recipe.py`) calls `plan` and `run_recipe`.

Recipes train nothing themselves: every run is an ordinary run of the lab, queued with
`tl_core.jobs.queue_runs` and trained by `execute_run` (here or by the app's worker).
`offline=True` swaps what needs a network for what does not (a backbone whose ImageNet
weights would be downloaded for `efficientnet_lite0`, CIFAR-10 for Fashion-MNIST); the
plan's `notes` say so.
"""

from __future__ import annotations

from tl_core.recipes import classroom, published  # noqa: F401 - registers the recipes
from tl_core.recipes.launch import (
    LaunchStatus,
    bind_stage,
    launch_runs,
    launch_status,
    prepare_data,
    queue_recipe,
    run_recipe,
    stage_group,
    start_recipe,
)
from tl_core.recipes.model import (
    CLASSROOM,
    RECIPES,
    DataStep,
    Plan,
    Recipe,
    Reference,
    Stage,
    get_recipe,
    recipe,
)
from tl_core.recipes.planning import OFFLINE_BACKBONE, Context, plan
from tl_core.recipes.published import EFFICIENCY_SIZES
from tl_core.recipes.results import efficiency_curve, recipe_results

__all__ = [
    "CLASSROOM",
    "EFFICIENCY_SIZES",
    "OFFLINE_BACKBONE",
    "RECIPES",
    "Context",
    "DataStep",
    "LaunchStatus",
    "Plan",
    "Recipe",
    "Reference",
    "Stage",
    "bind_stage",
    "efficiency_curve",
    "get_recipe",
    "launch_runs",
    "launch_status",
    "plan",
    "prepare_data",
    "queue_recipe",
    "recipe",
    "recipe_results",
    "run_recipe",
    "stage_group",
    "start_recipe",
]
