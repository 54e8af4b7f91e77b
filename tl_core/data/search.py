"""Keyword image search: a small provider interface and Wikimedia Commons, which needs no key.

A provider turns a search term into `SearchHit`s (an image URL plus its licence and
author). `search_images` makes one class per term and downloads hits through the same
`SafeFetcher` pipeline as URL lists, until each class has `per_class` images or the hits
run out; each image's licence, author and description page go into the manifest.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import asdict, dataclass
from typing import Protocol

from tl_core.data.download import (
    FetchError,
    FetchPolicy,
    SafeFetcher,
    UrlItem,
    default_policy,
    fetch_into,
)
from tl_core.data.store import DataReport, ProgressFn, check_dataset_name, sanitize_class_names
from tl_core.data.writer import DatasetWriter
from tl_core.errors import LabError

COMMONS_API = "https://commons.wikimedia.org/w/api.php"


@dataclass(frozen=True)
class SearchHit:
    url: str  # the image (a scaled thumbnail where the provider offers one)
    title: str
    page_url: str  # the human-readable description page
    licence: str
    licence_url: str
    author: str
    provider: str


class ImageSearchProvider(Protocol):
    name: str

    def search(self, term: str, limit: int) -> list[SearchHit]:
        """Up to `limit` hits for `term`, best first. Raises `FetchError` when unreachable."""
        ...


_TAG = re.compile(r"<[^>]+>")


def _plain(value: str) -> str:
    """Commons extmetadata values are HTML snippets; keep their text."""
    return " ".join(html.unescape(_TAG.sub(" ", value or "")).split())


class WikimediaCommons:
    """Searches the File namespace of Wikimedia Commons through its public API.

    One `action=query` request with `generator=search` (namespace 6, bitmaps only) and
    `prop=imageinfo`: `iiurlwidth` asks for a scaled thumbnail instead of the original,
    `extmetadata` brings the licence and author. `api_url` (default: `TL_LAB_COMMONS_API`
    if set, e.g. a mirror or a test server, else the public API) says where to ask.
    """

    name = "wikimedia"

    def __init__(
        self,
        *,
        api_url: str | None = None,
        thumb_width: int = 512,
        fetcher: SafeFetcher | None = None,
    ) -> None:
        self.api_url = api_url or os.environ.get("TL_LAB_COMMONS_API") or COMMONS_API
        self.thumb_width = thumb_width
        self.fetcher = fetcher or SafeFetcher()

    def search(self, term: str, limit: int) -> list[SearchHit]:
        params: dict = {
            "action": "query",
            "format": "json",
            "formatversion": "2",
            "generator": "search",
            "gsrsearch": f"filetype:bitmap {term}",
            "gsrnamespace": "6",
            "gsrlimit": str(min(limit, 50)),
            "prop": "imageinfo",
            "iiprop": "url|mime|extmetadata",
            "iiurlwidth": str(self.thumb_width),
            "iiextmetadatafilter": "LicenseShortName|LicenseUrl|Artist|Credit",
        }
        hits: list[SearchHit] = []
        for _page in range(10):
            data = self.fetcher.get_json(self.api_url, params=params)
            if not isinstance(data, dict):
                raise FetchError("unexpected answer from the Commons API")
            if "error" in data:
                info = (
                    data["error"].get("info", data["error"])
                    if isinstance(data["error"], dict)
                    else data["error"]
                )
                raise FetchError(f"Commons API error: {info}")
            pages = data.get("query", {}).get("pages", [])
            if isinstance(pages, dict):  # formatversion=1 keys pages by id
                pages = list(pages.values())
            pages = sorted(pages, key=lambda p: p.get("index", 0))
            for page in pages:
                hit = self._hit(page)
                if hit:
                    hits.append(hit)
            if len(hits) >= limit or "continue" not in data:
                break
            params = {**params, **data["continue"]}
        return hits[:limit]

    def _hit(self, page: dict) -> SearchHit | None:
        info = (page.get("imageinfo") or [{}])[0]
        url = info.get("thumburl") or info.get("url")
        mime = info.get("mime", "image/")
        if not url or not mime.startswith("image/"):
            return None
        meta = info.get("extmetadata", {})

        def field(key: str) -> str:
            return _plain(meta.get(key, {}).get("value", ""))

        return SearchHit(
            url=url,
            title=page.get("title", ""),
            page_url=info.get("descriptionurl", ""),
            licence=field("LicenseShortName") or "unknown",
            licence_url=field("LicenseUrl"),
            author=field("Artist") or field("Credit") or "unknown",
            provider=self.name,
        )


def parse_terms(terms: str | list[str]) -> list[str]:
    """'ant, bee' or ['ant', 'bee'] -> ['ant', 'bee'] (blank terms dropped)."""
    items = terms.split(",") if isinstance(terms, str) else list(terms)
    items = [t.strip() for t in items if t and t.strip()]
    if not items:
        raise LabError('no search terms; give a comma-separated list, e.g. --terms "ant,bee"')
    return items


def search_images(
    name: str,
    terms: str | list[str],
    per_class: int,
    *,
    provider: ImageSearchProvider | None = None,
    policy: FetchPolicy | None = None,
    replace: bool = False,
    progress: bool = False,
    on_progress: ProgressFn | None = None,
) -> DataReport:
    """Make one class per search term with up to `per_class` new images each."""
    check_dataset_name(name)
    terms = parse_terms(terms)
    if not 1 <= per_class <= 500:
        raise LabError(f"--per-class must be between 1 and 500, got {per_class}")
    fetcher = SafeFetcher(policy or default_policy())
    provider = provider or WikimediaCommons(fetcher=fetcher)
    labels, warnings = sanitize_class_names(terms)
    with DatasetWriter(name, replace=replace) as writer:
        writer.report.warnings.extend(warnings)
        for n, term in enumerate(terms, 1):
            label = labels[term]
            try:
                hits = provider.search(term, min(per_class * 2 + 5, 500))
            except FetchError as exc:
                writer.report.skip(f"search: {term}", f"search failed: {exc}")
                continue
            known = {r.origin.get("url") for r in writer.records}
            queue = [h for h in hits if h.url not in known]
            if not hits:
                writer.report.warnings.append(f"no results for {term!r}")
            got = 0
            while got < per_class and queue:
                batch, queue = queue[: per_class - got], queue[per_class - got :]
                items = [
                    UrlItem(h.url, term, {"query": term, **asdict(h)} | {"kind": "search"})
                    for h in batch
                ]
                got += fetch_into(
                    writer,
                    items,
                    {term: label},
                    fetcher,
                    progress=progress,
                    desc=f"{term} ({n}/{len(terms)})",
                )
            if got < per_class and hits:
                writer.report.warnings.append(
                    f"{term!r}: only {got} of {per_class} images could be added"
                )
            if on_progress:
                on_progress(n, len(terms), term)
    return writer.report
