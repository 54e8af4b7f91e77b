"""Fixtures and file makers for the data tests: generated images (good and hostile), zips,
and a local HTTP server that serves images, errors, slow answers and redirects.

Import what a test module needs; for the server, import `http_server_fixture` (the fixture
is named `http_server`).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

# ---------------------------------------------------------------------------------------
# Image makers


def noise_rgb(seed: int = 0, size: tuple[int, int] = (48, 32)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    arr = np.clip(base + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (48, 32)) -> bytes:
    return encode(noise_rgb(seed, size), "JPEG", quality=90)


def png_bytes(seed: int = 0, size: tuple[int, int] = (48, 32)) -> bytes:
    return encode(noise_rgb(seed, size), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(noise_rgb(1).convert("CMYK"), "JPEG")


def palette_png_with_transparency() -> bytes:
    img = Image.new("P", (20, 20), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (10, 0, 20, 20))
    return encode(img, "PNG", transparency=0)  # left half transparent -> white


def png16_bytes() -> bytes:
    arr = np.linspace(0, 65535, 30 * 20).reshape(20, 30).astype(np.uint16)
    img = Image.frombytes("I;16", (30, 20), arr.astype("<u2").tobytes())
    data = encode(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really 16-bit on disk
    return data


def rgba_png() -> bytes:
    img = Image.new("RGBA", (16, 16), (0, 128, 0, 0))  # fully transparent -> white
    img.paste((0, 0, 255, 255), (8, 0, 16, 16))
    return encode(img, "PNG")


def exif_rotated_jpeg() -> bytes:
    """A 40x20 picture tagged 'rotate 90 CW to display' (orientation 6): upright is 20x40."""
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", exif=exif.tobytes(), quality=95)


def truncated_jpeg() -> bytes:
    data = jpeg_bytes(3, (128, 128))
    return data[: len(data) // 2]


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims 900 megapixels: PIL's bomb limit must refuse it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def strip_png(path, width: int, height: int) -> None:
    """A 1-bit-looking greyscale strip (the issue's 100 x 890,000 and 20 x 4,470,000 px
    PNGs): under the pixel limit, tiny on disk, absurd once scaled to a training size."""
    img = Image.new("L", (width, height), 40)
    long_side = max(width, height)
    for k in range(0, long_side, max(1, long_side // 50)):
        img.paste(220, (k, 0, k + 1, height) if width >= height else (0, k, width, k + 1))
    img.save(path, format="PNG", compress_level=1)


def png16_full_range(size: tuple[int, int] = (64, 48)) -> bytes:
    """A 16-bit greyscale gradient over the whole range 0..65535."""
    width, height = size
    row = np.linspace(0, 65535, width).astype("<u2")
    arr = np.broadcast_to(row, (height, width))
    img = Image.frombytes("I;16", size, np.ascontiguousarray(arr).tobytes())
    return encode(img, "PNG", compress_level=1)


def eps_bytes() -> bytes:
    """A valid little EPS file: Pillow would hand it to Ghostscript to decode."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
        b"0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
    )


def utf8_flagged_zip_with_bad_bytes(image: bytes) -> bytes:
    """A zip whose entry name is flagged UTF-8 (bit 11) but holds bytes that are not."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cls/QQQQ.png", image)
        zf.writestr("good/a.png", image)
    data = bytearray(buf.getvalue().replace(b"QQQQ", b"\xff\xfe\xc3\x28"))
    at = data.find(b"PK\x01\x02")  # the first central directory record: cls/...
    data[at + 9] |= 0x08  # bit 11 (0x800): "the name is UTF-8"
    return bytes(data)


def placeholder_gif() -> bytes:
    """A flat grey 'image not available' picture, like the one dead hosts serve."""
    img = Image.new("RGB", (120, 90), (240, 240, 240))
    img.paste((150, 150, 150), (30, 30, 90, 60))
    return encode(img.convert("P", palette=Image.Palette.ADAPTIVE), "GIF")


# ---------------------------------------------------------------------------------------
# Local HTTP server


Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class LocalServer:
    port: int
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[tuple[str, dict]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.hits if p.split("?")[0] == path)


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str, **headers) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    for k, v in headers.items():
        handler.send_header(k.replace("_", "-"), v)
    handler.end_headers()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        handler.wfile.write(body)  # the client may have given up (a timeout test)


def image_route(data: bytes, ctype: str = "image/jpeg") -> Route:
    return lambda h: send(h, 200, data, ctype)


def status_route(status: int) -> Route:
    return lambda h: send(h, status, b"<html>error</html>", "text/html")


def redirect_route(location: str) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def slow_route(delay: float, data: bytes = b"") -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        time.sleep(delay)
        send(h, 200, data or jpeg_bytes(), "image/jpeg")

    return route


def trickle_route(*, headers: bool, limit: int = 40) -> Route:
    """One byte a second: in the body (after honest headers), or in the headers themselves.
    Stops when the client hangs up, or after `limit` bytes."""

    def route(h: BaseHTTPRequestHandler) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n"
        if headers:
            stream = head + b"X-Padding: " + b"a" * limit
        else:
            h.wfile.write(head + b"\r\n")
            stream = b"\xff" * limit
        try:
            for byte in stream:
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(1.0)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        h.close_connection = True

    return route


def chunked_route(total: int) -> Route:
    """An endless-looking body without Content-Length: the byte limit must stop it."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Connection", "close")
        h.end_headers()
        block = random.Random(0).randbytes(64 * 1024)
        sent = 0
        try:
            while sent < total:
                h.wfile.write(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass

    return route


def json_route(payload: object) -> Route:
    return lambda h: send(h, 200, json.dumps(payload).encode(), "application/json")


def commons_page(server, index: int, name: str, *, thumb: str | None = None) -> dict:
    """One page of a `generator=search&prop=imageinfo&formatversion=2` answer."""
    return {
        "pageid": 1000 + index,
        "ns": 6,
        "title": f"File:{name}",
        "index": index,
        "imageinfo": [
            {
                "url": server.url(f"/orig/{name}"),
                "descriptionurl": f"https://commons.wikimedia.org/wiki/File:{name}",
                "thumburl": thumb or server.url(f"/thumb/{name}"),
                "thumbwidth": 512,
                "thumbheight": 384,
                "mime": "image/jpeg",
                "extmetadata": {
                    "LicenseShortName": {"value": "CC BY-SA 4.0", "source": "commons-desc-page"},
                    "LicenseUrl": {"value": "https://creativecommons.org/licenses/by-sa/4.0"},
                    "Artist": {"value": f'<a href="//commons.wikimedia.org/wiki/User:P{index}">'
                               f"Photographer &amp; {index}</a>"},
                },
            }
        ],
    }  # fmt: skip


def fake_commons(http_server) -> str:
    """A fake Commons API on the local server (its URL): 'ant' has 4 hits (the 2nd one
    dead), 'bee' 2, 'nothing' none."""
    pages = {
        "ant": [commons_page(http_server, i, f"Ant_{i}.jpg") for i in (1, 2, 3, 4)],
        "bee": [commons_page(http_server, i, f"Bee_{i}.jpg") for i in (1, 2)],
    }
    for term, hits in pages.items():
        for n, page in enumerate(hits, 1):
            if (term, n) != ("ant", 2):
                route = image_route(jpeg_bytes({"ant": 100, "bee": 200}[term] + n))
                http_server.routes[urlsplit(page["imageinfo"][0]["thumburl"]).path] = route

    def api(handler) -> None:
        query = parse_qs(urlsplit(handler.path).query)
        term = query["gsrsearch"][0].replace("filetype:bitmap", "").strip()
        hits = pages.get(term, [])
        payload = {"batchcomplete": True}
        if hits:
            # formatversion=2 lists pages, in no particular order; "index" is the rank.
            payload["query"] = {"pages": list(reversed(hits))}
        json_route(payload)(handler)

    http_server.routes["/w/api.php"] = api
    return http_server.url("/w/api.php")


@pytest.fixture(name="http_server")
def http_server_fixture():
    """A threaded HTTP server on 127.0.0.1; tests fill `server.routes[path] = route`."""
    state = LocalServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.hits.append((self.path, dict(self.headers)))
            route = state.routes.get(self.path.split("?")[0])
            if route is None:
                send(self, 404, b"not found", "text/plain")
            else:
                route(self)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
