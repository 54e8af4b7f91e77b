"""URL downloads against a local server: every URL gets an outcome, and the fetcher never
becomes a way into private networks."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from data_fixtures import (
    chunked_route,
    http_server_fixture,  # noqa: F401 (the http_server fixture)
    image_route,
    jpeg_bytes,
    png_bytes,
    redirect_route,
    send,
    slow_route,
    status_route,
    trickle_route,
)

from tl_core.data import fetch
from tl_core.data.download import (
    FetchError,
    FetchPolicy,
    SafeFetcher,
    UrlItem,
    address_problem,
    download_url_list,
    download_urls,
    read_url_list,
)
from tl_core.data.store import load_manifest
from tl_core.errors import LabError

LOCAL = FetchPolicy(
    allowed_addresses=("127.0.0.1",), read_timeout=1.0, connect_timeout=1.0, backoff=0.01
)


def reasons(report) -> dict[str, str]:
    return {s.item: s.reason for s in report.skipped}


@pytest.mark.parametrize(
    ("ip", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("100.64.0.1", "not a public"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_non_public_addresses_are_refused(ip: str, kind: str) -> None:
    assert kind in address_problem(ip, allow_private=False)


@pytest.mark.parametrize(
    ("ip", "embedded"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1 is a loopback"),
        ("::127.0.0.1", "127.0.0.1 is a loopback"),
        ("64:ff9b::7f00:1", "127.0.0.1 is a loopback"),  # NAT64
        ("64:ff9b::a9fe:a9fe", "169.254.169.254 is a link-local"),
        ("64:ff9b:1:7f00:0:100::", "embeds"),  # local-use NAT64, 127.0.0.1 in the /48 layout
        ("64:ff9b:1::a00:1", "embeds"),  # local-use NAT64, 10.0.0.1 in the /96 layout
        ("2002:7f00:1::", "127.0.0.1 is a loopback"),  # 6to4
        ("2002:c0a8:1::1", "192.168.0.1 is a private"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1 is a loopback"),  # Teredo
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1 is a private"),
    ],
)
def test_ipv6_forms_are_judged_by_the_ipv4_they_embed(ip: str, embedded: str) -> None:
    assert embedded in address_problem(ip, allow_private=False)


@pytest.mark.parametrize(
    "ip",
    ["64:ff9b::808:808", "2002:808:808::", "2001:0:4136:e378:8000:63bf:f7f7:f7f6"],
    ids=["NAT64", "6to4", "Teredo"],
)
def test_ipv6_forms_around_a_public_ipv4_are_allowed(ip: str) -> None:
    assert address_problem(ip, allow_private=False) is None


def test_public_addresses_are_allowed() -> None:
    assert address_problem("93.184.216.34", allow_private=False) is None
    assert address_problem("2606:2800:220:1::1", allow_private=False) is None


def test_loopback_is_refused_by_default(http_server, monkeypatch) -> None:
    monkeypatch.delenv("TL_LAB_ALLOW_PRIVATE_URLS", raising=False)
    http_server.routes["/a.jpg"] = image_route(jpeg_bytes())
    with pytest.raises(FetchError, match="127.0.0.1 is a loopback address"):
        SafeFetcher().get(http_server.url("/a.jpg"))
    assert http_server.hits == []  # refused before connecting


def test_env_setting_allows_loopback_for_tests(http_server, monkeypatch) -> None:
    monkeypatch.setenv("TL_LAB_ALLOW_PRIVATE_URLS", "1")
    http_server.routes["/a.jpg"] = image_route(jpeg_bytes())
    assert SafeFetcher().get(http_server.url("/a.jpg")).data == jpeg_bytes()


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "file:///etc/passwd", "gopher://x/"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(FetchError, match="only http and https"):
        SafeFetcher(LOCAL).get(url)


def test_redirect_to_a_private_address_is_refused(http_server) -> None:
    http_server.routes["/jump.jpg"] = redirect_route("http://169.254.169.254/latest/meta-data")
    http_server.routes["/ok.jpg"] = redirect_route("/final.jpg")
    http_server.routes["/final.jpg"] = image_route(jpeg_bytes(4))
    fetcher = SafeFetcher(LOCAL)
    with pytest.raises(FetchError, match="redirect to http://169.254.169.254.*link-local"):
        fetcher.get(http_server.url("/jump.jpg"))
    fetched = fetcher.get(http_server.url("/ok.jpg"))
    assert fetched.data == jpeg_bytes(4) and fetched.final_url.endswith("/final.jpg")


def test_a_host_with_any_private_address_is_refused(monkeypatch) -> None:
    def fake(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(fetch.socket, "getaddrinfo", fake)
    with pytest.raises(
        FetchError, match="mixed.example resolves to 10.0.0.7; 10.0.0.7 is a private"
    ):
        SafeFetcher().get("http://mixed.example/a.jpg")


def test_connection_goes_to_the_checked_address_not_a_second_lookup(
    http_server, monkeypatch
) -> None:
    """DNS rebinding: the name answers 127.0.0.1 when checked, then an unroutable address.
    A pinned connection still reaches the checked server, with the name in the Host header."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"])

    def rebinding(host, port, *args, **kwargs):
        if host == "images.example":
            ip = next(answers, "10.255.255.1")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    http_server.routes["/pinned.jpg"] = image_route(jpeg_bytes(8))
    url = f"http://images.example:{http_server.port}/pinned.jpg"
    fetched = SafeFetcher(LOCAL).get(url)
    assert fetched.data == jpeg_bytes(8)
    (path, headers), *_ = http_server.hits
    assert headers["Host"] == f"images.example:{http_server.port}"
    assert headers["User-Agent"].startswith("TransferLearningLab/")


def test_the_byte_limit_holds_with_and_without_content_length(http_server) -> None:
    http_server.routes["/big.jpg"] = image_route(b"\xff" * 300_000)
    http_server.routes["/stream.jpg"] = chunked_route(5_000_000)
    fetcher = SafeFetcher(FetchPolicy(**{**LOCAL.__dict__, "max_bytes": 100_000}))
    with pytest.raises(FetchError, match="too large: 300,000 bytes"):
        fetcher.get(http_server.url("/big.jpg"))
    with pytest.raises(FetchError, match="more than 100,000 bytes"):
        fetcher.get(http_server.url("/stream.jpg"))


def test_transient_errors_are_retried_with_backoff(http_server) -> None:
    calls = []

    def flaky(h) -> None:
        calls.append(1)
        if len(calls) < 3:
            send(h, 503, b"busy", "text/plain")
        else:
            send(h, 200, png_bytes(1), "image/png")

    http_server.routes["/flaky.png"] = flaky
    http_server.routes["/gone.png"] = status_route(404)
    fetcher = SafeFetcher(LOCAL)
    assert fetcher.get(http_server.url("/flaky.png")).data == png_bytes(1)
    assert len(calls) == 3
    with pytest.raises(FetchError, match="HTTP 404"):
        fetcher.get(http_server.url("/gone.png"))
    assert http_server.count("/gone.png") == 1  # a 404 is not retried


def mixed_routes(server) -> dict[str, str]:
    """Good and bad URLs; returns url -> expected reason fragment ('' = good)."""
    server.routes["/ants/1.jpg"] = image_route(jpeg_bytes(1))
    server.routes["/ants/2.png"] = image_route(png_bytes(2), "image/png")
    server.routes["/bees/1.jpg"] = image_route(jpeg_bytes(3))
    server.routes["/bees/moved.jpg"] = redirect_route("/bees/1b.jpg")
    server.routes["/bees/1b.jpg"] = image_route(jpeg_bytes(4))
    server.routes["/bees/page.jpg"] = image_route(b"<!doctype html><p>sorry</p>", "text/html")
    server.routes["/bees/slow.jpg"] = slow_route(3.0)
    server.routes["/bees/huge.jpg"] = image_route(b"\xff" * 600_000)
    server.routes["/bees/error.jpg"] = status_route(500)
    return {
        server.url("/ants/1.jpg"): "",
        server.url("/ants/2.png"): "",
        server.url("/bees/1.jpg"): "",
        server.url("/bees/moved.jpg"): "",
        server.url("/bees/page.jpg"): "HTML",
        server.url("/bees/missing.jpg"): "HTTP 404",
        server.url("/bees/slow.jpg"): "timed out",
        server.url("/bees/huge.jpg"): "too large",
        server.url("/bees/error.jpg"): "HTTP 500",
        "ftp://127.0.0.1/bees/x.jpg": "only http and https",
        "http://10.0.0.1/bees/x.jpg": "private address",
    }


def test_a_mixed_list_imports_the_good_and_explains_each_bad(http_server) -> None:
    expected = mixed_routes(http_server)
    items = [UrlItem(url, "ants" if "/ants/" in url else "bees") for url in expected]
    policy = FetchPolicy(**{**LOCAL.__dict__, "max_bytes": 500_000, "retries": 1})
    progress = []
    report = download_urls(
        "mixed", items, policy=policy, on_progress=lambda d, t, m: progress.append((d, t))
    )
    assert report.added == 4 and report.counts == {"ants": 2, "bees": 2}
    got = reasons(report)
    assert set(got) == {u for u, why in expected.items() if why}
    for url, why in expected.items():
        if why:
            assert why in got[url], (url, got[url])
    assert progress[-1] == (len(items), len(items))
    records = load_manifest("mixed").images
    origins = {r.origin["url"]: r.origin for r in records}
    assert origins[http_server.url("/bees/moved.jpg")]["final_url"].endswith("/bees/1b.jpg")


def test_downloads_resume_without_fetching_again(http_server) -> None:
    http_server.routes["/a/1.jpg"] = image_route(jpeg_bytes(1))
    http_server.routes["/a/2.jpg"] = image_route(jpeg_bytes(2))
    http_server.routes["/b/1.jpg"] = image_route(jpeg_bytes(3))
    first = [UrlItem(http_server.url("/a/1.jpg"), "a"), UrlItem(http_server.url("/b/1.jpg"), "b")]
    assert download_urls("res", first, policy=LOCAL).added == 2
    more = [*first, UrlItem(http_server.url("/a/2.jpg"), "a")]
    report = download_urls("res", more, policy=LOCAL)
    assert report.added == 1 and report.counts == {"a": 2, "b": 1}
    assert all("already in the data set" in s.reason for s in report.skipped)
    assert http_server.count("/a/1.jpg") == 1  # not fetched twice

    # An interrupted run (its data set never committed) resumes from the download cache.
    report = download_urls("other", more, policy=LOCAL)
    assert report.added == 3
    assert http_server.count("/a/1.jpg") == 1 and http_server.count("/a/2.jpg") == 1

    # The cache never lets a stricter policy see what a looser one fetched.
    strict = download_urls("strict", more, policy=FetchPolicy())
    assert strict.added == 0
    assert all("loopback" in s.reason for s in strict.skipped)


def test_url_list_formats(tmp_path: Path) -> None:
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("url,label\nhttp://x/1.jpg,ant\n# note\nhttp://x/2.jpg,bee\n")
    assert read_url_list(csv_file) == [
        UrlItem("http://x/1.jpg", "ant"),
        UrlItem("http://x/2.jpg", "bee"),
    ]
    bare = tmp_path / "bare.csv"
    bare.write_text("http://x/3.jpg,ant\n")
    assert read_url_list(bare) == [UrlItem("http://x/3.jpg", "ant")]
    folder = tmp_path / "per-class"
    folder.mkdir()
    (folder / "n01440764.txt").write_text("http://x/4.jpg\n\nhttp://x/5.jpg\n")
    (folder / "cat.txt").write_text("# cats\nhttp://x/6.jpg\n")
    assert [(i.url[-5:], i.label) for i in read_url_list(folder)] == [
        ("6.jpg", "cat"),
        ("4.jpg", "n01440764"),
        ("5.jpg", "n01440764"),
    ]
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(LabError, match="no URLs"):
        read_url_list(tmp_path / "empty.txt")
    bad = tmp_path / "bad.csv"
    bad.write_text("url,label\nhttp://x/1.jpg\n")
    with pytest.raises(LabError, match="line 2"):
        read_url_list(bad)


def test_bad_labels_are_skipped_not_fatal(http_server, tmp_path: Path) -> None:
    http_server.routes["/1.jpg"] = image_route(jpeg_bytes(1))
    http_server.routes["/2.jpg"] = image_route(jpeg_bytes(2))
    lst = tmp_path / "l.csv"
    lst.write_text(f"{http_server.url('/1.jpg')},../..\n{http_server.url('/2.jpg')},ok\n")
    report = download_url_list(lst, "labels", policy=LOCAL)
    assert report.counts == {"ok": 1}
    assert "no usable characters" in reasons(report)[http_server.url("/1.jpg")]


@pytest.mark.parametrize("headers", [False, True], ids=["slow body", "slow headers"])
def test_the_deadline_holds_against_a_trickling_server(http_server, headers: bool) -> None:
    http_server.routes["/drip.jpg"] = trickle_route(headers=headers)
    policy = FetchPolicy(**{**LOCAL.__dict__, "read_timeout": 3.0, "total_timeout": 5.0})
    started = time.monotonic()
    with pytest.raises(FetchError, match="too slow: not finished within 5s"):
        SafeFetcher(policy).get(http_server.url("/drip.jpg"))
    assert time.monotonic() - started < 5.0 + 2.0


def test_cli_timeout_is_the_deadline_of_each_url(http_server, tmp_path, monkeypatch, capsys):
    import json

    from tl_core.cli import main

    monkeypatch.setenv("TL_LAB_ALLOW_PRIVATE_URLS", "1")
    http_server.routes["/drip.jpg"] = trickle_route(headers=False)
    http_server.routes["/ok.jpg"] = image_route(jpeg_bytes(5))
    lst = tmp_path / "l.csv"
    lst.write_text(f"{http_server.url('/drip.jpg')},a\n{http_server.url('/ok.jpg')},b\n")
    main(["data", "list"])  # the CLI's imports, outside the time measured
    started = time.monotonic()
    code = main(["data", "urls", str(lst), "--name", "drip", "--timeout", "3", "--json"])
    assert time.monotonic() - started < 3.0 + 2.0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and report["counts"] == {"b": 1}
    assert "too slow" in report["skipped"][0]["reason"]


def test_malformed_urls_are_skipped_and_the_rest_come_in(
    http_server, tmp_path, monkeypatch, capsys
):
    import json

    from tl_core.cli import main

    monkeypatch.setenv("TL_LAB_ALLOW_PRIVATE_URLS", "1")
    http_server.routes["/1.jpg"] = image_route(jpeg_bytes(1))
    http_server.routes["/2.jpg"] = image_route(jpeg_bytes(2))
    bad = ["http://[::1", "http://[127.0.0.1]/x.png", "http://127.0.0.1:99999/x.png"]
    lst = tmp_path / "l.txt"
    lst.write_text("\n".join([http_server.url("/1.jpg"), *bad, http_server.url("/2.jpg")]))
    report = download_url_list(lst, "mal", label="ok", policy=LOCAL)
    assert report.counts == {"ok": 2}
    got = reasons(report)
    assert set(got) == set(bad)
    assert all("malformed URL" in why for why in got.values()), got
    code = main(["data", "urls", str(lst), "--name", "mal2", "--label", "ok", "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert json.loads(out.strip().splitlines()[-1])["skipped"][0]["reason"].startswith(
        "malformed URL"
    )
    assert code == 0


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_watchdog_sees_the_sockets_of_both_schemes(http_server, scheme) -> None:
    """The TCP socket is handed to the deadline before any TLS handshake (which a server
    could trickle too); checked here on the plain connection step of both classes."""
    pool = fetch._WatchedHTTPSPool if scheme == "https" else fetch._WatchedHTTPPool
    conn = pool.ConnectionCls("127.0.0.1", http_server.port, timeout=2.0)
    with fetch._Deadline(60.0) as deadline:
        sock = conn._new_conn()
    try:
        assert deadline._sockets == [sock]
        deadline._fire()  # as when the deadline passes: the socket is shut down
        assert sock.recv(1) == b""
    finally:
        sock.close()
