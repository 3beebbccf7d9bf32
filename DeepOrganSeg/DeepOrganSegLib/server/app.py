"""The HTTP face of ``deeporganseg serve``: a Starlette application over a :class:`JobBoard`.

Every request is authenticated first, when the server has a token (a SHA-256 digest of the
``Authorization`` header compared with the expected one in constant time); every size is
checked from the headers before a body is read, and a body is read in chunks straight into the
job's folder; every refusal is a status with a one-line JSON reason
(:func:`.remote.protocol.error_body`), never a traceback. The routes are those of
:mod:`.remote.protocol`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_INTERNAL, InputError
from ..remote.protocol import API, FINISHED_STATES, error_body
from .jobs import Job, JobBoard
from .request import MAX_REQUEST_BYTES, TooLarge, parse_job_request
from .work import Engine

__all__ = ["Limits", "create_app", "UPLOAD_IDLE_S"]

#: Seconds an upload may stay silent before the server drops it and its job (a client that
#: vanished without closing its connection, or one that trickles bytes to hold a slot).
UPLOAD_IDLE_S = 30.0
#: The longest a status request waits for news.
MAX_WAIT_S = 5.0

log = logging.getLogger("deeporganseg.serve")


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the server: its token (None: no token, localhost only), the
    bytes of one job's inputs together, and how long an upload may stay silent."""

    token: str | None
    max_upload_bytes: int
    upload_idle_s: float = UPLOAD_IDLE_S


class _Refused(Exception):
    """A request refused with ``status`` and a one-line ``message``; ``exit_code`` is what the
    client's command exits with."""

    def __init__(self, status: int, message: str, exit_code: int = EXIT_BAD_INPUT,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.exit_code, self.headers = status, exit_code, headers


def _refusal(status: int, message: str, exit_code: int,
             headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message, exit_code), status, headers,
                    media_type="application/json")


class _TokenGate:
    """ASGI middleware: with a token, a request without ``Authorization: Bearer TOKEN`` is
    answered 401 before anything else looks at it. Both sides are hashed before the constant-
    time comparison, so that not even the token's length leaks."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.expected = hashlib.sha256(f"Bearer {token}".encode()).digest() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.expected is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(hashlib.sha256(given).digest(), self.expected):
                response = _refusal(401, "missing or wrong token; give the server's token "
                                         "(--token-file)", EXIT_BAD_INPUT,
                                    {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(engine: Engine, board: JobBoard, limits: Limits) -> ASGIApp:
    """The server's ASGI application over ``engine``'s model and ``board``'s jobs; its
    shutdown closes ``board``."""

    def job_of(request: Request) -> Job:
        job = board.get(request.path_params["job"])
        if job is None:
            raise _Refused(404, "the server has no such job (it was removed, abandoned or the "
                                "server restarted)", EXIT_INTERNAL)
        return job

    async def info(request: Request) -> Response:
        return JSONResponse({"version": __version__, "model": engine.model.path.name,
                             "tasks": [task.name for task in engine.metadata.tasks],
                             "device": str(engine.resolved), "max_upload_bytes":
                             limits.max_upload_bytes, "jobs": board.counts()})

    async def create_job(request: Request) -> Response:
        if _content_length(request) > MAX_REQUEST_BYTES:
            raise _Refused(413, "the job request is too large")
        try:
            spec = parse_job_request(await request.body(), engine.metadata, engine.device,
                                     limits.max_upload_bytes)
        except TooLarge as error:
            raise _Refused(413, str(error)) from None
        except InputError as error:
            raise _Refused(400, str(error)) from None
        job = board.create(spec)
        if job is None:
            raise _Refused(503, "the server is busy; try again later", EXIT_INTERNAL,
                           {"Retry-After": str(board.retry_after_s())})
        return JSONResponse({"job": job.id, "inputs": list(spec.inputs)}, 201)

    async def put_input(request: Request) -> Response:
        job, role = job_of(request), request.path_params["role"]
        if role not in job.spec.inputs:
            raise _Refused(404, f"the job has no input {role!r}")
        if job.state != "uploading" or role in job.claimed:
            raise _Refused(409, f"input {role} was already sent")
        declared = job.spec.inputs[role][1]
        length = _content_length(request)
        if length > declared:
            raise _Refused(413, f"input {role} is larger ({length} bytes) than the job said "
                                f"({declared})")
        if length != declared:
            raise _Refused(400, f"input {role} is {length} bytes; the job said {declared}")
        job.claimed.add(role)
        try:
            await _receive(request, job, job.paths[role], limits.upload_idle_s)
        except (ClientDisconnect, asyncio.TimeoutError, OSError) as error:
            board.forget(job.id)
            log.info("job %s: upload of %s stopped (%s); job removed", job.id, role,
                     type(error).__name__)
            raise _Refused(400, f"the upload of {role} stopped before its end") from None
        board.arrived(job, role)
        return JSONResponse({"job": job.id, "state": job.state})

    async def status(request: Request) -> Response:
        job = job_of(request)
        since = _number(request, "since", int, 0, 1 << 31)
        wait_s = _number(request, "wait_s", float, 0.0, MAX_WAIT_S)
        deadline = asyncio.get_running_loop().time() + wait_s
        while (len(job.events) <= since and job.state not in FINISHED_STATES
               and not job.forgotten and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.02)
        return JSONResponse(job.status(min(since, len(job.events))))

    async def output(request: Request) -> Response:
        job, role = job_of(request), request.path_params["role"]
        if job.state != "done":
            raise _Refused(409, f"the job is {job.state}, not done")
        if role not in job.spec.outputs:
            raise _Refused(404, f"the job has no output {role!r}")
        return FileResponse(job.paths[role], media_type="application/octet-stream")

    async def delete(request: Request) -> Response:
        if not board.forget(request.path_params["job"]):
            raise _Refused(404, "the server has no such job", EXIT_INTERNAL)
        return JSONResponse({"state": "removed"})

    async def refused(request: Request, error: Exception) -> Response:
        assert isinstance(error, _Refused)
        return _refusal(error.status, str(error), error.exit_code, error.headers)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)  # unknown route, method not allowed
        return _refusal(error.status_code, f"{request.method} {request.url.path}: "
                                           f"{error.detail}", EXIT_BAD_INPUT)

    async def bug(request: Request, error: Exception) -> Response:
        # Starlette raises the error on after this answer: uvicorn logs its traceback
        return _refusal(500, "internal error on the server; its log has the details",
                        EXIT_INTERNAL)

    job = API + "/jobs/{job}"
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # uvicorn's graceful stop: the jobs are cancelled and their files removed before the
        # process goes on to exit
        await asyncio.to_thread(board.close)

    app = Starlette(routes=[
        Route(API + "/info", info, methods=["GET"]),
        Route(API + "/jobs", create_job, methods=["POST"]),
        Route(job, status, methods=["GET"]),
        Route(job, delete, methods=["DELETE"]),
        Route(job + "/inputs/{role}", put_input, methods=["PUT"]),
        Route(job + "/outputs/{role}", output, methods=["GET"]),
    ], exception_handlers={_Refused: refused, HTTPException: http_error, Exception: bug},
        lifespan=lifespan)
    return _TokenGate(app, limits.token)


def _content_length(request: Request) -> int:
    """The request's declared body size; 411 without one (chunked uploads are refused: their
    size cannot be checked before they are read)."""
    value = request.headers.get("content-length")
    if value is None or not value.isdigit():
        raise _Refused(411, "give the body's Content-Length")
    return int(value)


def _number(request: Request, name: str, kind: type, low: Any, high: Any) -> Any:
    """Query parameter ``name`` as ``kind``, clamped to [low, high]; ``low`` if absent."""
    try:
        return min(max(kind(request.query_params.get(name, low)), low), high)
    except ValueError:
        raise _Refused(400, f"{name} must be a number") from None


async def _receive(request: Request, job: Job, path: str, idle_s: float) -> None:
    """Stream the request's body into ``path``, each chunk within ``idle_s`` of the last."""
    chunks = request.stream().__aiter__()
    with open(path, "wb") as file:
        while True:
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), idle_s)
            except StopAsyncIteration:
                return
            file.write(chunk)
            job.touch()
