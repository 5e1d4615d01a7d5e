"""The ``sparseir serve`` subcommand (imports FastAPI, uvicorn and torch only when it runs)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ..distributed.api import add_arguments as add_ray_arguments
from .config import API_KEY_ENV, CONFIG_ENV, ServeConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``sparseir`` command line."""
    d = ServeConfig(index="")
    p = subparsers.add_parser(
        "serve", help="serve an index over HTTP, with a search page",
        description="Serve an index over HTTP (FastAPI on uvicorn): POST /search, /encode, /explain, "
                    "GET/POST/DELETE /documents, POST /commit, GET /health, /stats; OpenAPI docs at /docs; "
                    "the search page at /. SIGTERM or Ctrl-C stops it gracefully (pending writes committed).")
    p.add_argument("index", help="index directory")
    p.add_argument("--host", default=d.host, help=f"address to bind (default {d.host}: this machine only)")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port}; 0: any free port)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="worker processes (default 1); more than one needs --read-only")
    p.add_argument("--read-only", action="store_true", help="refuse writes; still follows new commits")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help=f"key that writes must send in the X-API-Key header (default: ${API_KEY_ENV})")
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms,
                   help=f"longest wait to gather concurrent query encodings (default {d.batch_wait_ms}; 0: none)")
    p.add_argument("--max-encode-batch", type=int, default=d.max_encode_batch,
                   help=f"most query texts per encoder call (default {d.max_encode_batch}; 1: no micro-batching)")
    p.add_argument("--search-threads", type=int, default=d.search_threads,
                   help=f"threads running searches (default {d.search_threads})")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 2**20,
                   help=f"largest request body in MiB (default {d.max_body_bytes / 2**20:g})")
    p.add_argument("--refresh-seconds", type=float, default=d.refresh_seconds,
                   help=f"how often to look for a newer commit (default {d.refresh_seconds}; 0: never)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn log level (default info)")
    add_ray_arguments(p)
    p.set_defaults(func=cmd_serve)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(index=args.index, host=args.host, port=args.port, workers=args.workers,
                       read_only=args.read_only, api_key=args.api_key, batch_wait_ms=args.batch_wait_ms,
                       max_encode_batch=args.max_encode_batch, search_threads=args.search_threads,
                       max_body_bytes=int(args.max_body_mb * 2**20), refresh_seconds=args.refresh_seconds,
                       ray=args.ray, ray_address=args.ray_address)


def cmd_serve(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    from ..distributed import open_searcher

    open_searcher(config.index)  # a bad index fails here, with exit 2, not in a worker
    if config.ray or config.ray_address:
        from ..distributed.api import require_sharded
        from ..distributed.cluster import connect

        require_sharded(config.index)
        connect(config.ray_address)  # in the main thread; the app (one worker, this process) joins it
    import uvicorn

    os.environ[CONFIG_ENV] = config.to_env()
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the handler
    # in place before it: exit 0 quietly then (no KeyboardInterrupt traceback, no "killed by signal").
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_quietly)
    uvicorn.run("sparseir.serve.app:app_from_env", factory=True, host=config.host, port=config.port,
                workers=config.workers, log_level=args.log_level, timeout_graceful_shutdown=10)


def _exit_quietly(signum: int, frame: object) -> None:
    sys.exit(0)
