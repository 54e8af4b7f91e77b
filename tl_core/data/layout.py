"""The folder layout of a data set, read in one place.

A data set folder holds one folder per class (flat), or `train/`, `val/` and an optional
`test/`, each holding class folders (split). `read_layout` lists its images as (split,
class, file) for every reader: the training scan (`folder.scan_dataset`), the manifest that
`store.load_manifest` rebuilds for a folder without one, and the queue's image counts
(`schedule.image_counts`). The rules, written here only:

- The layout is split when `train/` is a folder; then only `train/`, `val/` and `test/` are
  read. Otherwise every class folder of the data set folder is read (flat).
- A class is a folder directly inside the data set folder (flat) or a split folder, whose
  name starts with neither `.` nor `_` (`sanitize_class_name` never makes such a name).
- A class's images are the files with an image suffix (`images.is_image_name`) anywhere
  below its folder; files and folders whose names start with `.` are skipped.
- `follow_links=False` leaves out every file and folder that is a symbolic link: a lab data
  set holds none (`DatasetWriter` writes plain files), so one there was not put there by the
  lab and is not read into its manifest. A folder given for training is the user's own, and
  its links are followed (at the top of a class; links to folders below it are not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tl_core.data.images import is_image_name

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageEntry:
    """One image of a data set folder."""

    split: str | None  # "train", "val" or "test"; None in a flat set
    label: str  # the name of its class folder
    path: Path  # the file (under the data set folder)


@dataclass
class Layout:
    """What `read_layout` found: the layout, the class folders and the images."""

    root: Path
    kind: str  # "split" or "flat"
    # The class folders of each split (None: a flat set), sorted by name, empty ones too.
    classes: dict[str | None, list[str]] = field(default_factory=dict)
    images: list[ImageEntry] = field(default_factory=list)

    def of_split(self, split: str | None) -> list[ImageEntry]:
        return [e for e in self.images if e.split == split]


def _visible(path: Path, follow_links: bool) -> bool:
    return not path.name.startswith(".") and (follow_links or not path.is_symlink())


def class_folders(folder: Path, *, follow_links: bool = True) -> list[Path]:
    """The class folders directly inside `folder`, sorted by name."""
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_dir() and not p.name.startswith("_") and _visible(p, follow_links)
        ),
        key=lambda p: p.name,
    )


def images_below(folder: Path, *, follow_links: bool = True) -> list[Path]:
    """The image files anywhere below `folder`: each folder's files by name, then its
    subfolders by name."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if _visible(here / d, follow_links))
        for name in sorted(filenames):
            if is_image_name(name) and _visible(here / name, follow_links):
                found.append(here / name)
    return found


def read_layout(root: Path, *, follow_links: bool = True) -> Layout:
    """The layout of the data set folder `root` and its images, split by split (train, val,
    test) and class by class, in the order `class_folders` and `images_below` give."""
    train = root / "train"
    split = train.is_dir() and _visible(train, follow_links)
    layout = Layout(root, "split" if split else "flat")
    for name in SPLITS if split else (None,):
        folder = root / name if name else root
        if name and not (folder.is_dir() and _visible(folder, follow_links)):
            continue
        layout.classes[name] = []
        for cdir in class_folders(folder, follow_links=follow_links):
            layout.classes[name].append(cdir.name)
            layout.images += [
                ImageEntry(name, cdir.name, p)
                for p in images_below(cdir, follow_links=follow_links)
            ]
    return layout
