"""The search web app: a page and a JSON API (FastAPI, OpenAPI at /openapi.json) over one loaded index.

`create_app(searcher)` builds the app around an open `cpcl.index.Searcher`; nothing is loaded
at import time. Safe by construction: images are served only when their path is a record of
the index *and* resolves inside the gallery root (footage: a frame or crop only by the row of a
detection, from a source the manifest lists, inside the root); queries, k, filters and uploads are bounded
(numbers strict and finite, text valid Unicode; uploads decoded a few at a time and at reduced
size, `cpcl.web.uploads`); bad requests get a 4xx with a one-line `detail` (validation errors:
FastAPI's list, without the input); responses carry a strict content security policy (the page
uses no inline script and builds its DOM from text, never from HTML). `cpcl.web.server` runs it
with every timeout set.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from importlib import resources
from urllib.parse import quote

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from PIL import Image

from cpcl import __version__
from cpcl.index.footage import FrameReader, crop
from cpcl.index.gallery import utc_iso
from cpcl.index.search import Filters, Hit, Searcher
from cpcl.utils.errors import CpclError
from cpcl.web.config import WebConfig
from cpcl.web.limits import (MAX_FIELD_CHARS, MAX_FILTER_VALUES, MAX_K, MAX_SOURCE_CHARS, MAX_UPLOAD_BYTES, BodyLimit,
                             InfoResponse, SearchRequest, SearchResponse, security_headers)
from cpcl.web.uploads import UploadDecoder

log = logging.getLogger(__name__)

JPEG_QUALITY = 90  # frames and crops of footage, encoded for the page
CACHE = {"Cache-Control": "private, max-age=3600"}


def _result(hit: Hit) -> dict:
    """A hit for the page: the URLs of its image (a person: its track's best crop) and frame, and of its strip."""
    if hit.footage is None:
        return {**hit.to_dict(), "url": "/gallery/" + quote(hit.path)}
    out = {**hit.to_dict(), "url": f"/footage/{hit.footage.get('best', hit.row)}/crop",
           "frame_url": f"/footage/{hit.row}/frame"}
    if "strip" in hit.footage:
        strip = [{**item, "url": f"/footage/{item['row']}/crop", "frame_url": f"/footage/{item['row']}/frame"}
                 for item in hit.footage["strip"]]
        out["footage"] = {**hit.footage, "strip": strip}
    return out


def _results(hits: list[Hit]) -> list[dict]:
    return [_result(hit) for hit in hits]


def _jpeg(image: Image.Image) -> Response:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return Response(buffer.getvalue(), media_type="image/jpeg", headers=CACHE)


def _filters(cameras: list[str], time_from: str | None, time_to: str | None, sources: list[str]) -> Filters:
    """The metadata filters of a request (both search endpoints); 422 with the reason when they are bad."""
    if any(len(name) > MAX_FIELD_CHARS for name in cameras):
        raise HTTPException(status_code=422, detail=f"camera names are at most {MAX_FIELD_CHARS} characters")
    if any(len(name) > MAX_SOURCE_CHARS for name in sources):
        raise HTTPException(status_code=422, detail=f"source names are at most {MAX_SOURCE_CHARS} characters")
    try:
        return Filters.parse(cameras, time_from, time_to, sources)
    except CpclError as err:
        raise HTTPException(status_code=422, detail=str(err)) from None


def _answer(search: Callable[[], list[Hit]]) -> dict:
    """The response to a search; 422 with the error's line when the query cannot be answered."""
    try:
        hits = search()
    except CpclError as err:
        raise HTTPException(status_code=422, detail=str(err)) from None
    return {"results": _results(hits), "count": len(hits)}


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with FastAPI's list of {loc, msg, type} minus the offending input, which may be anything
    (NaN, a lone surrogate, megabytes) and is not echoed back."""
    errors = [{key: value for key, value in error.items() if key not in ("input", "ctx", "url")}
              for error in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


def create_app(searcher: Searcher, config: WebConfig | None = None) -> FastAPI:
    """The app serving `searcher` (an open index with its model); `config` defaults to `WebConfig()`."""
    config = config or WebConfig()
    app = FastAPI(title="cpcl search", version=__version__,
                  description="Text-based person search over an indexed gallery: by sentence or by example image.")
    _add_limits(app, config)
    app.add_exception_handler(RequestValidationError, _validation_error)
    _add_page(app)
    _add_search_routes(app, searcher, config)
    _add_image_routes(app, searcher)
    return app


def _add_limits(app: FastAPI, config: WebConfig) -> None:
    """Only the configured hosts, the security headers on every response, request bodies bounded."""
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))
    app.middleware("http")(security_headers)
    app.add_middleware(BodyLimit, limit=MAX_UPLOAD_BYTES + 64 * 1024)


def _add_page(app: FastAPI) -> None:
    """The page (/) and its script and style (/static)."""
    static = resources.files("cpcl.web") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))


def _add_search_routes(app: FastAPI, searcher: Searcher, config: WebConfig) -> None:
    """/api/info and the two searches, by a sentence and by an uploaded image."""
    decoder = UploadDecoder(searcher.image_size, config.decode_slots, config.decode_wait_s)

    @app.get("/api/info", response_model=InfoResponse, summary="The index: size, filters it offers, limits")
    def info() -> dict:
        times = searcher.time_range()
        return {"count": searcher.count, "backend": searcher.backend.name, "cameras": searcher.camera_names(),
                "sources": searcher.source_names(), "time_range": [utc_iso(t) for t in times] if times else None,
                "default_k": config.default_k, "min_score": config.min_score, "rerank": config.rerank}

    @app.post("/api/search", response_model=SearchResponse, summary="Search by a sentence")
    def search_text(request: SearchRequest) -> dict:
        filters = _filters(request.cameras, request.time_from, request.time_to, request.sources)
        k = request.k or config.default_k
        rerank = config.rerank if request.rerank is None else request.rerank
        return _answer(lambda: searcher.search_text(request.text, k, request.min_score, filters, rerank=rerank))

    @app.post("/api/search/image", response_model=SearchResponse, summary="Search by an example image")
    def search_image(image: UploadFile = File(..., description=f"JPEG / PNG / WebP, at most {MAX_UPLOAD_BYTES} bytes"),
                     k: int | None = Form(None, ge=1, le=MAX_K),
                     min_score: float | None = Form(None, ge=-1.0, le=1.0, allow_inf_nan=False),
                     cameras: list[str] = Form([], max_length=MAX_FILTER_VALUES),
                     time_from: str | None = Form(None, max_length=MAX_FIELD_CHARS),
                     time_to: str | None = Form(None, max_length=MAX_FIELD_CHARS),
                     sources: list[str] = Form([], max_length=MAX_FILTER_VALUES),
                     rerank: bool | None = Form(None, description="order by k-reciprocal re-ranking")) -> dict:
        """The fields of /api/search, as a multipart form with the image. Takes 8 parameters because FastAPI
        reads and bounds one form field each."""
        k = k or config.default_k
        filters = _filters(cameras, time_from, time_to, sources)
        picture = decoder.decode(image)
        rerank = config.rerank if rerank is None else rerank
        return _answer(lambda: searcher.search_image(picture, k, min_score, filters, rerank=rerank))


def _add_image_routes(app: FastAPI, searcher: Searcher) -> None:
    """Gallery images (/gallery/PATH) and a detection's frame and crop (/footage/ROW/...), only of the index."""
    root = searcher.root.resolve()
    frames = FrameReader(root, searcher.sources)

    @app.get("/gallery/{path:path}", summary="A gallery image (only images of the index, only inside its root)")
    def gallery_image(path: str) -> FileResponse:
        missing = HTTPException(status_code=404, detail="no such image in the gallery")
        if searcher.row_of(path) is None:  # first: only an indexed path is ever looked up on disk
            raise missing
        try:
            file = (root / path).resolve()
            served = file.is_relative_to(root) and file.is_file()
        except (OSError, ValueError):  # a NUL byte, a name too long for the file system
            served = False
        if not served:
            raise missing
        return FileResponse(file, headers=CACHE)

    def detection_frame(row: int) -> tuple:
        """(frame [H, W, 3], box) of a detection row; 404 for any other row or a frame that cannot be read."""
        record = searcher.records[row] if row < searcher.count else {}
        if "source" not in record:  # first: only a detection of an indexed source is ever looked up on disk
            raise HTTPException(status_code=404, detail="no such detection in the index")
        try:
            return frames.frame(record), record["box"]
        except (CpclError, OSError, ValueError, Image.DecompressionBombError):
            raise HTTPException(status_code=404, detail="the frame of this detection cannot be read") from None

    @app.get("/footage/{row}/frame", summary="The frame of a detection (the page draws its box)")
    def footage_frame(row: int = PathParam(ge=0, le=2**40)) -> Response:
        frame, _ = detection_frame(row)
        return _jpeg(Image.fromarray(frame))

    @app.get("/footage/{row}/crop", summary="The crop of a detection, cut from its frame")
    def footage_crop(row: int = PathParam(ge=0, le=2**40)) -> Response:
        frame, box = detection_frame(row)
        return _jpeg(crop(frame, box))
