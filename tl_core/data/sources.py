"""Images that are already on hand: a folder, a zip archive, or files for one class.

A folder or archive holds class folders, under one common root or none; a `train/`,
`val/` (or `valid/`, `validation/`), `test/` layout is kept. Hidden files, `.DS_Store`
and `__MACOSX/` are ignored; every other file gets an outcome in the report.

Archives are never extracted to disk: each entry is checked (no `..`, no absolute path,
no link, no encryption), read into memory within the caps on entry count and total
uncompressed size, and handed to the `DatasetWriter`, which alone chooses where files go.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tl_core.data.store import (
    DataReport,
    ProgressFn,
    check_dataset_name,
    sanitize_class_name,
    sanitize_class_names,
)
from tl_core.data.writer import DatasetWriter
from tl_core.errors import LabError

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX"}


@dataclass(frozen=True)
class ZipLimits:
    """Caps that stop a zip bomb before it is read."""

    max_entries: int = 100_000
    max_total_bytes: int = 4 * 1024**3
    max_entry_bytes: int = 100 * 1024**2


@dataclass(frozen=True)
class _Entry:
    rel: PurePosixPath  # path inside the folder or archive
    split: str | None
    raw_class: str


def _ignored(rel: PurePosixPath) -> bool:
    return any(part.startswith(".") or part in IGNORED_NAMES for part in rel.parts)


def plan_layout(paths: Iterable[PurePosixPath], report: DataReport) -> list[_Entry]:
    """Assign each file to a (split, class), or report why it has none.

    A single top-level folder shared by every path is stepped into (the usual
    `hymenoptera_data/` root of an archive), unless it is itself a split folder.
    """
    paths = sorted(p for p in paths if not _ignored(p))
    strip = 0
    while paths and all(len(p.parts) > strip + 1 for p in paths):
        heads = {p.parts[strip] for p in paths}
        has_subfolders = any(len(p.parts) > strip + 2 for p in paths)
        if len(heads) != 1 or not has_subfolders or next(iter(heads)).lower() in SPLIT_ALIASES:
            break
        strip += 1
    rels = [(p, PurePosixPath(*p.parts[strip:])) for p in paths]
    split_layout = any(len(r.parts) >= 3 and r.parts[0].lower() in SPLIT_ALIASES for _, r in rels)
    entries = []
    for original, rel in rels:
        if split_layout:
            split = SPLIT_ALIASES.get(rel.parts[0].lower())
            if split is None:
                report.skip(original, "outside the train/val/test folders")
            elif len(rel.parts) < 3:
                report.skip(original, f"directly in {rel.parts[0]}/, not inside a class folder")
            else:
                entries.append(_Entry(original, split, rel.parts[1]))
        elif len(rel.parts) < 2:
            report.skip(original, "not inside a class folder")
        else:
            entries.append(_Entry(original, None, rel.parts[0]))
    return entries


def _class_mapping(entries: list[_Entry], report: DataReport) -> dict[str, str]:
    """Raw folder name -> class name; entries of a refused name are reported, not fatal."""
    usable = []
    for raw in dict.fromkeys(e.raw_class for e in entries):
        try:
            sanitize_class_name(raw)
            usable.append(raw)
        except LabError as exc:
            for entry in entries:
                if entry.raw_class == raw:
                    report.skip(entry.rel, str(exc))
    mapping, warnings = sanitize_class_names(usable)
    report.warnings.extend(warnings)
    return mapping


def _write_entries(
    writer: DatasetWriter,
    entries: list[_Entry],
    read: callable,
    origin: callable,
    on_progress: ProgressFn | None,
) -> None:
    mapping = _class_mapping(entries, writer.report)
    for i, entry in enumerate(entries, 1):
        data = read(entry) if entry.raw_class in mapping else None
        if data is not None:
            writer.add(
                data,
                label=mapping[entry.raw_class],
                filename=entry.rel.name,
                split=entry.split,
                origin=origin(entry),
                item=entry.rel.as_posix(),
            )
        if on_progress:
            on_progress(i, len(entries), entry.rel.as_posix())


def _walk(root: Path, report: DataReport) -> Iterator[PurePosixPath]:
    """Relative paths of regular files under root; links are reported, never followed."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink():
                dirnames.remove(d)
                rel = PurePosixPath((here / d).relative_to(root).as_posix())
                if not _ignored(rel):
                    report.skip(rel, "symbolic link (not followed)")
        for f in filenames:
            rel = PurePosixPath((here / f).relative_to(root).as_posix())
            if (here / f).is_symlink():
                if not _ignored(rel):
                    report.skip(rel, "symbolic link (not followed)")
            elif (here / f).is_file():
                yield rel


def import_folder(
    path: str | Path,
    name: str,
    *,
    replace: bool = False,
    skip_placeholders: bool = True,
    on_progress: ProgressFn | None = None,
) -> DataReport:
    """Import a folder of class folders (flat, or with train/val/test) as data set NAME."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise LabError(f"{root} is not a folder; give a folder of class folders or a .zip")
    check_dataset_name(name)
    with DatasetWriter(name, replace=replace, skip_placeholders=skip_placeholders) as writer:
        entries = plan_layout(_walk(root, writer.report), writer.report)
        if not entries:
            raise LabError(
                f"no class folders with files in {root}: put each class's images in a folder "
                "named after the class (optionally inside train/ and val/)"
            )

        def read(entry: _Entry) -> bytes | None:
            try:
                return (root / entry.rel).read_bytes()
            except OSError as exc:
                writer.report.skip(entry.rel, f"cannot read: {exc.strerror or exc}")
                return None

        def origin(entry: _Entry) -> dict:
            return {"kind": "file", "source": str(root / entry.rel)}

        _write_entries(writer, entries, read, origin, on_progress)
    return writer.report


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Why an archive entry must not be used, or None."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link in archive (refused)"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path in archive (refused)"
    if ".." in name.replace("\\", "/").split("/"):
        return "path with '..' in archive (refused)"
    if "\x00" in name:
        return "NUL character in entry name (refused)"
    if info.flag_bits & 0x1:
        return "encrypted entry (not supported)"
    return None


def import_zip(
    path: str | Path,
    name: str,
    *,
    replace: bool = False,
    skip_placeholders: bool = True,
    limits: ZipLimits | None = None,
    on_progress: ProgressFn | None = None,
) -> DataReport:
    """Import a zip archive of class folders as data set NAME. See the module docstring."""
    limits = limits or ZipLimits()
    path = Path(path).expanduser()
    check_dataset_name(name)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise LabError(f"no such file: {path}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise LabError(f"{path} is not a readable zip archive ({exc})") from None
    except UnicodeDecodeError:
        raise LabError(
            f"{path.name}: entry names are marked UTF-8 but are not valid UTF-8; "
            "re-create the archive with a standard zip tool"
        ) from None
    with archive, DatasetWriter(name, replace=replace, skip_placeholders=skip_placeholders) as w:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise LabError(
                f"{path.name} refused: {len(infos):,} entries is over the limit of "
                f"{limits.max_entries:,} (possible zip bomb)"
            )
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_total_bytes:
            raise LabError(
                f"{path.name} refused: {declared:,} bytes uncompressed is over the limit of "
                f"{limits.max_total_bytes:,} (possible zip bomb)"
            )
        by_path: dict[PurePosixPath, zipfile.ZipInfo] = {}
        for info in infos:
            if info.is_dir():
                continue
            rel = PurePosixPath(info.filename.replace("\\", "/"))
            problem = _entry_problem(info)
            if problem:
                w.report.skip(info.filename, problem)
            elif not _ignored(rel):
                by_path[rel] = info
        entries = plan_layout(by_path, w.report)
        if not entries:
            raise LabError(
                f"no class folders with files in {path.name}: the archive should hold one "
                "folder per class (optionally inside train/ and val/); "
                f"{len(w.report.skipped)} entries refused or unplaced"
            )
        total = 0

        def read(entry: _Entry) -> bytes | None:
            nonlocal total
            info = by_path[entry.rel]
            if info.file_size > limits.max_entry_bytes:
                w.report.skip(entry.rel, f"entry too large ({info.file_size:,} bytes)")
                return None
            try:
                with archive.open(info) as f:
                    data = f.read(limits.max_entry_bytes + 1)
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
                w.report.skip(entry.rel, f"damaged archive entry ({exc})")
                return None
            total += len(data)
            if total > limits.max_total_bytes:
                raise LabError(f"{path.name} refused: more data than it declares (zip bomb)")
            return data

        def origin(entry: _Entry) -> dict:
            return {"kind": "file", "source": f"{path}!{entry.rel.as_posix()}"}

        _write_entries(w, entries, read, origin, on_progress)
    return w.report


def import_path(path: str | Path, name: str, **kwargs) -> DataReport:
    """`import_zip` for a .zip file, `import_folder` for a folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        return import_folder(path, name, **kwargs)
    if path.is_file() and zipfile.is_zipfile(path):
        return import_zip(path, name, **kwargs)
    if path.exists():
        raise LabError(f"{path} is neither a folder nor a zip archive")
    raise LabError(f"no such file or folder: {path}")


def add_images(
    name: str,
    class_name: str,
    files: Iterable[tuple[str, bytes]],
    *,
    split: str | None = None,
    source: str = "upload",
    skip_placeholders: bool = True,
    on_progress: ProgressFn | None = None,
) -> DataReport:
    """Add images for one class to data set NAME (created if missing).

    `files` are (file name, bytes) pairs: what the app's uploader and webcam capture give.
    `source` is recorded as the origin kind ("upload", "camera", ...).
    """
    label = sanitize_class_name(class_name)
    files = list(files)
    if not files:
        raise LabError("no files given; choose one or more images")
    with DatasetWriter(name, skip_placeholders=skip_placeholders) as writer:
        if label != class_name:
            writer.report.warnings.append(f"class {class_name!r} stored as {label!r}")
        for i, (filename, data) in enumerate(files, 1):
            writer.add(
                data,
                label=label,
                filename=filename or f"{source}.png",
                split=split,
                origin={"kind": source, "source": filename},
            )
            if on_progress:
                on_progress(i, len(files), filename)
    return writer.report
