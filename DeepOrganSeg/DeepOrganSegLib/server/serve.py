"""Starting a server: the operator's settings checked, the model loaded, the socket bound, and
uvicorn serving the application on it (with TLS when given a certificate) until SIGINT/SIGTERM.

Why Starlette + uvicorn: the server needs the request body as a stream (sizes checked before
anything is read, chunks written straight into a job's folder) and full control over every
error's shape; Starlette is the small, typed ASGI toolkit that FastAPI itself is built on,
with two dependencies (anyio, typing-extensions), and uvicorn (with h11, pure Python) is the
reference ASGI server, with TLS, graceful shutdown and header-size limits built in. FastAPI's
additions (pydantic models, OpenAPI pages, form parsing) would be unused weight here.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..progress import ProgressFunction
from ..remote.client import read_token
from ..remote.protocol import DEFAULT_PORT

__all__ = ["ServeSettings", "serve", "is_loopback"]

log = logging.getLogger("deeporganseg.serve")


@dataclass(frozen=True)
class ServeSettings:
    """What the operator chose: where to listen, the token file, the model and device, the
    workers (None: one per GPU), how many jobs may exist at once, the largest upload, and
    the TLS certificate and key."""

    model: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token_file: Path | None = None
    device: str = "auto"
    workers: int | None = None
    max_jobs: int = 32
    max_upload_bytes: int = 2_000_000_000
    certfile: Path | None = None
    keyfile: Path | None = None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checked_token(settings: ServeSettings, progress: ProgressFunction) -> str | None:
    """The token, or None where the server may run without one (loopback only); warnings for
    a token file others can read and a token that would cross a network in clear."""
    if settings.token_file is None:
        if not is_loopback(settings.host):
            raise InputError(f"--host {settings.host}: a server reachable from other machines "
                             f"needs --token-file (e.g. `openssl rand -hex 32 > token`)")
        return None
    token = read_token(settings.token_file)
    if settings.token_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        progress("warning", 0.0, f"{settings.token_file}: other users can read the token; "
                                 f"chmod 600 it")
    if settings.certfile is None and not is_loopback(settings.host):
        progress("warning", 0.0, "the token and the volumes cross the network unencrypted; "
                                 "give --certfile/--keyfile or put a TLS reverse proxy in front")
    return token


def _checked_tls(settings: ServeSettings) -> None:
    """The certificate and key given together, and loadable as a pair (before the model is
    read, so that a typo costs a second, not a failed start later)."""
    if (settings.certfile is None) != (settings.keyfile is None):
        raise InputError("give --certfile and --keyfile together")
    if settings.certfile is None or settings.keyfile is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.certfile,
                                                                            settings.keyfile)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(f"--certfile {settings.certfile} --keyfile {settings.keyfile}: cannot "
                         f"load them as a certificate and its key ({reason})") from None


def _bound_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), or an :class:`InputError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    sock.listen(128)
    return sock


def serve(settings: ServeSettings, progress: ProgressFunction,
          announce: Callable[[str], None]) -> None:
    """Check ``settings``, load the model, bind, say ``announce(line)`` once ready (the URL to
    give clients, which the tests read), and serve until SIGINT/SIGTERM; every job's files are
    removed on the way out."""
    import uvicorn

    from .app import Limits, create_app
    from .jobs import JobBoard
    from .work import Engine

    _checked_tls(settings)
    token = _checked_token(settings, progress)
    if settings.max_jobs < 1 or (settings.workers is not None and settings.workers < 1):
        raise InputError("--workers and --max-jobs must be at least 1")
    engine = Engine(settings.model, settings.device, settings.workers)
    sock = _bound_socket(settings.host, settings.port)
    board = JobBoard(engine.run_job, engine.workers, max(settings.max_jobs, engine.workers))
    app = create_app(engine, board, Limits(token, settings.max_upload_bytes))
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"  # stdout: the ready line only
    config = uvicorn.Config(
        app, ssl_certfile=settings.certfile and str(settings.certfile),
        ssl_keyfile=settings.keyfile and str(settings.keyfile), server_header=False,
        log_config=log_config, log_level="info", timeout_graceful_shutdown=10,
        limit_concurrency=1000)
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    scheme = "https" if settings.certfile else "http"
    announce(f"serving {engine.model.path.name} on {engine.resolved} with {engine.workers} "
             f"worker{'s' if engine.workers > 1 else ''} at {scheme}://{host}:{port}")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        board.close()  # done at uvicorn's shutdown; here too when it failed to start
        sock.close()
