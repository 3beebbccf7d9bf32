"""The client of ``deeporganseg serve``: :func:`run_remote` runs ``segment`` or ``refine`` on a
server and leaves the same files, progress, messages and errors as the local command would.

It is what ``deeporganseg segment/refine --server URL`` call, and what the Slicer module's Logic
can call in place of starting the engine process: inputs and outputs are local paths, progress
arrives through the engine's ``(stage, fraction, message)`` callback, a :class:`CancelToken`
cancels the job on the server, and every failure is a one-line :class:`DeepOrganSegError`
(:class:`InputError` for what the user can fix, exit code 2; :class:`ServerError` for a server
that went away or broke, exit code 1; :class:`Cancelled`, exit code 3). Outputs appear only
when all of them have arrived, each renamed into place; a failure at any point leaves none.

Standard library only (``http.client``, ``ssl``), torch-free, Python 3.9.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Mapping, Sequence
from urllib.parse import urlencode, urlsplit

from ..errors import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_INTERNAL, Cancelled, DeepOrganSegError, InputError
from ..progress import AutoTaskNote, CancelToken, ProgressFunction, no_progress
from .protocol import (API, FINISHED_STATES, INPUT_ROLES, OUTPUT_ROLES, UPLOAD_SUFFIXES, job_request,
                       suffix_of, unmark_paths)

__all__ = ["Server", "ServerError", "read_token", "run_remote"]

#: Bytes per read and write of an upload or download: each chunk is also a cancel check.
CHUNK_BYTES = 1 << 20
#: How long one status request waits on the server for news. Short, because a cancel is seen
#: between two requests and the command line exits hard one second after Ctrl+C.
POLL_WAIT_S = 0.3


class ServerError(DeepOrganSegError):
    """The server went away, broke or stayed busy: nothing the user's input can fix (exit 1)."""


class _NoAnswer(ServerError):
    """No answer at all (connection refused, reset or silent): ``reason`` says which."""

    def __init__(self, url: str, error: BaseException) -> None:
        self.reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        super().__init__(f"lost the server at {url} ({self.reason}); no output was written")


@dataclass(frozen=True)
class Server:
    """Where the server is and how to reach it. ``url``: ``http(s)://host[:port][/prefix]``
    (a prefix when a reverse proxy serves it under a path); ``token``: the bearer token, or
    None for a server on localhost without one; ``ca_file``: the certificate(s) to trust for an
    https server whose certificate no system authority signed (None: the system's, and
    ``SSL_CERT_FILE``); ``timeout_s``: the longest silence of the server on one request;
    ``busy_wait_s``: how long to keep retrying while the server's queue is full."""

    url: str
    token: str | None = None
    ca_file: str | None = None
    timeout_s: float = 60.0
    busy_wait_s: float = 600.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"--server {self.url}: give the server as http(s)://HOST[:PORT]")
        if parts.query or parts.fragment:
            raise InputError(f"--server {self.url}: the URL takes no query or fragment")


def read_token(path: str | os.PathLike) -> str:
    """The token in the file ``path`` (surrounding whitespace removed); an :class:`InputError`
    for a missing, unreadable or empty file. A file, not an argument: a command line is visible
    to every user of the machine."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise InputError(f"{path}: cannot read the token ({reason})") from None
    if not token or any(character.isspace() for character in token):
        raise InputError(f"{path}: the token file must hold the token alone, on one line")
    return token


def run_remote(server: Server, command: str, inputs: Mapping[str, str | os.PathLike],
               outputs: Mapping[str, str | os.PathLike], options: Sequence[str] = (),
               progress: ProgressFunction = no_progress, cancel: CancelToken | None = None,
               names: Mapping[str, str] | None = None) -> str:
    """Run ``command`` (``segment`` or ``refine``) on ``server`` and write its ``outputs``.

    ``inputs`` and ``outputs`` map roles (:data:`.protocol.INPUT_ROLES`,
    :data:`.protocol.OUTPUT_ROLES`: the names of the local command's arguments, ``output`` the
    labelmap) to local files; ``options`` are the command's option flags as its command line
    gives them (``SegmentationOptions.to_argv()`` for segment, minus ``--device``: the server
    chooses its device and its model). Checks every file name first, uploads, relays the job's
    progress (paths in messages are the caller's), downloads, and removes the job from the
    server whatever happens. Returns what the local command prints on success (segment: the
    organ table). Raises the local command's one-line errors (see the module). ``names``: how
    messages name a role's file where that is not the path given (a converted copy's original)."""
    cancel = cancel or CancelToken()
    names = {**{role: str(path) for role, path in {**inputs, **outputs}.items()}, **(names or {})}
    request = job_request(command, options, _checked_inputs(command, inputs),
                          _checked_outputs(command, outputs))
    session = _Session(server, names)
    job = session.submit(request, progress, cancel)
    try:
        for role in INPUT_ROLES[command]:
            session.upload(job, role, Path(inputs[role]), progress, cancel)
        status = session.follow(job, progress, cancel)
        session.download(job, {role: Path(path) for role, path in outputs.items()}, cancel)
        return str(status.get("report", ""))
    finally:
        session.forget(job)


def _checked_inputs(command: str, inputs: Mapping[str, str | os.PathLike]
                    ) -> dict[str, tuple[str, int]]:
    """Each input's (suffix, size), or an :class:`InputError` naming what the server cannot
    take (a missing file, a folder, a format whose data lives in a second file)."""
    if command not in INPUT_ROLES:
        raise InputError(f"the server runs {' and '.join(INPUT_ROLES)}, not {command}")
    checked = {}
    for role in INPUT_ROLES[command]:
        path = Path(inputs[role])
        if not path.is_file():
            raise InputError(f"{path}: no such file" if not path.exists() else
                             f"{path}: a server takes a volume file; give one")
        suffix = suffix_of(path.name, UPLOAD_SUFFIXES)
        if suffix is None:
            raise InputError(f"{path}: a server takes {', '.join(UPLOAD_SUFFIXES)} files; convert "
                             f"it to one of them")
        checked[role] = (suffix, path.stat().st_size)
    return checked


def _checked_outputs(command: str, outputs: Mapping[str, str | os.PathLike]) -> dict[str, str]:
    """Each output's suffix, or an :class:`InputError` for one the server cannot write."""
    allowed = OUTPUT_ROLES[command]
    if "output" not in outputs:
        raise InputError(f"{command} needs an output labelmap")
    checked = {}
    for role, path in outputs.items():
        if role not in allowed:
            raise InputError(f"{command} has no output {role!r}")
        suffix = suffix_of(Path(path).name, allowed[role])
        if suffix is None:
            raise InputError(f"{path}: with --server use one of {', '.join(allowed[role])}")
        checked[role] = suffix
    return checked


class _Session:
    """The requests of one remote run: one connection each, errors turned into the module's
    one-line exceptions, the caller's paths put back into the server's messages."""

    def __init__(self, server: Server, names: Mapping[str, str]) -> None:
        self.server, self.names = server, dict(names)
        parts = urlsplit(server.url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname or "", parts.port
        self.prefix = parts.path.rstrip("/") + API
        self.context = ssl.create_default_context(cafile=server.ca_file) if self.https else None

    def submit(self, request: dict, progress: ProgressFunction, cancel: CancelToken) -> str:
        """Create the job; while the server's queue is full, wait as its ``Retry-After`` says,
        for up to ``busy_wait_s``. A server that cannot be reached is an :class:`InputError`:
        the URL (or the server) is what to fix."""
        body = json.dumps(request).encode()
        deadline = time.monotonic() + self.server.busy_wait_s
        while True:
            cancel.raise_if_cancelled()
            try:
                status, headers, data = self._request("POST", "/jobs", body,
                                                      {"Content-Type": "application/json"})
            except _NoAnswer as error:
                raise InputError(f"cannot reach the server at {self.server.url} ({error.reason}); "
                                 f"check --server and that `deeporganseg serve` runs there") from None
            if status != 503 or time.monotonic() >= deadline:
                return str(self._checked(status, data)["job"])
            wait_s = _retry_after(headers)
            progress("queue", 0.0, f"the server is busy; trying again in {wait_s:.0f} s")
            _sleep(min(wait_s, max(deadline - time.monotonic(), 0.0)), cancel)

    def upload(self, job: str, role: str, path: Path, progress: ProgressFunction,
               cancel: CancelToken) -> None:
        """Send ``path``'s bytes as the job's input ``role``, checking ``cancel`` per chunk."""
        size = path.stat().st_size
        progress("upload", 0.0, f"sending {self.names.get(role, path)} ({size / 1e6:.1f} MB)")
        with path.open("rb") as file:
            status, _, data = self._request("PUT", f"/jobs/{job}/inputs/{role}",
                                            _CancelledReader(file, cancel),
                                            {"Content-Type": "application/octet-stream",
                                             "Content-Length": str(size)})
        self._checked(status, data)

    def follow(self, job: str, progress: ProgressFunction, cancel: CancelToken) -> dict:
        """Relay the job's progress events until it ends; its final status if done, else the
        local run's error (its message, its exit code)."""
        since = 0
        while True:
            cancel.raise_if_cancelled()
            query = urlencode({"since": since, "wait_s": POLL_WAIT_S})
            code, _, data = self._request("GET", f"/jobs/{job}?{query}")
            status = self._checked(code, data)
            for event in status.get("events", []):
                stage, fraction, message = event["stage"], event["fraction"], self._local(event["message"])
                progress(stage, fraction, AutoTaskNote(message, event["auto_task"])
                         if event.get("auto_task") else message)
            since = int(status.get("next", since))
            if status.get("state") in FINISHED_STATES:
                error = status.get("error")
                if error:
                    raise _local_error(self._local(error["error"]), error["exit_code"])
                return status

    def download(self, job: str, outputs: Mapping[str, Path], cancel: CancelToken) -> None:
        """Fetch every output into place, all or nothing: each is written beside its
        destination and renamed when complete; a failure removes those already in place."""
        from ..volume_io import write_atomically  # SimpleITK: loaded only when a job is done

        placed: list[Path] = []
        try:
            for role, destination in outputs.items():
                def fetch(temporary: Path, role: str = role) -> None:
                    self._fetch(f"/jobs/{job}/outputs/{role}", temporary, cancel)
                placed.append(write_atomically(destination, fetch))
        except BaseException:
            for path in placed:
                path.unlink(missing_ok=True)
            raise

    def forget(self, job: str) -> None:
        """Remove the job from the server (cancelling it if it still runs); a server that has
        gone away already forgot it."""
        try:
            self._request("DELETE", f"/jobs/{job}")
        except _NoAnswer:
            pass

    def _local(self, message: str) -> str:
        return unmark_paths(message, self.names)

    def _checked(self, status: int, data: bytes) -> dict:
        """The JSON document of a 2xx answer; for any other, the error it carries."""
        try:
            document = json.loads(data) if data else {}
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise ServerError(f"the server at {self.server.url} answered {status} with something "
                              f"that is not DeepOrganSeg's (a proxy in the way?)")
        if 200 <= status < 300:
            return document
        message = str(document.get("error") or f"the server answered {status}")
        code = document.get("exit_code")
        raise _local_error(self._local(message), code if isinstance(code, int) else EXIT_INTERNAL)

    def _connection(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.server.timeout_s,
                                               context=self.context, blocksize=CHUNK_BYTES)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.server.timeout_s,
                                          blocksize=CHUNK_BYTES)

    def _headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {"Accept": "application/json", **extra}
        if self.server.token:
            headers["Authorization"] = f"Bearer {self.server.token}"
        return headers

    def _request(self, method: str, path: str, body: Any = None,
                 headers: Mapping[str, str] | None = None) -> tuple[int, Mapping[str, str], bytes]:
        """One request on a fresh connection: (status, headers, body). A network failure is a
        :class:`_NoAnswer`; a :class:`Cancelled` raised while the body is sent passes."""
        connection = self._connection()
        try:
            connection.request(method, self.prefix + path, body=body,
                               headers=self._headers(headers or {}))
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        except (OSError, http.client.HTTPException) as error:
            raise _NoAnswer(self.server.url, error) from None
        finally:
            connection.close()

    def _fetch(self, path: str, destination: Path, cancel: CancelToken) -> None:
        """Stream one output into ``destination``, checking ``cancel`` per chunk."""
        connection = self._connection()
        try:
            connection.request("GET", self.prefix + path, headers=self._headers({}))
            response = connection.getresponse()
            if response.status != 200:
                self._checked(response.status, response.read())
            expected = int(response.getheader("Content-Length", "-1"))
            received = 0
            with destination.open("wb") as file:
                while chunk := response.read(CHUNK_BYTES):
                    cancel.raise_if_cancelled()
                    file.write(chunk)
                    received += len(chunk)
            if expected >= 0 and received != expected:
                raise ServerError(f"lost the server at {self.server.url} while receiving a "
                                  f"result ({received} of {expected} bytes); no output was written")
        except (http.client.HTTPException, ConnectionError, socket.timeout) as error:
            raise _NoAnswer(self.server.url, error) from None
        finally:
            connection.close()


class _CancelledReader:
    """A file for ``http.client`` to send from, in :data:`CHUNK_BYTES` reads, each of which
    first checks the cancel token: a cancelled upload stops at once and the server, seeing the
    connection close, drops the job."""

    def __init__(self, file: IO[bytes], cancel: CancelToken) -> None:
        self.file, self.cancel = file, cancel

    def read(self, size: int = -1) -> bytes:
        self.cancel.raise_if_cancelled()
        return self.file.read(CHUNK_BYTES if size < 0 else min(size, CHUNK_BYTES))


def _local_error(message: str, exit_code: int) -> DeepOrganSegError:
    """The exception a local run raises for a failure with this message and exit code."""
    if exit_code == EXIT_BAD_INPUT:
        return InputError(message)
    if exit_code == EXIT_CANCELLED:
        return Cancelled(message)
    return ServerError(message)


def _retry_after(headers: Mapping[str, str]) -> float:
    """Seconds the server's ``Retry-After`` asks for (1 to 60; 5 when it says nothing usable)."""
    value = {key.lower(): item for key, item in headers.items()}.get("retry-after", "")
    try:
        return min(max(float(value), 1.0), 60.0)
    except ValueError:
        return 5.0


def _sleep(seconds: float, cancel: CancelToken) -> None:
    """Sleep, waking every tenth of a second to honour a cancel."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cancel.raise_if_cancelled()
        time.sleep(min(0.1, max(end - time.monotonic(), 0.0)))
