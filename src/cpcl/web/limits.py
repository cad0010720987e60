"""What the web API accepts and answers (pydantic models, so OpenAPI states every bound) and the
middleware that bounds request bodies and sets security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cpcl.utils.text import blank

MAX_QUERY_CHARS = 300  # longest sentence accepted (CLIP reads 77 tokens, about 60 words, anyway)
MAX_K = 100  # most results one query returns
MAX_UPLOAD_BYTES = 5 * 2**20  # largest example image accepted
MAX_IMAGE_PIXELS = 25_000_000  # largest example image accepted, in pixels (decompression bombs)
MAX_FILTER_VALUES = 64  # most cameras one filter names
MAX_FIELD_CHARS = 64  # longest camera name or time accepted in a filter
MAX_SOURCE_CHARS = 1024  # longest footage source (a path relative to the root) accepted in a filter
CSP = ("default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
NO_CSP_PREFIXES = ("/docs", "/redoc")  # FastAPI's API explorers load their own scripts


def readable_text(value: str) -> str:
    """`value` unchanged; ValueError when it holds a lone surrogate (JSON's \\ud800 escape): text that is
    not Unicode, which no tokenizer or response can encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"the text holds a lone surrogate (U+{ord(value[err.start]):04X}) at character "
                         f"{err.start}: not valid Unicode") from None
    return value


class SearchRequest(BaseModel):
    """A search by sentence, with optional result count, score floor and metadata filters.

    Strict: `k` is a JSON integer (not true, 2.5 or "2"); `min_score` a finite number (not NaN,
    Infinity or true); strings hold no lone surrogates.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="what the person looks like")
    k: int | None = Field(None, ge=1, le=MAX_K, description="results to return (default: the server's)")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, allow_inf_nan=False,
                                    description="leave out results scoring below this")
    cameras: list[str] = Field([], max_length=MAX_FILTER_VALUES, description="only these cameras (empty: any; "
                               f"names of at most {MAX_FIELD_CHARS} characters)")
    time_from: str | None = Field(None, max_length=MAX_FIELD_CHARS, description="only images taken at or after "
                                  "(ISO 8601 or seconds)")
    time_to: str | None = Field(None, max_length=MAX_FIELD_CHARS, description="only images taken at or before")
    sources: list[str] = Field([], max_length=MAX_FILTER_VALUES, description="only detections from these footage "
                               f"sources (empty: any row; paths of at most {MAX_SOURCE_CHARS} characters)")
    rerank: bool | None = Field(None, description="order by k-reciprocal re-ranking over the whole gallery "
                                "(default: the server's)")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if blank(text):
            raise ValueError("the search text is blank (white space or control characters only)")
        return text

    @field_validator("cameras", "sources")
    @classmethod
    def _unicode(cls, names: list[str]) -> list[str]:  # strict str fields refuse lone surrogates; list items not
        for name in names:
            readable_text(name)
        return names


class Span(BaseModel):
    first_frame: int
    last_frame: int
    start: float | None = Field(description="seconds into the source of the first frame")
    end: float | None = Field(description="seconds into the source of the last frame")
    detections: int = Field(description="detections of this person's track")


class Moment(BaseModel):
    frame: int = Field(description="frame index, from 0")
    offset: float | None = Field(None, description="seconds into the source (None: its frame rate is unknown)")
    box: list[int] = Field(description="x, y, width, height in frame pixels")


class StripItem(Moment):
    row: int = Field(description="the detection's row in the index")
    url: str = Field(description="where its crop is served")
    frame_url: str = Field(description="where its whole frame is served")


class Footage(Moment):
    source: str = Field(description="video file or frame folder, relative to the root")
    detector_score: float = Field(description="the detector's confidence, on its own scale")
    frame_size: list[int] | None = Field(description="width and height of the frame")
    span: Span | None = Field(description="the person's track (None: not grouped)")
    best: int | None = Field(None, description="grouped: the row of the track's best crop (the result's url)")
    strip: list[StripItem] | None = Field(None, description="grouped: detections spread along the track")


class Result(BaseModel):
    rank: int = Field(description="1 = best")
    score: float = Field(description="cosine similarity, -1..1")
    path: str = Field(description="path relative to the gallery root (a detection: SOURCE#FRAME:K)")
    url: str = Field(description="where the image (a detection: its crop) is served")
    metadata: dict[str, Any] = Field(description="camera, time and any other sidecar fields")
    footage: Footage | None = Field(None, description="a detection in footage: where it is")
    frame_url: str | None = Field(None, description="a detection: where its whole frame is served")
    distance: float | None = Field(None, description="re-ranked searches: the re-ranked distance, 0..1, "
                                   "the results are ordered by")


class SearchResponse(BaseModel):
    count: int
    results: list[Result]


class Limits(BaseModel):
    max_k: int = MAX_K
    max_query_chars: int = MAX_QUERY_CHARS
    max_upload_bytes: int = MAX_UPLOAD_BYTES


class InfoResponse(BaseModel):
    count: int = Field(description="images in the index")
    backend: str = Field(description="exact or ivf")
    cameras: list[str] = Field(description="camera names in the metadata (empty: no camera filter)")
    sources: list[str] = Field(description="footage sources with detections (empty: no source filter)")
    time_range: list[str] | None = Field(description="earliest and latest time in the metadata (UTC)")
    default_k: int
    min_score: float = Field(description="the page's starting score threshold")
    rerank: bool = Field(False, description="whether a search re-ranks when it does not say")
    limits: Limits = Limits()


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, whether announced by Content-Length or not."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._reject(send)
            return
        received = 0
        too_large = started = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                too_large = True
                raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:  # the app's answer to a cut-off body becomes 413
            nonlocal started
            if too_large:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = f'{{"detail":"request body larger than {self.limit} bytes"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    """Raised inside the app's receive when the body passes the limit."""


async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """No sniffing, no framing, no referrer; a strict content security policy outside the API explorers."""
    response = await call_next(request)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if not request.url.path.startswith(NO_CSP_PREFIXES):
        response.headers["Content-Security-Policy"] = CSP
    return response
