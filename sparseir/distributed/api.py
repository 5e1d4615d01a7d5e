"""What the CLI calls: open any index for search, and the ``--ray``/``--shards`` options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from .shardmap import is_sharded

if TYPE_CHECKING:
    from ..search import ApproxParams


def open_searcher(path: str | Path, *, ray: bool = False, ray_address: str | None = None, encoder=None,
                  params: ApproxParams | None = None):
    """A searcher for ``path``: a plain (approximate) searcher for one index, a sharded one for a sharded index.

    With ``ray`` (or a ``ray_address``), a sharded index is searched by one Ray actor per shard.
    """
    if not is_sharded(path):
        from ..search import ApproxSearcher, Searcher

        return ApproxSearcher(path, encoder, params) if params else Searcher(path, encoder)
    if ray or ray_address:
        from .actors import RaySearcher

        return RaySearcher(path, encoder, params, address=ray_address)
    from .searcher import ShardedSearcher

    return ShardedSearcher(path, encoder, params)


def add_arguments(parser: argparse.ArgumentParser, *, build: bool = False) -> None:
    """``--ray`` and ``--ray-address`` (and with ``build``, ``--shards`` and ``--workers``)."""
    g = parser.add_argument_group("scale-out (pip install sparseir[ray])")
    g.add_argument("--ray", action="store_true",
                   help="use Ray: encode on an actor pool / search with one actor per shard")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="connect to this Ray cluster ('auto', 'ray://host:10001'); default: start Ray locally")
    if build:
        g.add_argument("--shards", type=int, metavar="N",
                       help="split the index into N shards by a stable hash of the document id")
        g.add_argument("--workers", type=int, metavar="N",
                       help="encoding actors with --ray (default: one per GPU, else one per CPU)")


def check_arguments(args: argparse.Namespace) -> None:
    """Validate the options added by :func:`add_arguments`."""
    if getattr(args, "shards", None) is not None and args.shards < 1:
        raise UsageError(f"--shards must be >= 1, got {args.shards}")
    if getattr(args, "workers", None) is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if (getattr(args, "workers", None) is not None) and not (args.ray or args.ray_address):
        raise UsageError("--workers needs --ray")
