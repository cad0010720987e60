"""The web app's JSON API through FastAPI's TestClient: searches, bounds, 4xx errors, and no path traversal."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from browser_support import serving
from cpcl.index.search import Searcher
from cpcl.web import uploads
from cpcl.web.app import create_app
from cpcl.web.config import LOOPBACK_HOSTS, WebConfig
from cpcl.web.limits import MAX_K, MAX_QUERY_CHARS, MAX_UPLOAD_BYTES
from search_support import build_gallery_index

TEXT = "a man in a blue jacket with a backpack"


@pytest.fixture(scope="module")
def searcher(tmp_path_factory) -> Searcher:
    base = tmp_path_factory.mktemp("web")
    build_gallery_index(base)
    (base / "secret.txt").write_text("outside the gallery")
    return Searcher.open(base / "idx", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def client(searcher) -> TestClient:
    return TestClient(create_app(searcher, WebConfig(default_k=5)))


def png_bytes(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def test_page_info_and_openapi(client, searcher):
    page = client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    info = client.get("/api/info").json()
    assert info["count"] == 12 and info["backend"] == "exact" and info["cameras"] == ["c1", "c2", "c3"]
    assert info["time_range"] == ["2024-05-01T08:00:00", "2024-05-01T19:00:00"] and info["default_k"] == 5
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/search/image", "/api/info"} <= set(schema["paths"])
    assert schema["components"]["schemas"]["SearchRequest"]["properties"]["text"]["maxLength"] == MAX_QUERY_CHARS


def test_text_search_with_filters_and_threshold(client):
    body = client.post("/api/search", json={"text": TEXT}).json()
    assert body["count"] == 5 and [r["rank"] for r in body["results"]] == [1, 2, 3, 4, 5]
    first = body["results"][0]
    assert first["url"] == "/gallery/" + first["path"] and client.get(first["url"]).status_code == 200
    body = client.post("/api/search", json={"text": TEXT, "k": 12, "cameras": ["c3"],
                                            "time_from": "2024-05-01T12:00"}).json()
    assert {(r["metadata"]["camera"], r["metadata"]["time"][11:13]) for r in body["results"]} == {("c3", "13"),
                                                                                                ("c3", "16"),
                                                                                                ("c3", "19")}
    assert client.post("/api/search", json={"text": TEXT, "min_score": 1.0}).json() == {"count": 0, "results": []}


def test_image_search_returns_the_image_itself_first(client, searcher):
    rel = searcher.records[4]["path"]
    response = client.post("/api/search/image", files={"image": ("q.png", png_bytes(searcher.root / rel), "image/png")},
                           data={"k": "3", "cameras": ["c1", "c2"]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["path"] == rel and results[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert len(results) == 3 and {r["metadata"]["camera"] for r in results} <= {"c1", "c2"}


@pytest.mark.parametrize("payload, status, message", [
    ({"text": ""}, 422, "at least 1 character"),
    ({"text": "   "}, 422, "blank"),
    ({"text": "x" * (MAX_QUERY_CHARS + 1)}, 422, f"at most {MAX_QUERY_CHARS} characters"),
    ({"text": TEXT, "k": 0}, 422, "greater than or equal to 1"),
    ({"text": TEXT, "k": MAX_K + 1}, 422, f"less than or equal to {MAX_K}"),
    ({"text": TEXT, "min_score": 2}, 422, "less than or equal to 1"),
    ({"text": TEXT, "cameras": ["x" * 65]}, 422, "at most 64 characters"),
    ({"text": TEXT, "time_from": "yesterday"}, 422, "is not a time"),
    ({"text": TEXT, "time_from": "2024-05-02", "time_to": "2024-05-01"}, 422, "time range is empty"),
    ({"text": TEXT, "colour": "red"}, 422, "Extra inputs"),
    ({"query": TEXT}, 422, "Field required"),
])
def test_bad_text_requests_are_4xx_with_a_reason(client, payload, status, message):
    response = client.post("/api/search", json=payload)
    assert response.status_code == status and message in response.text


def test_bad_uploads_are_4xx_with_a_reason(client, searcher):
    good = png_bytes(searcher.root / searcher.records[0]["path"])
    cases = [
        ({"image": ("q.txt", b"plain text", "text/plain")}, {}, 415, "not an image"),
        ({"image": ("q.png", b"", "image/png")}, {}, 400, "empty"),
        ({"image": ("q.png", good[:60], "image/png")}, {}, 400, "broken"),
        ({"image": ("q.png", good, "image/png")}, {"k": "0"}, 422, "greater than or equal to 1"),
        ({}, {"k": "3"}, 422, "Field required"),
        ({"image": ("q.png", good, "image/png")}, {"cameras": ["c1", "x" * 65]}, 422, "at most 64 characters"),
        ({"image": ("q.png", good, "image/png")}, {"time_from": "yesterday"}, 422, "is not a time"),
    ]
    for files, data, status, message in cases:
        response = client.post("/api/search/image", files=files or None, data=data)
        assert response.status_code == status and message in response.text, (status, response.text)


def test_uploads_over_the_limit_are_refused_with_413(client):
    big = os.urandom(MAX_UPLOAD_BYTES + 1000)
    response = client.post("/api/search/image", files={"image": ("big.png", big, "image/png")})
    assert response.status_code == 413 and "larger than" in response.json()["detail"]

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(MAX_UPLOAD_BYTES // 2**16 + 4):
            yield b"0" * 2**16

    response = client.post("/api/search/image", content=chunks(),
                           headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413
    huge = Image.new("L", (6000, 6000))
    buffer = io.BytesIO()
    huge.save(buffer, format="PNG")
    response = client.post("/api/search/image", files={"image": ("huge.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 413 and "pixels" in response.text


@pytest.mark.parametrize("url", [
    "/gallery/../secret.txt", "/gallery/%2e%2e/secret.txt", "/gallery/..%2fsecret.txt",
    "/gallery/c1/..%2f..%2fsecret.txt",
    "/gallery/%2Fetc%2Fpasswd", "/gallery//etc/passwd", "/gallery/meta.csv", "/gallery/.thumbs/hidden.png",
    "/gallery/c1/broken.jpg", "/gallery/notes.txt", "/gallery/", "/gallery/c1",
    "/gallery/c1/%00.png", "/gallery/%00", "/gallery/c1%00/../../secret.txt", "/gallery/" + "a" * 300 + ".png",
])
def test_only_indexed_images_inside_the_root_are_served(client, url):
    response = client.get(url)
    assert response.status_code == 404 and "outside the gallery" not in response.text
    assert b"outside the gallery" not in response.content


def test_a_symlink_leading_out_of_the_root_is_not_followed(searcher, tmp_path):
    outside = tmp_path / "outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    link = searcher.root / "c1" / "link.png"
    link.symlink_to(outside)
    searcher._paths["c1/link.png"] = 0  # as if it had been indexed
    try:
        assert TestClient(create_app(searcher)).get("/gallery/c1/link.png").status_code == 404
    finally:
        del searcher._paths["c1/link.png"]
        link.unlink()


def test_loopback_server_refuses_other_host_names(searcher):
    client = TestClient(create_app(searcher, WebConfig(allowed_hosts=LOOPBACK_HOSTS)), base_url="http://127.0.0.1")
    assert client.get("/api/info").status_code == 200
    assert client.get("/api/info", headers={"Host": "attacker.example"}).status_code == 400


def test_the_web_app_never_imports_the_training_engine():
    code = "import sys, cpcl.web.app; print(sorted(m for m in sys.modules if m.startswith('cpcl.engine')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("path", ["c1/\x00.png", "c1/" + "a" * 300 + ".png", "c1/" + "a" * 5000])
def test_an_indexed_path_the_file_system_refuses_is_404(searcher, path):
    """A path that passes the index check but makes the OS raise (NUL byte, a name over 255 bytes) is 404, not 500."""
    searcher._paths[path] = 0  # as if it had been indexed
    try:
        response = TestClient(create_app(searcher)).get("/gallery/" + path.replace("\x00", "%00"))
        assert response.status_code == 404 and response.json() == {"detail": "no such image in the gallery"}
    finally:
        del searcher._paths[path]


@pytest.mark.parametrize("raw, message", [
    ('{"text": "a man", "min_score": NaN}', "finite number"),
    ('{"text": "a man", "min_score": Infinity}', "finite number"),
    ('{"text": "a man", "min_score": -Infinity}', "finite number"),
    ('{"text": "a man", "k": 1e400}', "valid integer"),
    ('{"text": "a \\ud800 man"}', "unicode"),
    ('{"text": "a man", "cameras": ["c1", "\\udfff"]}', "lone surrogate (U+DFFF)"),
    ('{"text": "a man", "time_from": "\\ud800"}', "unicode"),
    ('{"text": "a man", "time_from": "nan"}', "is not a time"),
    ('{"text": "a man", "time_to": "-inf"}', "is not a time"),
    ('{"text": "a man", "k": true}', "valid integer"),
    ('{"text": "a man", "k": 2.0}', "valid integer"),
    ('{"text": "a man", "k": "2"}', "valid integer"),
    ('{"text": "a man", "min_score": true}', "valid number"),
    ('{"text": 5}', "valid string"),
])
def test_non_finite_numbers_lone_surrogates_and_loose_types_are_422(client, raw, message):
    response = client.post("/api/search", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and message in response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) or all("input" not in error for error in detail)  # the input is not echoed


def test_strict_fields_still_take_plain_json_numbers(client):
    body = client.post("/api/search", json={"text": TEXT, "k": 3, "min_score": -1}).json()
    assert body["count"] == 3


@pytest.mark.parametrize("data, message", [
    ({"k": "true"}, "valid integer"), ({"min_score": "nan"}, "finite number"), ({"min_score": "inf"}, "finite number"),
    ({"time_from": "nan"}, "is not a time"),
])
def test_upload_form_fields_are_strict_too(client, searcher, data, message):
    good = png_bytes(searcher.root / searcher.records[0]["path"])
    response = client.post("/api/search/image", files={"image": ("q.png", good, "image/png")}, data=data)
    assert response.status_code == 422 and message in response.text


def declared_image(size: tuple[int, int], fmt: str) -> bytes:
    """A small file declaring a large image (one flat colour: it compresses to almost nothing)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 80, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, decoded_at_most", [("JPEG", 5000 // 4), ("PNG", 5000)])
def test_large_uploads_are_decoded_reduced(client, searcher, monkeypatch, fmt, decoded_at_most):
    """JPEG is decoded scaled (draft), every format is shrunk by whole factors before it reaches the model."""
    payload = declared_image((5000, 5000), fmt)
    loaded, queried = [], []
    original_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: (loaded.append(self.size), original_load(self))[1])
    original_search = searcher.search_image
    monkeypatch.setattr(searcher, "search_image",
                        lambda picture, *a, **kw: (queried.append(picture.size),
                                                   original_search(picture, *a, **kw))[1])
    response = client.post("/api/search/image", files={"image": ("q", payload, "image/" + fmt.lower())})
    assert response.status_code == 200, response.text
    assert max(max(size) for size in loaded) <= decoded_at_most
    height, width = searcher.image_size
    (got_w, got_h), = queried
    assert 2 * width <= got_w < 4 * width and 2 * height <= got_h < 4 * height


def test_small_uploads_keep_every_pixel():
    decoder = uploads.UploadDecoder((32, 16), slots=1, wait_s=1.0)
    picture = Image.effect_noise((16, 40), 64).convert("RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    upload = type("Upload", (), {"file": io.BytesIO(buffer.getvalue())})()
    np.testing.assert_array_equal(np.asarray(decoder.decode(upload)), np.asarray(picture))


def test_concurrent_decodes_are_bounded_and_a_long_wait_is_503(client, searcher, monkeypatch):
    inside, most, gate = [0], [0], threading.Event()
    lock = threading.Lock()
    original = uploads._shrink

    def slow_shrink(data, target):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        gate.wait(timeout=10)
        with lock:
            inside[0] -= 1
        return original(data, target)

    monkeypatch.setattr(uploads, "_shrink", slow_shrink)
    good = png_bytes(searcher.root / searcher.records[0]["path"])
    app = TestClient(create_app(searcher, WebConfig(decode_slots=2, decode_wait_s=0.5)))
    statuses: list[int] = []

    def upload() -> None:
        statuses.append(app.post("/api/search/image", files={"image": ("q.png", good, "image/png")}).status_code)

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)  # two hold the slots, two give up after 0.5 s
    gate.set()
    for thread in threads:
        thread.join(timeout=30)
    assert most[0] == 2 and sorted(statuses) == [200, 200, 503, 503]


@pytest.fixture
def live_server(searcher) -> Iterator[tuple[str, int]]:
    """(host, port) of uvicorn serving the app with the timed protocol: head 0.5 s, body 1 s, keep-alive 1 s."""
    config = WebConfig(header_timeout_s=0.5, body_timeout_s=1.0, keep_alive_s=1)
    with serving(create_app(searcher, config), config) as address:
        yield address


def seconds_until_closed(address: tuple[str, int], sent: bytes, limit: float = 10.0) -> tuple[float, bytes]:
    """Send `sent`, then read until the server closes the connection: (seconds it took, bytes received)."""
    with socket.create_connection(address, timeout=limit) as conn:
        start = time.monotonic()
        conn.sendall(sent)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return time.monotonic() - start, received


def test_slow_heads_and_bodies_are_timed_out(live_server):
    request = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    elapsed, received = seconds_until_closed(live_server, request)  # the blank line that ends the head never comes
    assert 0.4 <= elapsed < 5 and received == b""
    elapsed, received = seconds_until_closed(live_server, b"")  # connects and says nothing
    assert 0.4 <= elapsed < 5 and received == b""
    head = (b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")
    elapsed, received = seconds_until_closed(live_server, head + b'{"text": ')  # 9 of 100 body bytes
    assert 0.9 <= elapsed < 6 and b" 200 " not in received


def test_a_prompt_request_is_answered_and_the_idle_connection_closed(live_server):
    elapsed, received = seconds_until_closed(live_server, b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200 ") and b'"count":12' in received
    assert 0.9 <= elapsed < 6  # kept alive for keep_alive_s, then closed


def test_an_oversized_head_is_refused(live_server):
    head = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * (WebConfig.max_header_bytes + 1)
    _, received = seconds_until_closed(live_server, head)
    assert received.startswith(b"HTTP/1.1 400 ")


def test_web_settings_are_checked():
    from cpcl.utils.errors import ConfigError

    for bad in ({"decode_slots": 0}, {"header_timeout_s": 0.0}, {"body_timeout_s": float("nan")}, {"min_score": 2.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            WebConfig(**bad)
