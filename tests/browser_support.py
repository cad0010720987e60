"""Helpers for the server tests: Debian's Chromium for Playwright, and the app served by uvicorn in a thread."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from cpcl.web.config import WebConfig
from cpcl.web.server import server_config

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    """Debian's chromium (CPCL_CHROMIUM overrides); skipped where absent, except in CI (which installs it)."""
    path = os.environ.get("CPCL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {path}: .ci/run installs Debian's chromium")
        pytest.skip(f"no Chromium at {path} (apt-get install chromium)")
    return path


@contextmanager
def serving(app: FastAPI, config: WebConfig = WebConfig(), backlog: int = 2048) -> Iterator[tuple[str, int]]:
    """(host, port) of uvicorn running `app` in a thread on a free loopback port, with the timed protocol and
    the timeouts of `config`, as cpcl serve runs it; stopped on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    uvicorn_config = server_config(app, "127.0.0.1", 0, config)
    uvicorn_config.backlog = backlog
    uv = uvicorn.Server(uvicorn_config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield sock.getsockname()
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()
