"""The ASGI application of ``musicssl serve`` (FastAPI): the page and the HTTP API.

Routes::

    GET  /                 the page (static/index.html; plain HTML/JS/CSS, works offline)
    POST /v1/key           multipart upload "file" -> key record (as ``musicssl key --format json``)
    POST /v1/beats         multipart upload "file" -> beats record (as ``musicssl beats --format json``)
    GET  /v1/health        status, models, limits, queue length (answered outside the worker pool)
    GET  /v1/keys          the 24 keys (canonical order) as probability labels and in a notation (the page's axes)
    GET  /v1/example       the bundled example audio (for the page's "try the example" button)
    GET  /docs, /openapi.json  OpenAPI docs (Swagger UI from the swagger-ui-bundle-v2 package, no CDN)

Errors come back as the CLI's error records (``path``, ``error``, ``message``)
with a 4xx status (413 upload too large, 422 audio that cannot be analysed or
is too long, 400 bad option, 503 queue full); never a traceback.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from musicssl import __version__
from musicssl.beat.estimator import TRACKERS
from musicssl.beat.meter import DEFAULT_METER
from musicssl.errors import MusicsslError, UploadTooLargeError
from musicssl.keys import KEY_LABELS, KEYS, NOTATIONS, format_key
from musicssl.serve.analysis import (
    Analyzer,
    ServeConfig,
    http_status,
    upload_error_record,
    upload_name,
)

STATIC = Path(__file__).with_name("static")
EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "examples" / "ode_to_joy_d_major.ogg"

ERROR_RECORD = {"description": "the CLI's error record: path, error (type), message",
                "content": {"application/json": {"example": {
                    "path": "notes.mp3", "error": "AudioDecodeError", "message": "not an audio file"}}}}
RESPONSES = {400: ERROR_RECORD, 413: ERROR_RECORD, 422: ERROR_RECORD, 503: ERROR_RECORD}


class _UploadTooLarge(HTTPException):
    """Raised from the request body stream once it passes the limit (FastAPI lets
    HTTPExceptions through its form parsing, so this becomes a 413 record)."""


class BodySizeLimit:
    """ASGI middleware: POST bodies larger than ``max_bytes`` get 413 — at once
    from ``Content-Length``, else as soon as the streamed body passes the limit."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    def _message(self) -> str:
        return f"the upload is larger than this server's limit of {self.max_bytes / 1e6:g} MB (--max-upload-mb)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse(_too_large_record(self._message()), status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _UploadTooLarge(413, self._message())
            return message
        return await self.app(scope, limited_receive, send)


def _too_large_record(message: str) -> dict:
    return upload_error_record("upload", None, UploadTooLargeError(message))


def _add_offline_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI served from the ``swagger-ui-bundle-v2`` package (no CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # not installed: FastAPI's page, which loads Swagger UI from a CDN
        swagger_ui_path = None
    if swagger_ui_path is not None:
        app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        if swagger_ui_path is None:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="musicssl API")
        return get_swagger_ui_html(openapi_url="/openapi.json", title="musicssl API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


def create_app(config: ServeConfig | None = None, *, analyzer: Analyzer | None = None) -> FastAPI:
    """The application for ``config`` (models load at startup); ``analyzer``
    replaces the real one (tests)."""
    config = config or ServeConfig()
    analyzer = analyzer or Analyzer(config)

    @asynccontextmanager
    async def lifespan(app):
        analyzer.load()
        yield
        analyzer.close()

    app = FastAPI(title="musicssl", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Key and beats of uploaded audio; the same JSON records as "
                              "`musicssl key/beats --format json`.")
    _add_offline_docs(app)
    app.state.analyzer = analyzer
    app.add_middleware(BodySizeLimit, max_bytes=config.max_upload_bytes)

    @app.exception_handler(_UploadTooLarge)
    async def too_large(request, exc):
        return JSONResponse(_too_large_record(exc.detail), status_code=413)

    @app.exception_handler(MusicsslError)
    async def musicssl_error(request, exc):
        return JSONResponse(upload_error_record("upload", None, exc), status_code=http_status(exc))

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/v1/health", summary="server status, models and limits")
    async def health():
        return {"status": "ok", "version": __version__, **analyzer.describe()}

    @app.get("/v1/keys", summary="the 24 keys in canonical order: probability labels, names in a notation, "
                                      "short names (tkey for standard) for chart axes")
    async def keys(notation: Literal[NOTATIONS] = Query("standard", description="key names")):
        return {"notation": notation, "labels": list(KEY_LABELS),
                "names": [format_key(k, notation) for k in KEYS],
                "short": [format_key(k, "tkey" if notation == "standard" else notation) for k in KEYS]}

    @app.get("/v1/example", summary="the bundled example audio (Ode to Joy, D major, 29.6 s)",
             response_class=FileResponse)
    async def example():
        return FileResponse(EXAMPLE, media_type="audio/ogg", filename=EXAMPLE.name)

    @app.post("/v1/key", summary="key of an uploaded audio file", responses=RESPONSES)
    async def key(file: UploadFile = File(..., description="an audio file in any format musicssl reads"),
                  notation: Literal[NOTATIONS] = Query("standard", description="key names"),
                  local: bool = Query(False, description="also keys over time (windows) and segments"),
                  window: float = Query(20.0, gt=0, description="local window length (s)"),
                  hop: float = Query(5.0, gt=0, description="hop between local windows (s)"),
                  transpositions: int | None = Query(None, ge=1, description="transposed crops averaged "
                                                     "(default: the model's, 12)")):
        status, record = await analyzer.run(
            analyzer.key, file.file, upload_name(file.filename), notation=notation, local=local,
            window_s=window, hop_s=hop, transpositions=transpositions)
        return JSONResponse(record, status_code=status)

    @app.post("/v1/beats", summary="beats and tempo of an uploaded audio file", responses=RESPONSES)
    async def beats(file: UploadFile = File(..., description="an audio file in any format musicssl reads"),
                    tracker: Literal[TRACKERS] = Query("dbn", description="beat decoder"),
                    activation: Literal["onset", "zerons"] | None = Query(
                        None, description="beat activation: onset strength (default) or the ZeroNS "
                                          "networks (default when the server has --beats-checkpoint)"),
                    meter: str = Query(str(DEFAULT_METER), pattern=r"^(auto|off|[2-9]|1[0-6])$",
                                       description="beat numbering: beats per bar (2-16), auto (3 or 4) "
                                                   "or off, as `musicssl beats --meter`")):
        status, record = await analyzer.run(analyzer.beats, file.file, upload_name(file.filename),
                                            tracker=tracker, activation=activation, meter=meter)
        return JSONResponse(record, status_code=status)

    return app
