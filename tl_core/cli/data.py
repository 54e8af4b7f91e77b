"""`python -m tl_core data ...`: the data set commands, each a thin call into tl_core.data.

Every command takes `--json` and then prints, as its last stdout line, a report with at
least `name, classes, added, skipped` (each skipped file or URL with its reason) and
`counts` per class. Progress bars go to stderr. Exit codes: 0 done; 1 when an import ran
but added nothing while refusing something; 2 for bad input (a `LabError`, printed as one
line by the main CLI).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from tl_core.cli.common import Bars, add_json_flag, emit, positive_int, positive_number
from tl_core.data import builtin, class_splits, curate, download, search, sources, store, writer
from tl_core.errors import LabError


def _emit(report: dict, args: argparse.Namespace, lines: list[str]) -> None:
    emit(report, args.json, "\n".join(lines))


def _report_lines(r: store.DataReport) -> list[str]:
    lines = [f"{r.name}: {r.added} images added, {len(r.skipped)} skipped"]
    lines += [f"  {label}: {n}" for label, n in r.counts.items()]
    lines += [f"  skipped {s.item}: {s.reason}" for s in r.skipped]
    lines += [f"  warning: {w}" for w in r.warnings]
    return lines


def _finish(r: store.DataReport, args: argparse.Namespace) -> int:
    _emit(r.to_dict(), args, _report_lines(r))
    return 1 if r.added == 0 and r.skipped and not r.counts else 0


def _with_progress(desc: str, fn: Callable[..., store.DataReport], *a, **kw) -> store.DataReport:
    bars = Bars()
    try:
        return fn(*a, on_progress=lambda done, total, _m: bars.status(desc, done, total), **kw)
    finally:
        bars.close()


def cmd_list(args: argparse.Namespace) -> int:
    infos = store.list_datasets()
    report = {
        "name": None,
        "classes": [],
        "added": 0,
        "skipped": [],
        "counts": {},
        "datasets": [i.to_dict() for i in infos],
    }
    lines = [f"{i.name}: {i.images} images, {len(i.classes)} classes ({i.layout})" for i in infos]
    _emit(report, args, lines or ["no data sets yet; try `python -m tl_core data builtin shapes`"])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ins = curate.inspect_dataset(args.name, check_placeholders=not args.fast)
    report = {"added": 0, "skipped": []} | ins.to_dict()
    lines = [
        f"{ins.name}: {ins.images} images, {len(ins.classes)} classes, layout {ins.layout}",
        *(
            f"  {split}: " + ", ".join(f"{c} {n}" for c, n in counts.items())
            for split, counts in ins.split_counts.items()
        ),
        f"  sizes: width {ins.width}, height {ins.height}; formats {ins.formats}",
        f"  balance (smallest/largest class): {ins.balance}",
        *(f"  duplicate files: {', '.join(g)}" for g in ins.duplicates),
        *(f"  near-duplicate: {p['train']} ~ {p['other']}" for p in ins.leakage),
        *(f"  placeholder? {p['path']}: {p['reason']}" for p in ins.placeholders),
        *(f"  warning: {w}" for w in ins.warnings),
    ]
    _emit(report, args, lines)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    r = _with_progress(
        "import",
        sources.import_path,
        args.path,
        args.name,
        replace=args.replace,
        skip_placeholders=not args.keep_placeholders,
    )
    return _finish(r, args)


def cmd_add(args: argparse.Namespace) -> int:
    files = []
    for f in args.files:
        path = Path(f)
        if not path.is_file():
            raise LabError(f"no such file: {path}")
        files.append((path.name, path.read_bytes()))
    r = sources.add_images(args.name, args.class_name, files, split=args.split, source="file")
    return _finish(r, args)


def _policy(args: argparse.Namespace) -> download.FetchPolicy:
    if args.workers < 1 or args.timeout <= 0 or args.max_mb <= 0:
        raise LabError("--workers, --timeout and --max-mb must be positive")
    return download.default_policy(
        workers=args.workers,
        read_timeout=args.timeout,
        connect_timeout=args.timeout,
        total_timeout=args.timeout,
        max_bytes=int(args.max_mb * 1024 * 1024),
    )


def cmd_urls(args: argparse.Namespace) -> int:
    r = download.download_url_list(
        args.file,
        args.name,
        label=args.label,
        policy=_policy(args),
        replace=args.replace,
        progress=True,
    )
    return _finish(r, args)


def cmd_search(args: argparse.Namespace) -> int:
    policy = _policy(args)
    provider = search.WikimediaCommons(api_url=args.api_url, fetcher=download.SafeFetcher(policy))
    r = search.search_images(
        args.name,
        args.terms,
        args.per_class,
        provider=provider,
        policy=policy,
        replace=args.replace,
        progress=True,
    )
    return _finish(r, args)


def cmd_builtin(args: argparse.Namespace) -> int:
    r = _with_progress(
        args.builtin,
        builtin.build_builtin,
        args.builtin,
        name=args.as_name,
        per_class=args.per_class,
        seed=args.seed,
        force=args.force,
    )
    return _finish(r, args)


def cmd_rm(args: argparse.Namespace) -> int:
    return _finish(writer.delete_dataset(args.name), args)


def cmd_split_classes(args: argparse.Namespace) -> int:
    keep = [k.strip() for k in args.keep.split(",") if k.strip()]
    r = class_splits.split_classes(
        args.source, keep, args.name, per_class=args.per_class, seed=args.seed
    )
    return _finish(r, args)


def cmd_rm_class(args: argparse.Namespace) -> int:
    return _finish(curate.remove_class(args.name, args.class_name), args)


def cmd_rename_class(args: argparse.Namespace) -> int:
    return _finish(curate.rename_class(args.name, args.old, args.new), args)


def cmd_rm_images(args: argparse.Namespace) -> int:
    return _finish(curate.remove_images(args.name, args.paths), args)


def cmd_rm_placeholders(args: argparse.Namespace) -> int:
    return _finish(curate.remove_placeholders(args.name), args)


def cmd_resplit(args: argparse.Namespace) -> int:
    r = curate.resplit(args.name, val_fraction=args.val, test_fraction=args.test, seed=args.seed)
    return _finish(r, args)


def _leaf(sub, name: str, func: Callable[[argparse.Namespace], int], help: str):
    p = sub.add_parser(name, help=help, description=help)
    add_json_flag(p)
    p.set_defaults(func=func)
    return p


def _fetch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=8, help="parallel downloads (8)")
    p.add_argument("--timeout", type=positive_number, default=20.0, help="seconds per URL (20)")
    p.add_argument("--max-mb", type=positive_number, default=20.0, help="size limit per file (20)")
    p.add_argument("--replace", action="store_true", help="start the data set afresh")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `data` and its commands to the main CLI's subparsers."""
    data = subparsers.add_parser("data", help="gather, list and curate data sets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    _add_gather_commands(sub)
    _add_curate_commands(sub)


def _add_gather_commands(sub) -> None:
    _leaf(sub, "list", cmd_list, "list the data sets")
    p = _leaf(sub, "show", cmd_show, "summary, balance, duplicates, leakage and placeholders")
    p.add_argument("name")
    p.add_argument("--fast", action="store_true", help="skip the placeholder scan")

    p = _leaf(sub, "import", cmd_import, "import a folder or zip of class folders")
    p.add_argument("path", metavar="PATH_OR_ZIP")
    p.add_argument("--name", required=True)
    p.add_argument("--replace", action="store_true", help="replace the data set, not extend")
    p.add_argument("--keep-placeholders", action="store_true", help="keep placeholder images")

    p = _leaf(sub, "add", cmd_add, "add image files to one class")
    p.add_argument("name")
    p.add_argument("--class", dest="class_name", required=True)
    p.add_argument("--split", choices=store.SPLITS)
    p.add_argument("files", nargs="+")

    p = _leaf(sub, "urls", cmd_urls, "download a URL list: CSV url,label or a .txt per class")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", required=True)
    p.add_argument("--label", help="class for a plain .txt list (default: the file name)")
    _fetch_options(p)

    p = _leaf(sub, "search", cmd_search, "one class per search term, images from Wikimedia Commons")
    p.add_argument("--terms", required=True, help='comma-separated, e.g. "ant,bee"')
    p.add_argument("--per-class", type=positive_int, default=20)
    p.add_argument("--name", required=True)
    p.add_argument("--api-url", default=search.COMMONS_API, help=argparse.SUPPRESS)
    _fetch_options(p)

    p = _leaf(sub, "builtin", cmd_builtin, f"build a built-in set: {', '.join(builtin.BUILTINS)}")
    p.add_argument("builtin", metavar="NAME", choices=list(builtin.BUILTINS))
    p.add_argument("--as", dest="as_name", help="data set name (default: NAME)")
    p.add_argument("--per-class", type=positive_int, help="cap images per class and split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild an existing set")


def _add_curate_commands(sub) -> None:
    p = _leaf(sub, "rm", cmd_rm, "delete a data set")
    p.add_argument("name")

    p = _leaf(sub, "split-classes", cmd_split_classes, "new set with some classes of another")
    p.add_argument("source")
    p.add_argument("--keep", required=True, help="class names or indices, comma-separated")
    p.add_argument("--name", required=True)
    p.add_argument("--per-class", type=positive_int)
    p.add_argument("--seed", type=int, default=0)

    p = _leaf(sub, "rm-class", cmd_rm_class, "remove a class")
    p.add_argument("name")
    p.add_argument("class_name", metavar="CLASS")

    p = _leaf(sub, "rename-class", cmd_rename_class, "rename (or merge) a class")
    p.add_argument("name")
    p.add_argument("old")
    p.add_argument("new")

    p = _leaf(sub, "rm-images", cmd_rm_images, "remove images by their path in the set")
    p.add_argument("name")
    p.add_argument("paths", nargs="+")

    p = _leaf(sub, "rm-placeholders", cmd_rm_placeholders, "remove the images `show` flags")
    p.add_argument("name")

    p = _leaf(sub, "resplit", cmd_resplit, "shuffle into train/val(/test) anew, per class")
    p.add_argument("name")
    p.add_argument("--val", type=float, default=0.2)
    p.add_argument("--test", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
