"""Data sets on disk: naming, the manifest, and the transactional writer every source uses.

A data set is a folder `datasets_dir()/NAME` in class-folder layout, either flat
(`NAME/<class>/*`) or split (`NAME/train/<class>/*`, `NAME/val/<class>/*`, optional `test/`),
plus `NAME/manifest.json`, one record per image: where it came from (a file, a URL, a search
hit with its licence and author), its SHA-256, size in bytes and pixels.

Every change goes through `DatasetWriter`: it builds the new state in a hidden temporary
folder next to the data set (existing images are hard-linked, not copied) and swaps it into
place only when the whole operation succeeded, so a failed import leaves the set as it was.
Changes of one set take turns (`DatasetLock`), so two at once never lose pictures; what a
killed change left behind is removed later (`owners.remove_stale_temporaries`).

Storage choice: an accepted image keeps its original bytes when it is a JPEG, PNG, BMP or
WebP whose pixels are already plain RGB or greyscale and upright. Anything else (CMYK,
palette, 16-bit, alpha, EXIF-rotated, GIF, TIFF, ...) is stored re-encoded from its decoded
upright RGB pixels: JPEG sources as JPEG (quality 95), the rest as PNG. Any reader of the
folder, not only `images.load_rgb`, then sees the picture the lab checked.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from tl_core import persist
from tl_core.data.images import (
    MAX_IMAGE_PIXELS,
    DecodedImage,
    ImageDecodeError,
    colour_signature,
    decode_bytes,
    dhash,
    is_image_name,
    placeholder_reason,
)
from tl_core.errors import LabError
from tl_core.owners import remove_stale_temporaries
from tl_core.paths import datasets_dir, locks_dir

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
MAX_CLASS_NAME = 64
MAX_FILE_NAME = 100
# One upload or download larger than this is refused before decoding.
MAX_FILE_BYTES = 50 * 1024 * 1024
# How long a change waits for another change of the same data set to finish.
LOCK_WAIT = 120.0

ProgressFn = Callable[[int, int, str], None]

_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEPT_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp"}
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


def _record_for_file(root: Path, file: Path) -> ImageRecord | None:
    rel = file.relative_to(root)
    parts = rel.parts
    split = parts[0] if len(parts) == 3 and parts[0] in SPLITS else None
    label = parts[-2]
    try:
        data = file.read_bytes()
        image = decode_bytes(data)
    except (OSError, ImageDecodeError):
        return None
    return ImageRecord(
        path=rel.as_posix(),
        label=label,
        split=split,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        width=image.size[0],
        height=image.size[1],
        format=image.format,
        dhash=f"{dhash(image.rgb):016x}",
        origin={"kind": "file", "source": str(file)},
        colour=colour_signature(image.rgb),
    )


def _detect_layout(root: Path) -> str:
    subdirs = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return "split" if subdirs and subdirs <= set(SPLITS) else "flat"


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
    layout = _detect_layout(root)
    depth = 3 if layout == "split" else 2
    records = []
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root)
        if len(rel.parts) != depth or any(p.startswith(".") for p in rel.parts):
            continue
        if file.is_file() and not file.is_symlink() and is_image_name(file):
            record = _record_for_file(root, file)
            if record:
                records.append(record)
    return Manifest(name=root.name, layout=layout, images=records)


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


def delete_dataset(name: str) -> DataReport:
    """Remove data set NAME and everything in it."""
    path = dataset_path(name)
    if not path.is_dir():
        raise LabError(f"no data set {name!r}; `data list` shows the sets there are")
    with DatasetLock(name):
        manifest = load_manifest(path)
        trash = path.with_name(_temp_name("trash", name))
        path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    persist.dataset_changed(path)  # TL_LAB_PERSIST: forget it there too
    return DataReport(
        name=name,
        classes=manifest.classes,
        counts=manifest.counts(),
        warnings=[f"deleted {len(manifest.images)} images"],
        path=str(path),
    )


# ---------------------------------------------------------------------------------------
# The writer


def _temp_name(kind: str, name: str) -> str:
    """`.KIND-NAME-pPID-XXXXXXXX`: hidden, and `owners` can tell when its writer is gone."""
    return f".{kind}-{name}-p{os.getpid()}-{uuid.uuid4().hex[:8]}"


class DatasetLock:
    """An exclusive lock on one data set, between threads and processes alike.

    A change holds it from reading the set to swapping the new state in, so two imports
    into one set run one after the other and neither loses the other's pictures. It is an
    `flock` on `locks/dataset-NAME.lock` in the lab home (one open file per holder, so threads exclude each
    other too); the system drops it when its process dies, however it dies.
    """

    def __init__(self, name: str, *, wait: float = LOCK_WAIT) -> None:
        self.name = check_dataset_name(name)
        self.wait = wait
        self._fh = None

    def __enter__(self) -> DatasetLock:
        fh = open(locks_dir() / f"dataset-{self.name}.lock", "a+b")  # noqa: SIM115 - held until exit
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.close()
                    raise LabError(
                        f"data set {self.name!r} is being changed by another import or edit; "
                        "try again when that has finished"
                    ) from None
                time.sleep(0.05)
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _encoded(image: DecodedImage, data: bytes) -> tuple[bytes, str, str]:
    """(bytes to store, suffix, 'original' | 're-encoded') following the module's rule."""
    plain = image.mode in ("RGB", "L") and not image.exif_rotated
    if image.format in _KEPT_FORMATS and plain:
        return data, _KEPT_FORMATS[image.format], "original"
    buf = io.BytesIO()
    if image.format == "JPEG":
        image.rgb.save(buf, format="JPEG", quality=95)
        return buf.getvalue(), ".jpg", "re-encoded"
    image.rgb.save(buf, format="PNG")
    return buf.getvalue(), ".png", "re-encoded"


class DatasetWriter:
    """Changes one data set all at once: `with DatasetWriter(name) as w: w.add(...)`.

    On leaving the block without an exception the new state replaces the old one; on an
    exception (or when nothing is left in a new set) the old one stays untouched.
    `replace=True` starts from an empty set instead of the existing images.
    """

    def __init__(
        self,
        name: str,
        *,
        replace: bool = False,
        skip_placeholders: bool = True,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        self.name = check_dataset_name(name)
        self.final = dataset_path(name)
        self.replace = replace
        self.skip_placeholders = skip_placeholders
        self.max_pixels = max_pixels
        self.report = DataReport(name=name, path=str(self.final))
        self._lock = DatasetLock(name)
        self.manifest = Manifest(name=name, layout="")
        self.tmp: Path | None = None
        self._by_path: dict[str, ImageRecord] = {}
        self._hashes: dict[tuple[str | None, str, str], str] = {}

    # -- lifecycle --

    def __enter__(self) -> DatasetWriter:
        self._lock.__enter__()
        try:
            self._snapshot()
        except BaseException:
            self.__exit__(None, None, None, commit=False)
            raise
        return self

    def _snapshot(self) -> None:
        """The set as it is now, hard-linked into a new temporary folder (under the lock)."""
        remove_stale_temporaries([datasets_dir()])
        self.tmp = datasets_dir() / _temp_name("tmp", self.name)
        self.tmp.mkdir()
        if self.final.is_dir() and not self.replace:
            old = load_manifest(self.final)
            self.manifest.layout = old.layout
            self.manifest.class_order = old.class_order
            self.manifest.info = old.info
            for record in old.images:
                src = self.final / record.path
                if src.is_file():
                    self._link(src, self.tmp / record.path)
                    self._remember(record)

    def __exit__(self, exc_type, exc, tb, *, commit: bool = True) -> None:
        try:
            if exc_type is None and commit:
                self._commit()
        finally:
            try:
                if self.tmp is not None and self.tmp.exists():
                    shutil.rmtree(self.tmp, ignore_errors=True)
            finally:
                self._lock.__exit__()

    def _commit(self) -> None:
        assert self.tmp is not None
        images = sorted(self._by_path.values(), key=lambda r: r.path)
        self.manifest.images = images
        self.report.classes = self.manifest.classes
        self.report.counts = self.manifest.counts()
        if not images and not self.final.exists():
            self.report.warnings.append(f"nothing to keep: data set {self.name!r} not created")
            return
        if not self.manifest.layout:
            self.manifest.layout = "flat"
        (self.tmp / MANIFEST).write_text(
            json.dumps(self.manifest.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8"
        )
        old = None
        if self.final.exists():
            old = self.final.with_name(_temp_name("old", self.name))
            self.final.rename(old)
        self.tmp.rename(self.final)
        self.tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        persist.dataset_changed(self.final)  # TL_LAB_PERSIST: keep it beyond a restart

    @staticmethod
    def _link(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    def _remember(self, record: ImageRecord) -> None:
        self._by_path[record.path] = record
        for digest in (record.sha256, record.source_sha256):
            if digest:
                self._hashes[(record.split, record.label, digest)] = record.path

    # -- queries --

    @property
    def records(self) -> list[ImageRecord]:
        return list(self._by_path.values())

    def _resolve_split(self, split: str | None) -> str | None:
        if split is not None and split not in SPLITS:
            raise LabError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if not self.manifest.layout:
            self.manifest.layout = "split" if split else "flat"
        if self.manifest.layout == "flat":
            if split:
                raise LabError(
                    f"data set {self.name!r} has no train/val split; add images without a "
                    "split, or re-split it first"
                )
            return None
        return split or "train"

    # -- changes --

    def add(
        self,
        data: bytes,
        *,
        label: str,
        filename: str,
        origin: dict,
        split: str | None = None,
        item: str | None = None,
    ) -> ImageRecord | None:
        """Decode, check and store one image; on refusal record why and return None.

        `label` must already be a sanitised class name; `item` names the image in the
        report (a path, an archive entry, a URL).
        """
        item = item or filename
        split = self._resolve_split(split)
        if len(data) > MAX_FILE_BYTES:
            self.report.skip(
                item, f"file too large ({len(data):,} bytes; limit {MAX_FILE_BYTES:,})"
            )
            return None
        try:
            image = decode_bytes(data, max_pixels=self.max_pixels)
        except ImageDecodeError as exc:
            self.report.skip(item, str(exc))
            return None
        if self.skip_placeholders:
            reason = placeholder_reason(filename, image)
            if reason:
                self.report.skip(item, reason)
                return None
        source_sha = hashlib.sha256(data).hexdigest()
        duplicate = self._hashes.get((split, label, source_sha))
        if duplicate:
            self.report.skip(item, f"already in the data set as {duplicate} (same content)")
            return None
        stored, suffix, how = _encoded(image, data)
        return self._store(
            stored,
            image.rgb,
            label=label,
            split=split,
            filename=filename,
            suffix=suffix,
            fmt=image.format if how == "original" else suffix.lstrip(".").upper(),
            origin=origin,
            how=how,
            source_sha=None if how == "original" else source_sha,
        )

    def add_pil(
        self, img: Image.Image, *, label: str, filename: str, origin: dict, split: str | None = None
    ) -> ImageRecord:
        """Store a picture made here (generated or read from a trusted array) as PNG."""
        split = self._resolve_split(split)
        rgb = img.convert("RGB")
        buf = io.BytesIO()
        rgb.save(buf, format="PNG")
        return self._store(
            buf.getvalue(),
            rgb,
            label=label,
            split=split,
            filename=filename,
            suffix=".png",
            fmt="PNG",
            origin=origin,
            how="original",
            source_sha=None,
        )

    def _store(
        self,
        data: bytes,
        rgb: Image.Image,
        *,
        label: str,
        split: str | None,
        filename: str,
        suffix: str,
        fmt: str,
        origin: dict,
        how: str,
        source_sha: str | None,
    ) -> ImageRecord:
        assert self.tmp is not None, "use DatasetWriter as a context manager"
        folder = PurePosixPath(*(p for p in (split, label) if p))
        name = safe_file_name(filename, suffix)
        stem = name[: -len(suffix)]
        n = 1
        while (folder / name).as_posix() in self._by_path:
            name = f"{stem}-{n}{suffix}"
            n += 1
        rel = (folder / name).as_posix()
        target = self.tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        record = ImageRecord(
            path=rel,
            label=label,
            split=split,
            sha256=hashlib.sha256(data).hexdigest(),
            bytes=len(data),
            width=rgb.size[0],
            height=rgb.size[1],
            format=fmt,
            dhash=f"{dhash(rgb):016x}",
            origin=origin,
            colour=colour_signature(rgb),
            stored=how,
            source_sha256=source_sha,
        )
        self._remember(record)
        self.report.added += 1
        self.report.added_per_class[label] = self.report.added_per_class.get(label, 0) + 1
        return record

    def remove(self, rel_path: str) -> None:
        record = self._by_path.pop(rel_path, None)
        if record is None:
            raise LabError(f"no image {rel_path!r} in data set {self.name!r}")
        assert self.tmp is not None
        (self.tmp / rel_path).unlink(missing_ok=True)
        self._forget(record)

    def _forget(self, record: ImageRecord) -> None:
        for digest in (record.sha256, record.source_sha256):
            key = (record.split, record.label, digest)
            if digest and self._hashes.get(key) == record.path:
                del self._hashes[key]

    def move(self, rel_path: str, *, label: str, split: str | None) -> ImageRecord:
        """Move one image to another class and/or split (renaming on a name clash)."""
        assert self.tmp is not None
        record = self._by_path.pop(rel_path)
        self._forget(record)
        folder = PurePosixPath(*(p for p in (split, label) if p))
        name = PurePosixPath(rel_path).name
        stem, suffix = os.path.splitext(name)
        n = 1
        while (folder / name).as_posix() in self._by_path:
            name = f"{stem}-{n}{suffix}"
            n += 1
        new_rel = (folder / name).as_posix()
        (self.tmp / new_rel).parent.mkdir(parents=True, exist_ok=True)
        (self.tmp / rel_path).rename(self.tmp / new_rel)
        record.path, record.label, record.split = new_rel, label, split
        self._remember(record)
        return record

    def prune_empty_folders(self) -> None:
        assert self.tmp is not None
        for folder in sorted(self.tmp.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
