"""Downloading images from URL lists into a data set.

`download_urls` downloads a list of (url, label) pairs into a data set with a thread pool,
each URL through `SafeFetcher` (`tl_core.data.fetch`: public addresses only, pinned
connections, a size limit and one deadline per URL); fetched bytes are cached under
`cache_dir("downloads")`, so an interrupted run resumes without fetching again, and URLs
already in the data set are skipped. Every URL ends as an added image or a skipped entry
with its reason: a malformed URL, a refused address or a slow server never ends the list.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from tqdm import tqdm

from tl_core.data.fetch import (  # noqa: F401 (re-exported: the names callers know here)
    Fetched,
    FetchError,
    FetchPolicy,
    PinnedAdapter,
    SafeFetcher,
    address_problem,
    allow_private_from_env,
    default_policy,
    embedded_ipv4,
    resolve_checked,
    split_url,
    user_agent,
)
from tl_core.data.store import DataReport, ProgressFn, check_dataset_name, sanitize_class_names
from tl_core.data.writer import DatasetWriter
from tl_core.errors import LabError
from tl_core.paths import cache_dir

# ---------------------------------------------------------------------------------------
# URL lists


@dataclass(frozen=True)
class UrlItem:
    url: str
    label: str
    origin: dict | None = None  # extra origin fields (search hits: licence, author, ...)


def _urls_from_text(path: Path, label: str) -> list[UrlItem]:
    items = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            items.append(UrlItem(line.split()[0], label))
    return items


def _urls_from_csv(path: Path) -> list[UrlItem]:
    rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    rows = [r for r in rows if r and any(c.strip() for c in r) and not r[0].startswith("#")]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    url_col, label_col = 0, 1
    if "url" in header:
        url_col = header.index("url")
        label_col = next((header.index(k) for k in ("label", "class") if k in header), -1)
        if label_col < 0:
            raise LabError(f"{path}: the header has 'url' but no 'label' column")
        rows = rows[1:]
    items = []
    for n, row in enumerate(rows, 2 if "url" in header else 1):
        if len(row) <= max(url_col, label_col):
            raise LabError(f"{path} line {n}: expected 'url,label', got {','.join(row)!r}")
        items.append(UrlItem(row[url_col].strip(), row[label_col].strip()))
    return items


def read_url_list(path: str | Path, *, label: str | None = None) -> list[UrlItem]:
    """Read URLs with their classes from a CSV (`url,label`, header optional), a text file
    of URLs for one class (the class is `label` or the file name), or a folder of such
    files (one `.txt` per class, as the ImageNet-era scripts had)."""
    path = Path(path).expanduser()
    if path.is_dir():
        items = []
        for file in sorted(path.iterdir()):
            if file.suffix.lower() == ".csv":
                items += _urls_from_csv(file)
            elif file.suffix.lower() == ".txt" and not file.name.startswith("."):
                items += _urls_from_text(file, file.stem)
    elif path.is_file():
        if path.suffix.lower() == ".csv":
            items = _urls_from_csv(path)
        else:
            items = _urls_from_text(path, label or path.stem)
    else:
        raise LabError(f"no such file or folder: {path}")
    if not items:
        raise LabError(
            f"no URLs in {path}: give a CSV with 'url,label' rows, or a .txt file with one "
            "image URL per line (named after its class)"
        )
    return items


def _cache_file(url: str) -> Path:
    return cache_dir("downloads") / hashlib.sha256(url.encode()).hexdigest()


def _fetch_cached(fetcher: SafeFetcher, url: str) -> tuple[bytes, str]:
    """(bytes, final URL), from the download cache when this URL was fetched before.

    The URL is checked under this fetcher's policy first: bytes cached by a run that was
    allowed more (a test's loopback server) are not handed to one that is allowed less.
    """
    p = fetcher.policy
    resolve_checked(url, allow_private=p.allow_private, allowed=p.allowed_addresses)
    file = _cache_file(url)
    if file.is_file():
        return file.read_bytes(), url
    fetched = fetcher.get(url)
    tmp = file.with_name(f".{file.name}.{threading.get_ident()}.part")
    tmp.write_bytes(fetched.data)
    os.replace(tmp, file)
    return fetched.data, fetched.final_url


def fetch_into(
    writer: DatasetWriter,
    items: list[UrlItem],
    labels: dict[str, str],
    fetcher: SafeFetcher,
    *,
    progress: bool = False,
    on_progress: ProgressFn | None = None,
    desc: str = "download",
) -> int:
    """Download items in parallel and add each to the writer; return how many were added.

    Fetching runs in `fetcher.policy.workers` threads; decoding and writing stay in this
    thread. Every item ends as an added image or a skipped entry with its reason.
    """
    added = 0
    bar = tqdm(total=len(items), desc=desc, unit="url", file=sys.stderr, disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, fetcher.policy.workers)) as pool:
        futures = {pool.submit(_fetch_cached, fetcher, item.url): item for item in items}
        for done, future in enumerate(as_completed(futures), 1):
            item = futures[future]
            try:
                data, final_url = future.result()
            except FetchError as exc:
                writer.report.skip(item.url, str(exc))
            except OSError as exc:
                writer.report.skip(item.url, f"cannot write to the download cache ({exc})")
            else:
                origin = {"kind": "url", "url": item.url, **(item.origin or {})}
                if final_url != item.url:
                    origin["final_url"] = final_url
                name = PurePosixPath(urlsplit(item.url).path).name or "image"
                record = writer.add(
                    data, label=labels[item.label], filename=name, origin=origin, item=item.url
                )
                if record is None:
                    _cache_file(item.url).unlink(missing_ok=True)
                else:
                    added += 1
            bar.update(1)
            if on_progress:
                on_progress(done, len(items), item.url)
    bar.close()
    return added


def download_urls(
    name: str,
    items: Iterable[UrlItem],
    *,
    policy: FetchPolicy | None = None,
    replace: bool = False,
    progress: bool = False,
    on_progress: ProgressFn | None = None,
) -> DataReport:
    """Download (url, label) items into data set NAME (created or extended).

    URLs already in the data set and URLs listed twice are skipped with that reason.
    """
    check_dataset_name(name)
    items = list(items)
    fetcher = SafeFetcher(policy or default_policy())
    with DatasetWriter(name, replace=replace) as writer:
        todo: list[UrlItem] = []
        seen = {r.origin.get("url") for r in writer.records}
        good_labels = []
        for item in items:
            try:
                sanitize_class_names([item.label])
            except LabError as exc:
                writer.report.skip(item.url, str(exc))
                continue
            if item.url in seen:
                writer.report.skip(
                    item.url, "already in the data set (listed twice or fetched before)"
                )
                continue
            seen.add(item.url)
            todo.append(item)
            good_labels.append(item.label)
        labels, warnings = sanitize_class_names(good_labels)
        writer.report.warnings.extend(warnings)
        fetch_into(writer, todo, labels, fetcher, progress=progress, on_progress=on_progress)
    return writer.report


def download_url_list(
    path: str | Path, name: str, *, label: str | None = None, **kwargs
) -> DataReport:
    """`read_url_list` then `download_urls`: the CLI's `data urls FILE --name NAME`."""
    return download_urls(name, read_url_list(path, label=label), **kwargs)
