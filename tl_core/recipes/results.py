"""What a recipe's runs measured, beside the reference figures (drawn by `charts`)."""

from __future__ import annotations

import statistics

from tl_core.errors import LabError
from tl_core.jobs import run_summary
from tl_core.recipes.launch import launch_runs
from tl_core.recipes.model import Plan, Recipe, get_recipe
from tl_core.recipes.planning import OFFLINE_BACKBONE
from tl_core.runs import FINISHED, RunStore


def recipe_results(
    store: RunStore,
    launch_id: str | None = None,
    *,
    run_ids: list[str] | None = None,
    plan: Plan | None = None,
) -> dict:
    """What a recipe's runs measured, beside the reference figures.

    Give a `launch_id` (from `start_recipe`/`run_recipe`; with its `plan` for the notes), or
    the `run_ids` of recipe runs (e.g. a Results page group). Returns a JSON-able dict:
    `recipe`, `title`, `reference` (text, figures, source), `notes`, `status`, `runs` (one
    row per run: label, stage, strategy, per_class, seed, best_val_acc, ...), `summary` (one
    row per label: mean and spread over seeds, and the reference figure where there is one)
    and, for data-efficiency, `curve` (per strategy and images per class: mean and std of the
    best and of the final accuracy, seeds).
    """
    if launch_id is not None:
        stages = launch_runs(store, launch_id)
    elif run_ids:
        stages = [[store.get(i) for i in run_ids]]
    else:
        raise LabError("recipe_results needs a launch id or run ids")
    records = [(k, r) for k, stage in enumerate(stages) for r in stage]
    names = {r.get("recipe") for _, r in records} - {None}
    if not names and plan is not None:
        names = {plan.recipe}  # a classroom lesson: its runs record no recipe
    if len(names) != 1:
        raise LabError("these runs do not belong to one recipe")
    recipe = get_recipe(names.pop())
    rows = [_row(stage, rec) for stage, rec in records]
    statuses = [r["status"] for r in rows]
    if any(s not in FINISHED for s in statuses):
        status = "running"
    else:
        status = "done" if all(s == "done" for s in statuses) else "failed"
    out = {
        "launch_id": launch_id,
        "recipe": recipe.name,
        "title": recipe.title,
        "offline": plan.offline
        if plan is not None
        else any(r["backbone"] == OFFLINE_BACKBONE for r in rows),
        "notes": list(plan.notes) if plan is not None else [],
        "reference": {
            "text": recipe.reference.text,
            "figures": recipe.reference.figures,
            "source": recipe.reference.source,
        },
        "chart": recipe.chart,
        "status": status,
        "runs": rows,
        "summary": _summary(rows, recipe),
    }
    if recipe.chart == "efficiency":
        out["curve"] = efficiency_curve(rows)
    return out


def _row(stage: int, rec: dict) -> dict:
    config = rec.get("config") or {}
    return {
        **run_summary(rec),
        "label": rec.get("name") or rec["strategy"],
        "stage": stage,
        "per_class": config.get("per_class"),
        "train_per_class": (rec["num_train"] / rec["num_classes"])
        if rec.get("num_train") and rec.get("num_classes")
        else None,
        "trainable_blocks": config.get("trainable_blocks"),
        "init_from": config.get("init_from"),
    }


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _done_accs(group: list[dict]) -> list[float]:
    return [
        r["best_val_acc"] for r in group if r["status"] == "done" and r["best_val_acc"] is not None
    ]


def _summary(rows: list[dict], recipe: Recipe) -> list[dict]:
    """One row per label: mean and spread over seeds, and the reference figure."""
    summary = []
    for label in dict.fromkeys(r["label"] for r in rows):
        group = [r for r in rows if r["label"] == label]
        accs = _done_accs(group)
        mean, std = _mean_std(accs)
        ref = recipe.reference.figures.get(label)
        if ref is None:
            ref = recipe.reference.figures.get(group[0]["strategy"])
        summary.append(
            {
                "label": label,
                "stage": group[0]["stage"],
                "backbone": group[0]["backbone"],
                "strategy": group[0]["strategy"],
                "runs": len(group),
                "done": len(accs),
                "best_val_acc": mean,
                "best_val_acc_std": std,
                "reference": ref,
            }
        )
    return summary


def efficiency_curve(rows: list[dict]) -> list[dict]:
    """Per strategy and training images per class: mean and spread of the best validation
    accuracy (`mean`, `std`) and of the final one (`final_mean`, `final_std`)."""
    points: dict[tuple[str, int | None], list[dict]] = {}
    for r in rows:
        points.setdefault((r["strategy"], r["per_class"]), []).append(r)
    curve = []
    for (strategy, per_class), group in points.items():
        done = [r for r in group if r["status"] == "done" and r["best_val_acc"] is not None]
        mean, std = _mean_std(_done_accs(group))
        final_mean, final_std = _mean_std(
            [r["final_val_acc"] for r in done if r.get("final_val_acc") is not None]
        )
        sizes = [r["train_per_class"] for r in done if r["train_per_class"]]
        curve.append(
            {
                "strategy": strategy,
                "per_class": per_class,
                "images_per_class": statistics.fmean(sizes) if sizes else per_class,
                "mean": mean,  # of the best validation accuracy
                "std": std,
                "final_mean": final_mean,  # of the last epoch's
                "final_std": final_std,
                "seeds": len(done),
                "runs": len(group),
            }
        )
    return sorted(curve, key=lambda c: (c["strategy"], c["images_per_class"] or 0))
