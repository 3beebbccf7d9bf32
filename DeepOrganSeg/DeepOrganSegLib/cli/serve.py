"""``deeporganseg serve``: keep the model warm on this machine and run ``segment`` and
``refine`` for clients over HTTP(S) (:mod:`DeepOrganSegLib.server`; ``docs/server.md``)."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from ..errors import EXIT_OK
from ..options import BYTES_PER_GB
from ..progress import CancelToken, ProgressFunction
from ..remote.protocol import DEFAULT_PORT
from ..resources import default_model_path
from .signals import SignalCancellation

__all__ = ["add_parser", "run"]

#: Bytes per MB of ``--max-upload-mb``.
BYTES_PER_MB = BYTES_PER_GB / 1000


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``deeporganseg serve``."""
    parser = subparsers.add_parser(
        "serve", help="serve segment and refine to other machines (the model kept warm)",
        description="Load the model once and run `deeporganseg segment/refine --server URL` "
                    "jobs for clients, at most --workers at a time, with progress and cancel.",
        epilog="Anything but a loopback --host needs --token-file; the model and the device are "
               "the operator's, never a client's. SIGINT/SIGTERM stop the server, cancelling "
               "running jobs and removing every job's files. See docs/server.md.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: a free one)")
    parser.add_argument("--token-file", type=Path, metavar="FILE",
                        help="file holding the token clients must give")
    parser.add_argument("--model", type=Path, help="model file; default: the bundled model")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--workers", type=int, metavar="N",
                        help="jobs run at once (default: one per GPU, else 1)")
    parser.add_argument("--max-jobs", type=int, default=32, metavar="Q",
                        help="jobs held at once, running, queued or uploading; beyond, clients "
                             "are told to retry (503) (default 32)")
    parser.add_argument("--max-upload-mb", type=float, default=2000, metavar="M",
                        help="largest upload of one job, all its inputs together (default 2000)")
    parser.add_argument("--certfile", type=Path, metavar="F", help="TLS certificate (PEM)")
    parser.add_argument("--keyfile", type=Path, metavar="F", help="TLS private key (PEM)")
    parser.set_defaults(handler=run, progress="none")


def run(args: argparse.Namespace, progress: ProgressFunction, cancel: CancelToken) -> int:
    """Serve until SIGINT/SIGTERM. uvicorn takes those signals itself for a graceful stop, so
    the command's own signal cancellation (which blocks them for its watcher thread) stands
    aside while it serves."""
    from ..server.serve import ServeSettings, serve

    settings = ServeSettings(
        model=args.model or default_model_path(), host=args.host, port=args.port,
        token_file=args.token_file, device=args.device, workers=args.workers,
        max_jobs=args.max_jobs, max_upload_bytes=round(args.max_upload_mb * BYTES_PER_MB),
        certfile=args.certfile, keyfile=args.keyfile)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SignalCancellation.SIGNALS)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    serve(settings, progress, lambda line: print(line, flush=True))
    return EXIT_OK
