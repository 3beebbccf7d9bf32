"""The panel's "Server…" device: a ``deeporganseg serve`` machine that runs the network.

The URL and the token live in Slicer's application settings (``QSettings``, per user), never
in the scene: a scene file shared with a colleague or saved to PACS carries no secret. A run
on the server is the same engine command as a local run with ``--server URL --token-file
FILE`` (:mod:`DeepOrganSegLib.cli.remote`), so progress, Cancel, exit codes and results are
those of a local run; the token file is written into the job's private temporary folder
(owner-only permissions) and goes with it when the job ends. The server's operator chooses
the model and the device: the panel's model only gives the task and organ lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import InputError

__all__ = ["URL_SETTING", "TOKEN_SETTING", "ServerConnection", "load_server", "save_server"]

#: Where Slicer's settings keep the server's URL and its token.
URL_SETTING = "DeepOrganSeg/ServerURL"
TOKEN_SETTING = "DeepOrganSeg/ServerToken"

#: The token file's name in a job's temporary folder.
TOKEN_FILE = "server-token"


@dataclass(frozen=True)
class ServerConnection:
    """A server's ``url`` (``http(s)://host[:port][/prefix]``) and its bearer ``token`` (empty
    for a server on this machine started without one)."""

    url: str
    token: str = ""

    def check(self) -> None:
        """Raise :class:`InputError` (one line, what to do) unless the URL and token can work."""
        parts = urlsplit(self.url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"the server URL {self.url!r} is not http(s)://host:port; set it "
                             f"under Device: Server…")
        if any(character.isspace() for character in self.token):
            raise InputError("the server token holds a space or a line break; paste the token "
                             "alone under Device: Server…")

    def engine_flags(self, folder: Path) -> list[str]:
        """The engine command's ``--server`` (and ``--token-file``) flags; the token is written
        to ``folder`` (the job's private temporary folder) readable by its owner only."""
        self.check()
        flags = ["--server", self.url.strip()]
        if self.token:
            path = folder / TOKEN_FILE
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(self.token)
            flags += ["--token-file", str(path)]
        return flags


def load_server(settings: Any) -> ServerConnection | None:
    """The server kept in ``settings`` (a ``QSettings``, or anything with ``value(key,
    default)``), or None when no URL is set."""
    url = str(settings.value(URL_SETTING, "") or "").strip()
    if not url:
        return None
    return ServerConnection(url, str(settings.value(TOKEN_SETTING, "") or "").strip())


def save_server(settings: Any, server: ServerConnection) -> None:
    """Keep ``server`` in ``settings`` (checked first: a bad URL is refused, nothing kept)."""
    server.check()
    settings.setValue(URL_SETTING, server.url.strip())
    settings.setValue(TOKEN_SETTING, server.token.strip())
