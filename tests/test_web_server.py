"""The real server as a person and a crowd use it: uvicorn on a free loopback port, the page driven in
headless Chromium (Playwright with Debian's /usr/bin/chromium, never a downloaded browser), and 200
concurrent API requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from browser_support import CHROMIUM_FLAGS, chromium_path, serving
from cpcl.index.search import Searcher
from cpcl.web.app import create_app
from cpcl.web.config import LOOPBACK_HOSTS, WebConfig
from search_support import build_gallery_index

CONCURRENT = 200  # simultaneous API requests in the load test


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Searcher]]:
    """(base URL, searcher) of a uvicorn server running the app in a thread on a free loopback port."""
    base = tmp_path_factory.mktemp("server")
    build_gallery_index(base)
    searcher = Searcher.open(base / "idx", device="cpu", precision="fp32")
    app = create_app(searcher, WebConfig(default_k=6, min_score=-1.0, allowed_hosts=LOOPBACK_HOSTS))
    with serving(app, backlog=CONCURRENT * 2) as (host, port):
        yield f"http://{host}:{port}", searcher


@pytest.fixture(scope="module")
def page(server):
    """A Chromium page on the search page."""

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        tab = browser.new_page(viewport={"width": 1100, "height": 900})
        tab.goto(server[0] + "/")
        tab.wait_for_selector("text=12 images indexed")
        yield tab
        browser.close()


def test_typing_a_query_shows_the_result_grid(page, server):
    _, searcher = server
    page.fill("#query", "a woman in a red coat with a black backpack")
    page.press("#query", "Enter")
    expect(page.locator("#status")).to_contain_text("a red coat")
    cards = page.locator("#results .card")
    assert cards.count() == 6 and page.locator("#no-match").is_hidden()
    scores = [float(cards.nth(i).get_attribute("data-score")) for i in range(6)]
    assert scores == sorted(scores, reverse=True)
    want = [hit.path for hit in searcher.search_text("a woman in a red coat with a black backpack", 6)]
    assert [cards.nth(i).get_attribute("data-path") for i in range(6)] == want
    assert page.locator("#results .card img").first.evaluate("img => img.complete && img.naturalWidth") == 16
    page.select_option("#k", "24")
    expect(cards).to_have_count(12)


def test_threshold_hides_weak_matches_and_says_no_match(page):
    page.fill("#query", "a man with a backpack")
    page.press("#query", "Enter")
    expect(page.locator("#status")).to_contain_text("a man with a backpack")  # the new results, not the last ones
    scores = sorted(float(s) for s in page.locator("#results .card").evaluate_all("cs => cs.map(c => c.dataset.score)"))
    middle = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    page.eval_on_selector("#threshold", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", middle)
    shown = page.locator("#results .card").count()
    assert shown == sum(s >= float(page.input_value("#threshold")) for s in scores) and 0 < shown < len(scores)
    page.eval_on_selector("#threshold", "el => { el.value = 1; el.dispatchEvent(new Event('input')); }")
    assert page.locator("#results .card").count() == 0 and page.locator("#no-match").is_visible()
    page.eval_on_selector("#threshold", "el => { el.value = -1; el.dispatchEvent(new Event('input')); }")


def test_uploading_an_example_image_and_filtering_by_camera(page, server):
    _, searcher = server
    rel = searcher.records[5]["path"]
    page.set_input_files("#image-input", str(searcher.root / rel))
    expect(page.locator("#results .card").first).to_have_attribute("data-path", rel)
    assert page.locator("#query-image").is_visible()
    page.check("#camera-list input[value='c3']")
    expect(page.locator("#status")).to_contain_text("4 results")  # c3 holds 4 of the 12 images
    assert all("camera c3" in text for text in page.locator("#results .card").all_inner_texts())
    page.uncheck("#camera-list input[value='c3']")
    page.click("#clear-image")


def test_a_bad_request_shows_its_reason(page):
    page.eval_on_selector("#query", "el => el.removeAttribute('maxlength')")
    page.fill("#query", "x" * 400)
    page.press("#query", "Enter")
    page.wait_for_selector("#error:not([hidden])")
    assert "at most 300 characters" in page.inner_text("#error")


def test_200_concurrent_requests_all_succeed(server):
    url, searcher = server
    texts = [f"a person number {i} in a {colour} jacket" for i, colour in
             zip(range(CONCURRENT), ["red", "blue", "green", "black", "white"] * CONCURRENT)]

    async def crowd() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
            requests = [client.post("/api/search", json={"text": text, "k": 5}) if i % 4 else
                        client.get("/gallery/" + searcher.records[i % searcher.count]["path"])
                        for i, text in enumerate(texts)]
            return await asyncio.gather(*requests)

    with ThreadPoolExecutor(1) as pool:  # a thread of its own: Playwright's sync API holds this one's event loop
        responses = pool.submit(asyncio.run, crowd()).result()
    assert [r.status_code for r in responses] == [200] * CONCURRENT
    assert all(r.json()["count"] == 5 for i, r in enumerate(responses) if i % 4)
