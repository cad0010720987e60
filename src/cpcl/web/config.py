"""`WebConfig`: what the search page starts with and which Host headers it answers. Plain data, no
FastAPI import, so `cpcl serve` takes its option defaults from here at parse time."""

from __future__ import annotations

from dataclasses import dataclass

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")  # Host headers accepted when bound to loopback


@dataclass(frozen=True)
class WebConfig:
    """What the page starts with, and which Host headers the app answers."""

    default_k: int = 12  # results asked for when a request does not say
    min_score: float = 0.2  # the page's starting score threshold
    allowed_hosts: tuple[str, ...] = ("*",)  # Host header values accepted (cpcl serve: loopback names on loopback)
