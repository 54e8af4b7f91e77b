"""Keyword search through the Wikimedia Commons provider, against canned API answers."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from data_fixtures import (
    fake_commons,
    http_server_fixture,  # noqa: F401 (the http_server fixture)
)

from tl_core.data.download import FetchPolicy, SafeFetcher
from tl_core.data.search import WikimediaCommons, parse_terms, search_images
from tl_core.data.store import load_manifest
from tl_core.errors import LabError

LOCAL = FetchPolicy(allowed_addresses=("127.0.0.1",), read_timeout=2.0, backoff=0.01)


@pytest.fixture
def commons(http_server):
    """A fake Commons API: 'ant' has 4 hits (the 2nd one dead), 'bee' 2, 'nothing' none."""
    return WikimediaCommons(
        api_url=fake_commons(http_server), thumb_width=512, fetcher=SafeFetcher(LOCAL)
    )


def test_provider_parses_hits_in_rank_order(commons, http_server) -> None:
    hits = commons.search("ant", 10)
    assert [h.title for h in hits] == [f"File:Ant_{i}.jpg" for i in (1, 2, 3, 4)]
    hit = hits[0]
    assert hit.url.endswith("/thumb/Ant_1.jpg")  # the thumbnail, not the original
    assert hit.licence == "CC BY-SA 4.0"
    assert hit.author == "Photographer & 1"  # HTML stripped and unescaped
    assert hit.page_url.startswith("https://commons.wikimedia.org/wiki/File:")
    path, headers = http_server.hits[0]
    query = parse_qs(urlsplit(path).query)
    assert query["generator"] == ["search"] and query["gsrnamespace"] == ["6"]
    assert query["prop"] == ["imageinfo"] and query["iiurlwidth"] == ["512"]
    assert "extmetadata" in query["iiprop"][0] and "url" in query["iiprop"][0]
    assert "TransferLearningLab" in headers["User-Agent"]


def test_search_fills_each_class_and_keeps_licences(commons, http_server) -> None:
    report = search_images("insects", "ant, bee", 2, provider=commons, policy=LOCAL)
    assert report.counts == {"ant": 2, "bee": 2}
    # The dead second ant hit was reported and replaced by the next one.
    assert [s.item for s in report.skipped] == [http_server.url("/thumb/Ant_2.jpg")]
    assert "HTTP 404" in report.skipped[0].reason
    records = load_manifest("insects").images
    origin = next(r.origin for r in records if r.origin["title"] == "File:Ant_3.jpg")
    assert origin["kind"] == "search" and origin["provider"] == "wikimedia"
    assert origin["query"] == "ant" and origin["licence"] == "CC BY-SA 4.0"
    assert origin["author"] == "Photographer & 3"
    assert http_server.count("/thumb/Ant_4.jpg") == 0  # not fetched: the class was full


def test_search_reports_short_classes_and_empty_terms(commons) -> None:
    report = search_images("few", ["bee", "nothing"], 5, provider=commons, policy=LOCAL)
    assert report.counts == {"bee": 2}
    assert any("only 2 of 5" in w for w in report.warnings)
    assert any("no results for 'nothing'" in w for w in report.warnings)


def test_an_unreachable_api_is_an_outcome_not_a_crash(http_server) -> None:
    broken = WikimediaCommons(api_url=http_server.url("/nope"), fetcher=SafeFetcher(LOCAL))
    report = search_images("down", "ant", 2, provider=broken, policy=LOCAL)
    assert report.added == 0 and "search failed: HTTP 404" in report.skipped[0].reason


def test_terms_are_checked() -> None:
    assert parse_terms(" ant ,, bee ") == ["ant", "bee"]
    with pytest.raises(LabError, match="no search terms"):
        parse_terms(" , ")
