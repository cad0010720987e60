"""The web app's JSON API through FastAPI's TestClient: searches, bounds, 4xx errors, and no path traversal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cpcl.cli import main
from cpcl.index.search import Searcher
from cpcl.web.app import create_app
from cpcl.web.config import LOOPBACK_HOSTS, WebConfig
from cpcl.web.limits import MAX_K, MAX_QUERY_CHARS, MAX_UPLOAD_BYTES
from search_support import write_checkpoint, write_gallery

TEXT = "a man in a blue jacket with a backpack"


@pytest.fixture(scope="module")
def searcher(tmp_path_factory) -> Searcher:
    base = tmp_path_factory.mktemp("web")
    write_gallery(base / "imgs")
    checkpoint = write_checkpoint(base / "tiny.pt")
    (base / "secret.txt").write_text("outside the gallery")
    assert main(["-q", "index", "build", "--checkpoint", str(checkpoint), "--images", str(base / "imgs"),
                 "--out", str(base / "idx"), "--metadata", str(base / "imgs" / "meta.csv"), "--workers", "0",
                 "--device", "cpu", "--precision", "fp32"]) == 0
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
