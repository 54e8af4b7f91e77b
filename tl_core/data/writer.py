"""Changing a data set: the transactional writer every source uses, and deletion.

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
import shutil
import time
import uuid
from pathlib import Path, PurePosixPath

from PIL import Image

from tl_core import persist
from tl_core.data.images import (
    MAX_IMAGE_PIXELS,
    DecodedImage,
    ImageDecodeError,
    decode_bytes,
    placeholder_reason,
)
from tl_core.data.layout import SPLITS
from tl_core.data.store import (
    MANIFEST,
    DataReport,
    ImageRecord,
    Manifest,
    check_dataset_name,
    dataset_path,
    load_manifest,
    safe_file_name,
)
from tl_core.errors import LabError
from tl_core.owners import remove_stale_temporaries
from tl_core.paths import datasets_dir, locks_dir

# One upload or download larger than this is refused before decoding.
MAX_FILE_BYTES = 50 * 1024 * 1024
# How long a change waits for another change of the same data set to finish.
LOCK_WAIT = 120.0
_KEPT_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp"}


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
        rel = self._free_path(folder, name[: -len(suffix)], suffix)
        target = self.tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        record = ImageRecord.of(
            rel, label, split, data, rgb, fmt, origin=origin, stored=how, source_sha256=source_sha
        )
        self._remember(record)
        self.report.added += 1
        self.report.added_per_class[label] = self.report.added_per_class.get(label, 0) + 1
        return record

    def _free_path(self, folder: PurePosixPath, stem: str, suffix: str) -> str:
        """`folder/stem+suffix`, or `stem-N` for the first N that no image has yet."""
        name, n = stem + suffix, 1
        while (folder / name).as_posix() in self._by_path:
            name = f"{stem}-{n}{suffix}"
            n += 1
        return (folder / name).as_posix()

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
        new_rel = self._free_path(folder, *os.path.splitext(PurePosixPath(rel_path).name))
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
