"""The HTTP API and the web page of ``ncf serve``: FastAPI over a :class:`Service`.

Endpoints (JSON; the OpenAPI page is ``/docs``, the schema ``/openapi.json``):

- ``GET /api/health``, ``GET /api/info``
- ``GET /api/users/{user}/recommendations?k=&model=``, ``GET /api/users/{user}/history``
- ``POST /api/recommendations`` ``{"items": [...], "ratings": [...], "k": 10, "model": ...}``
  (a new user, folded in)
- ``GET /api/items/{item}``, ``GET /api/items/{item}/similar?k=&model=``
- ``GET /api/search?q=&limit=``
- ``GET /`` the page, ``/static/...`` its files (shipped inside the package).

Quick answers (a known user's top-K, one pass of the model over the items, a few ms; similar
items, search, lookups) are computed on the event loop of the server process, one after
another: a thread computing beside a busy event loop waits for the interpreter lock at every
torch call, which cost NeuMF a third of its throughput. A fold-in (tens of ms) is a plain
``def``, run in the thread pool and bounded by the compute slots (torch releases the lock
while it computes), so a slow fold-in never holds up other requests. The answers are plain
JSON-ready dictionaries of finite numbers, sent as they are (no second validation pass).
Unknown ids are 404 and malformed requests 422, both ``{"error": ...}``; bodies larger than
:data:`MAX_BODY` bytes are refused with 413 before they are read whole. No endpoint takes a
path from a request.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ncf.serve.service import MAX_GIVEN, MAX_K, BadInput, NotFound, Service

#: Largest request body accepted, in bytes (a new user's 500 items fit many times over).
MAX_BODY = 64 * 1024
STATIC = Path(__file__).parent / "static"

RawId = StrictInt | Annotated[StrictStr, Field(min_length=1, max_length=64)]
RawPath = Annotated[str, PathParam(max_length=64, description="a raw id, as in the data")]
K = Annotated[int, Query(ge=1, le=MAX_K, description=f"how many items (1..{MAX_K})")]
ModelName = Annotated[str | None, Query(max_length=32, description="a model of the run "
                                        "(gmf, mlp, neumf, a saved baseline); default: the "
                                        "server's")]


class NewUser(BaseModel):
    """A new user: the items they liked (raw ids), optionally their ratings."""

    model_config = ConfigDict(extra="forbid")

    items: Annotated[list[RawId], Field(min_length=1, max_length=MAX_GIVEN)]
    ratings: Annotated[list[float], Field(max_length=MAX_GIVEN)] | None = Field(
        default=None, description="one rating per item (each weighs its item; every given "
        "item counts as liked, as in training)")
    k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
    model: Annotated[str, Field(max_length=32)] | None = None


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413.

    A declared ``Content-Length`` over the limit is refused before anything is read; a body
    without one (chunked) is read up to the limit and refused as soon as it passes it.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(scope, send)
                return
        chunks: list[bytes] = []
        size, more = 0, scope["method"] in ("POST", "PUT", "PATCH")
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        response = JSONResponse({"error": f"request body over {self.limit} bytes"}, 413,
                                headers={"Connection": "close"})
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a refused request is not read
    return {"type": "http.disconnect"}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(service: Service) -> FastAPI:
    """The FastAPI application serving ``service``: the API, the page and its files."""
    app = FastAPI(
        title="ncf", version="1",
        description="Recommendations from a trained ncf run: known users, new users folded "
        "in from the items they give, similar items, title search.",
    )

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc), id=exc.value if isinstance(exc.value, int | str) else None)

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{k: e.get(k) for k in ("loc", "msg", "type")} for e in exc.errors()]
        first = detail[0] if detail else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"] if x != "body") or "request"
        return _error(422, f"{where}: {first['msg']}", detail=jsonable_encoder(detail))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path[:200]}"
        return _error(exc.status_code, message)

    @app.get("/api/health", summary="the service answers")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(service.models)}

    @app.get("/api/info", summary="the run: data set, counts, models, test metrics")
    async def info() -> dict[str, Any]:
        return service.info()

    @app.get("/api/users/{user}/recommendations", summary="top-K for a known user",
             responses={404: {"description": "unknown user"}})
    async def user_recommendations(user: RawPath, k: K = 10,
                                   model: ModelName = None) -> JSONResponse:
        return JSONResponse(service.recommend_user(user, k, model))

    @app.get("/api/users/{user}/history", summary="the items a known user has seen")
    async def user_history(user: RawPath,
                           limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> JSONResponse:
        return JSONResponse(service.history(user, limit))

    @app.post("/api/recommendations", summary="top-K for a new user, folded in from the "
              "items they give", responses={404: {"description": "unknown item"}})
    def new_user_recommendations(body: NewUser) -> JSONResponse:
        return JSONResponse(service.recommend_new(body.items, body.k, body.model, body.ratings))

    @app.get("/api/items/{item}", summary="one item: id, title, year")
    async def item(item: RawPath) -> dict[str, Any]:
        return service.item_row(service.item_index(item))

    @app.get("/api/items/{item}/similar", summary="items similar to an item (cosine over "
             "item embeddings; the answer says which model's)")
    async def similar(item: RawPath, k: K = 10,
                      model: ModelName = None) -> JSONResponse:
        return JSONResponse(service.similar(item, k, model))

    @app.get("/api/search", summary="titles containing the query (case and accents ignored)")
    async def search(q: Annotated[str, Query(min_length=1, max_length=100)],
                     limit: Annotated[int, Query(ge=1, le=100)] = 20) -> JSONResponse:
        return JSONResponse(service.search(q, limit))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    return app



def bound_allocator_caches() -> None:
    """Let every thread share glibc's two allocator arenas (elsewhere nothing changes).

    Scoring every item makes temporaries of a few MB; with an arena per thread, glibc keeps
    such blocks cached in each of up to 8 arenas per core, and a server's memory creeps up
    with the number of threads that ever computed. Two arenas keep it flat; returning the
    blocks to the system instead (a fixed mmap threshold) doubled the cost of a NeuMF top-10
    through page faults."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def from_environment() -> FastAPI:
    """The app of one worker process of ``ncf serve --workers N``: the run, the default model,
    the torch threads and the compute slots come from ``NCF_SERVE_RUN``, ``NCF_SERVE_MODEL``,
    ``NCF_SERVE_THREADS`` and ``NCF_SERVE_SLOTS``."""
    import torch

    bound_allocator_caches()
    torch.set_num_threads(int(os.environ.get("NCF_SERVE_THREADS", "1")))
    return create_app(Service(os.environ["NCF_SERVE_RUN"],
                              default_model=os.environ.get("NCF_SERVE_MODEL") or None,
                              compute_slots=int(os.environ.get("NCF_SERVE_SLOTS", "2"))))
