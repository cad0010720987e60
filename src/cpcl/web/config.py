"""`WebConfig`: what the search page starts with, which Host headers it answers, and the server's
timeouts and decoding bounds. Plain data, no FastAPI import, so `cpcl serve` takes its option
defaults from here at parse time."""

from __future__ import annotations

from dataclasses import dataclass

from cpcl.utils.errors import ConfigError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")  # Host headers accepted when bound to loopback


@dataclass(frozen=True)
class WebConfig:
    """What the page starts with, which Host headers the app answers, and how long the server waits."""

    default_k: int = 12  # results asked for when a request does not say
    min_score: float = 0.2  # the page's starting score threshold
    rerank: bool = False  # re-rank when a request does not say (the page's switch starts so)
    allowed_hosts: tuple[str, ...] = ("*",)  # Host header values accepted (cpcl serve: loopback names on loopback)
    decode_slots: int = 2  # uploads decoded at once (each up to ~100 MB of pixels at the 25-Mpx cap)
    decode_wait_s: float = 30.0  # an upload waits this long for a decode slot, then gets 503
    malloc_arenas: int = 2  # cpcl serve: glibc malloc arenas at most, so memory freed after a decode is returned
    header_timeout_s: float = 10.0  # a request head (request line + headers) must arrive within this
    body_timeout_s: float = 60.0  # a request body must arrive within this once its head has
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_header_bytes: int = 16 * 1024  # largest request head accepted (h11's incomplete-event limit)

    def __post_init__(self) -> None:
        for name in ("default_k", "decode_slots", "malloc_arenas", "keep_alive_s", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"web setting {name} must be >= 1, got {getattr(self, name)}")
        for name in ("decode_wait_s", "header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:  # also refuses NaN
                raise ConfigError(f"web setting {name} must be > 0 seconds, got {getattr(self, name)}")
        if not -1.0 <= self.min_score <= 1.0:
            raise ConfigError(f"web setting min_score must be between -1 and 1, got {self.min_score}")
