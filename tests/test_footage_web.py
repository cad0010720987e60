"""Footage on the search page: the API's detections, their crops and frames served only for indexed sources inside
the root, and the page in headless Chromium (a result's frame with its box drawn over it)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from browser_support import CHROMIUM_FLAGS, chromium_path, serving
from cpcl.cli import main
from cpcl.index.search import Filters, Searcher
from cpcl.web.app import create_app
from cpcl.web.config import LOOPBACK_HOSTS, WebConfig
from search_support import write_checkpoint

SIZE = (320, 192)  # frame width, height
TEXT = "a woman in a red coat"


@pytest.fixture(scope="module")
def searcher(tmp_path_factory) -> Searcher:
    """An index of one scene twice over: its video (every 2nd frame) and its frame folder (frames 1-4)."""
    base = tmp_path_factory.mktemp("footage_web")
    assert main(["-q", "synth", str(base), "--footage", "--scenes", "1", "--frames", "8", "--persons", "3",
                 "--frame-size", str(SIZE[0]), str(SIZE[1]), "--fps", "8"]) == 0
    scene = base / "SynthPedes-footage" / "scene_000"
    (scene.parent / "secret.txt").write_text("outside the root")
    checkpoint = write_checkpoint(base / "tiny.pt")
    common = ["--detector", f"detections:{scene / 'det.txt'}", "--device", "cpu", "--precision", "fp32"]
    assert main(["-q", "index", "build", "--checkpoint", str(checkpoint), "--video", str(scene / "video.mp4"),
                 "--every", "2", "--out", str(base / "idx"), *common]) == 0
    few = base / "det_first4.txt"
    few.write_text("".join(line + "\n" for line in (scene / "det.txt").read_text().splitlines()
                           if int(line.split(",")[0]) <= 4))
    common[1] = f"detections:{few}"
    assert main(["-q", "index", "add", "--index", str(base / "idx"), "--frames", str(scene / "frames"), *common]) == 0
    return Searcher.open(base / "idx", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def client(searcher) -> TestClient:
    return TestClient(create_app(searcher, WebConfig(default_k=5)))


def picture(response) -> np.ndarray:
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.float32)


def test_info_lists_the_sources_and_results_say_where(client, searcher):
    info = client.get("/api/info").json()
    assert info["sources"] == ["frames", "video.mp4"] and info["count"] == len(searcher.records) == 12 + 12
    body = client.post("/api/search", json={"text": TEXT, "k": 24}).json()
    rows = {r["path"] for r in body["results"]}
    assert len(rows) == body["count"] <= 24
    for result in body["results"]:
        footage = result["footage"]
        row = searcher.row_of(result["path"])
        assert result["url"] == f"/footage/{footage['best']}/crop" and result["frame_url"] == f"/footage/{row}/frame"
        assert footage["source"] in ("frames", "video.mp4") and footage["frame_size"] == list(SIZE)
        assert footage["span"]["first_frame"] <= footage["frame"] <= footage["span"]["last_frame"]
        members = searcher.tracks[int(searcher.track[row])].rows.tolist()
        assert row in members and footage["best"] in members
        assert [item["row"] for item in footage["strip"]] == searcher.tracks[int(searcher.track[row])].strip(5)
        assert all(item["url"] == f"/footage/{item['row']}/crop" for item in footage["strip"])
    ungrouped = searcher.search_text(TEXT, 24, group=False)
    assert len(ungrouped) == 24 and body["count"] <= 24  # tracks merge detections: never more results


def test_the_crop_is_cut_from_the_frame_at_the_box(client, searcher):
    for source in ("video.mp4", "frames"):
        result = client.post("/api/search", json={"text": TEXT, "sources": [source]}).json()["results"][0]
        assert result["footage"]["source"] == source
        row = searcher.row_of(result["path"])
        frame, crop = picture(client.get(result["frame_url"])), picture(client.get(f"/footage/{row}/crop"))
        x, y, w, h = result["footage"]["box"]
        assert frame.shape == (SIZE[1], SIZE[0], 3) and crop.shape == (h, w, 3)
        error = np.abs(frame[y:y + h, x:x + w] - crop).mean()  # the same pixels, each through JPEG once
        shift = w // 2 if x + w + w // 2 <= SIZE[0] else -(w // 2)
        assert error < 6 and error < np.abs(frame[y:y + h, x + shift:x + shift + w] - crop).mean() / 2
    only = client.post("/api/search", json={"text": TEXT, "k": 24, "sources": ["frames"]}).json()["results"]
    assert {r["footage"]["source"] for r in only} == {"frames"} and {r["footage"]["frame"] for r in only} <= {0, 1, 2, 3}


def test_the_image_search_takes_the_source_filter(client, searcher):
    result = client.post("/api/search", json={"text": TEXT, "sources": ["video.mp4"]}).json()["results"][0]
    crop = client.get(f"/footage/{searcher.row_of(result['path'])}/crop").content
    body = client.post("/api/search/image", files={"image": ("q.jpg", crop, "image/jpeg")},
                       data={"k": "3", "sources": ["video.mp4"]}).json()
    best = body["results"][0]["footage"]
    assert (best["source"], best["frame"], best["box"]) == ("video.mp4", result["footage"]["frame"],
                                                            result["footage"]["box"])


@pytest.mark.parametrize("url, status", [
    ("/footage/999999/frame", 404), ("/footage/-1/crop", 422), ("/footage/abc/frame", 422),
    ("/footage/1/../../secret.txt", 404), ("/footage/1/anything", 404),
])
def test_only_detections_of_the_index_are_served(client, url, status):
    assert client.get(url).status_code == status


def test_a_frame_file_outside_its_source_or_a_source_not_in_the_manifest_is_404(searcher):
    rows = [i for i, r in enumerate(searcher.records) if r["source"] == "frames"]
    originals = {i: dict(searcher.records[i]) for i in rows[:3]}
    try:
        searcher.records[rows[0]]["file"] = "../secret.txt"
        searcher.records[rows[1]]["file"] = "video.mp4"  # inside the root, but not a frame of this folder
        searcher.records[rows[2]]["source"] = "other.mp4"
        client = TestClient(create_app(searcher, WebConfig()))
        for row in rows[:3]:
            response = client.get(f"/footage/{row}/frame")
            assert response.status_code == 404 and "cannot be read" in response.json()["detail"]
    finally:
        for i, record in originals.items():
            searcher.records[i] = record


def test_the_page_shows_the_crops_and_a_frame_with_the_box(searcher):
    app = create_app(searcher, WebConfig(default_k=6, min_score=-1.0, allowed_hosts=LOOPBACK_HOSTS))
    with serving(app) as (host, port), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(f"http://{host}:{port}/")
        page.wait_for_selector("text=24 detections indexed from 2 footage sources")
        assert page.locator("#source-list input").evaluate_all("bs => bs.map(b => b.value)") == ["frames", "video.mp4"]
        page.check("#source-list input[value='video.mp4']")
        page.fill("#query", TEXT)
        page.press("#query", "Enter")
        expect(page.locator("#status")).to_contain_text("a red coat")
        cards = page.locator("#results .card.footage")
        persons = searcher.search_text(TEXT, 6, min_score=-1.0, filters=Filters(sources=("video.mp4",)))
        expect(cards).to_have_count(len(persons))  # one card a person's track, up to 6
        assert set(cards.evaluate_all("cs => cs.map(c => c.dataset.source)")) == {"video.mp4"}
        first = cards.first
        expect(first.locator("img.crop")).to_have_js_property("complete", True)
        want = searcher.search_text(TEXT, 1, filters=Filters(sources=("video.mp4",)))[0]
        assert first.get_attribute("data-path") == want.path
        x, y, w, h = want.footage["box"]
        best = searcher.records[want.footage["best"]]["box"]  # the card shows the track's best crop
        assert first.locator("img.crop").evaluate("img => [img.naturalWidth, img.naturalHeight]") == best[2:]
        assert "video.mp4" in first.inner_text() and "frame" in first.inner_text()
        strip = first.locator(".strip img")
        expect(strip).to_have_count(len(want.footage["strip"]))
        expect(strip.last).to_have_js_property("complete", True)
        last = want.footage["strip"][-1]
        assert strip.last.evaluate("img => [img.naturalWidth, img.naturalHeight]") == last["box"][2:]
        strip.last.click()  # a strip crop shows its own frame and box
        expect(page.locator("#frame-caption")).to_contain_text(f"box {', '.join(map(str, last['box']))}")
        page.keyboard.press("Escape")
        first.click()
        view = page.locator("#frame-view")
        expect(view).to_be_visible()
        image = page.locator("#frame-image")
        expect(image).to_have_js_property("complete", True)
        assert image.evaluate("img => img.naturalWidth") == SIZE[0]
        shown, box = image.bounding_box(), page.locator("#frame-box").bounding_box()
        scale = shown["width"] / SIZE[0]
        assert box["x"] - shown["x"] == pytest.approx(x * scale, abs=1.5)
        assert box["y"] - shown["y"] == pytest.approx(y * scale, abs=1.5)
        assert box["width"] == pytest.approx(w * scale, abs=1.5) and box["height"] == pytest.approx(h * scale, abs=1.5)
        assert f"box {x}, {y}, {w}, {h}" in page.inner_text("#frame-caption")
        page.keyboard.press("Escape")
        expect(view).to_be_hidden()
        browser.close()


def test_the_json_of_a_footage_search_parses_back(searcher, tmp_path, capsys):
    capsys.readouterr()
    assert main(["-q", "search", "--index", str(searcher.directory), TEXT, "-k", "2", "--json", "--source", "frames",
                 "--device", "cpu", "--precision", "fp32"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert all(Path(r["file"]).parent.name == "frames" and Path(r["file"]).is_file() for r in results)
