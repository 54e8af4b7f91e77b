"""Data sets on disk: naming, the manifest (one record per image), and reading it.

A data set is a folder `datasets_dir()/NAME` in class-folder layout, either flat
(`NAME/<class>/*`) or split (`NAME/train/<class>/*`, `NAME/val/<class>/*`, optional `test/`),
plus `NAME/manifest.json`, one record per image: where it came from (a file, a URL, a search
hit with its licence and author), its SHA-256, size in bytes and pixels. A folder without a
manifest is read by the one layout reader, `tl_core.data.layout.read_layout`.

Every change goes through `tl_core.data.writer.DatasetWriter`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from tl_core.data.images import (
    ImageDecodeError,
    colour_signature,
    decode_bytes,
    dhash,
    is_image_name,
)
from tl_core.data.layout import SPLITS, ImageEntry, read_layout
from tl_core.errors import LabError
from tl_core.owners import remove_stale_temporaries
from tl_core.paths import datasets_dir

MANIFEST = "manifest.json"
MAX_CLASS_NAME = 64
MAX_FILE_NAME = 100

ProgressFn = Callable[[int, int, str], None]

_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
# Folder names the layout itself uses (splits and their aliases, the manifest), and names
# Windows cannot hold: a class by one of these names would break the data set.
RESERVED_CLASS_NAMES = frozenset(
    {MANIFEST, *SPLITS, "training", "valid", "validation", "testing", "con", "prn", "aux", "nul"}
    | {f"{dev}{n}" for dev in ("com", "lpt") for n in range(1, 10)}
)


# ---------------------------------------------------------------------------------------
# Names


def check_dataset_name(name: str) -> str:
    """A data set name is one folder name: letters, digits, `.`, `_`, `-`, up to 64."""
    if not isinstance(name, str) or not _DATASET_NAME.match(name) or ".." in name:
        raise LabError(
            f"invalid data set name {name!r}: use letters, digits, '.', '_' or '-' "
            "(up to 64, starting with a letter or digit), e.g. 'ants-bees'"
        )
    return name


def dataset_path(name: str) -> Path:
    """Where data set NAME lives (it may not exist yet)."""
    return datasets_dir() / check_dataset_name(name)


def sanitize_class_name(raw: str) -> str:
    """Turn a folder name, CSV label or search term into a safe class folder name.

    NFC-normalised, no path separators or control characters, no invisible format
    characters (bidirectional overrides such as U+202E and zero-width ones such as U+200B,
    which make one name look like another), no leading dots or underscores (so no `..`, no
    hidden or skipped folders), whitespace collapsed, at most `MAX_CLASS_NAME` characters.
    Raises `LabError` when nothing usable is left, or for a name the layout reserves
    (`train`, `val`, `test`, `manifest.json`, ...).
    """
    name = unicodedata.normalize("NFC", str(raw))
    name = "".join(c for c in name if unicodedata.category(c) != "Cf")
    name = _UNSAFE_CHARS.sub("_", name)
    # No leading dot (hidden, `..`) or underscore (class readers skip such folders).
    name = " ".join(name.split()).lstrip("._ ").strip()
    name = name[:MAX_CLASS_NAME].rstrip(" .")
    if not name or set(name) <= {"_", "."}:
        raise LabError(f"class name {raw!r} has no usable characters; use letters or digits")
    if name.casefold() in RESERVED_CLASS_NAMES:
        raise LabError(
            f"class name {raw!r} is reserved (the data set uses {', '.join(SPLITS)} and "
            f"{MANIFEST} itself); rename that class, e.g. {name + '-class'!r}"
        )
    return name


def sanitize_class_names(raws: list[str]) -> tuple[dict[str, str], list[str]]:
    """Map each raw name to its folder name; report names that end up as the same folder.

    Names that differ only in case also collide (they would share a folder on macOS and
    Windows). Colliding names are merged into one class; the warning says so.
    """
    mapping: dict[str, str] = {}
    by_key: dict[str, list[str]] = {}
    first_folder: dict[str, str] = {}
    for raw in dict.fromkeys(raws):
        folder = sanitize_class_name(raw)
        key = folder.casefold()
        folder = first_folder.setdefault(key, folder)
        mapping[raw] = folder
        by_key.setdefault(key, []).append(raw)
    warnings = [
        f"class names {', '.join(repr(r) for r in group)} all become folder "
        f"{mapping[group[0]]!r}; their images were merged"
        for group in by_key.values()
        if len(group) > 1
    ]
    return mapping, warnings


def safe_file_name(raw: str, suffix: str) -> str:
    """A plain file name from an uploaded or archived name, with the given suffix."""
    stem = PurePosixPath(str(raw).replace("\\", "/")).name
    stem = unicodedata.normalize("NFC", stem)
    stem = Path(stem).stem if is_image_name(stem) or "." in stem else stem
    stem = _UNSAFE_CHARS.sub("_", stem).strip().lstrip(".")[:MAX_FILE_NAME] or "image"
    return stem + suffix


# ---------------------------------------------------------------------------------------
# Reports and records


@dataclass
class Skipped:
    item: str
    reason: str


@dataclass
class DataReport:
    """What an operation did: the CLI's `--json` report and the app's summary."""

    name: str
    classes: list[str] = field(default_factory=list)
    added: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # images per class, afterwards
    added_per_class: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    path: str = ""

    def skip(self, item: str, reason: str) -> None:
        self.skipped.append(Skipped(str(item), reason))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass
class ImageRecord:
    """One image in a manifest. `path` is relative to the data set folder, POSIX style."""

    path: str
    label: str
    split: str | None
    sha256: str
    bytes: int
    width: int
    height: int
    format: str
    dhash: str
    origin: dict
    colour: str = ""  # `colour_signature`, with `dhash` for near-duplicates
    stored: str = "original"  # or "re-encoded"
    source_sha256: str | None = None  # the bytes as received, when re-encoded

    @classmethod
    def of(
        cls, path: str, label: str, split: str | None, data: bytes, rgb, fmt: str, **more
    ) -> ImageRecord:
        """The record of the stored bytes `data`, whose upright RGB picture is `rgb`."""
        return cls(
            path=path,
            label=label,
            split=split,
            sha256=hashlib.sha256(data).hexdigest(),
            bytes=len(data),
            width=rgb.size[0],
            height=rgb.size[1],
            format=fmt,
            dhash=f"{dhash(rgb):016x}",
            colour=colour_signature(rgb),
            **more,
        )

    @classmethod
    def from_dict(cls, d: dict) -> ImageRecord:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Manifest:
    name: str
    layout: str  # "flat" or "split"
    images: list[ImageRecord] = field(default_factory=list)
    class_order: list[str] | None = None  # a built-in set's own label order, if any
    info: dict = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return sorted({r.label for r in self.images})

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.label for r in self.images).items()))

    def to_dict(self) -> dict:
        return {
            "version": 1,
            "name": self.name,
            "layout": self.layout,
            "class_order": self.class_order,
            "info": self.info,
            "images": [asdict(r) for r in self.images],
        }


def _record_for_file(root: Path, entry: ImageEntry) -> ImageRecord | None:
    file = entry.path
    rel = file.relative_to(root)
    try:
        data = file.read_bytes()
        image = decode_bytes(data)
    except (OSError, ImageDecodeError):
        return None
    return ImageRecord.of(
        rel.as_posix(),
        entry.label,
        entry.split,
        data,
        image.rgb,
        image.format,
        origin={"kind": "file", "source": str(file)},
    )


def load_manifest(name_or_path: str | Path) -> Manifest:
    """The manifest of a data set; for a class-folder tree without one, it is rebuilt by
    scanning the folder (files that do not decode are left out)."""
    root = Path(name_or_path) if isinstance(name_or_path, Path) else dataset_path(name_or_path)
    if not root.is_dir():
        where = f" at {root}" if isinstance(name_or_path, Path) else ""
        raise LabError(f"no data set {root.name!r}{where}; `data list` shows the sets there are")
    file = root / MANIFEST
    if file.is_file():
        d = json.loads(file.read_text(encoding="utf-8"))
        return Manifest(
            name=d.get("name", root.name),
            layout=d.get("layout", "flat"),
            images=[ImageRecord.from_dict(r) for r in d.get("images", [])],
            class_order=d.get("class_order"),
            info=d.get("info", {}),
        )
    layout = read_layout(root, follow_links=False)
    records = [r for r in (_record_for_file(root, e) for e in layout.images) if r]
    records.sort(key=lambda r: r.path)
    return Manifest(name=root.name, layout=layout.kind, images=records)


@dataclass
class DatasetInfo:
    name: str
    path: str
    layout: str
    classes: list[str]
    counts: dict[str, int]
    images: int

    def to_dict(self) -> dict:
        return asdict(self)


def list_datasets() -> list[DatasetInfo]:
    """Every data set in the lab home, by name."""
    infos = []
    remove_stale_temporaries([datasets_dir()])
    for path in sorted(datasets_dir().iterdir()):
        if not path.is_dir() or path.name.startswith(".") or not _DATASET_NAME.match(path.name):
            continue
        manifest = load_manifest(path)
        infos.append(
            DatasetInfo(
                name=path.name,
                path=str(path),
                layout=manifest.layout,
                classes=manifest.classes,
                counts=manifest.counts(),
                images=len(manifest.images),
            )
        )
    return infos
