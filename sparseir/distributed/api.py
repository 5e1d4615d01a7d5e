"""What the CLI calls: open any index (sharded or not) for search or writing, and the scale-out options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .shardmap import is_sharded

if TYPE_CHECKING:
    from ..search import ApproxParams


def open_searcher(path: str | Path, *, ray: bool = False, ray_address: str | None = None, encoder=None,
                  params: ApproxParams | None = None):
    """A searcher for ``path``: :class:`~sparseir.search.Searcher` (or ``ApproxSearcher`` with ``params``)
    for one index; :class:`ShardedSearcher` for a sharded index, or with ``ray`` (or a ``ray_address``)
    a ``RaySearcher`` with one Ray actor per shard."""
    if ray or ray_address:
        require_sharded(path)
    if not is_sharded(path):
        from ..search import ApproxSearcher, Searcher

        return ApproxSearcher(path, encoder, params) if params else Searcher(path, encoder)
    if ray or ray_address:
        from .actors import RaySearcher

        return RaySearcher(path, encoder, params, address=ray_address)
    from .searcher import ShardedSearcher

    return ShardedSearcher(path, encoder, params)


def require_sharded(path: str | Path) -> None:
    """A :class:`UsageError` unless ``path`` is a sharded index (what ``--ray`` needs)."""
    if not is_sharded(path):
        raise UsageError(f"{path}: --ray needs a sharded index (build one with --shards N)")


def open_writer(path: str | Path, encoder: Any = None):
    """The writer of an existing index: :class:`~sparseir.index.IndexWriter`, or a :class:`ShardedWriter`
    that routes documents to the shards of a sharded index."""
    if is_sharded(path):
        from .writer import ShardedWriter

        return ShardedWriter(path, encoder)
    from ..index import IndexWriter

    return IndexWriter(path, encoder)


def add_arguments(parser: argparse.ArgumentParser, *, build: bool = False) -> None:
    """``--ray`` and ``--ray-address`` (with ``build``, also ``--shards``, ``--workers`` and ``--scale``)."""
    g = parser.add_argument_group("scale-out (Ray: pip install sparseir[ray])")
    g.add_argument("--ray", action="store_true",
                   help="use Ray: encode on an actor pool (index) / search with one actor per shard")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="join this Ray cluster ('auto', 'ray://host:10001'; implies --ray); default: start Ray "
                        "locally")
    if build:
        g.add_argument("--shards", type=int, metavar="N",
                       help="split the index into N shards (live indexes) by a stable hash of the document id")
        g.add_argument("--workers", type=int, metavar="N",
                       help="encoding actors with --ray (default: one per GPU, else one per CPU)")
        g.add_argument("--scale", type=float, metavar="S",
                       help="uint8 dequantisation scale shared by all shards (default: the first chunk's largest "
                            "weight / 255)")


def check_arguments(args: argparse.Namespace) -> None:
    """Validate the options added by :func:`add_arguments`."""
    ray = args.ray or args.ray_address
    for name in ("shards", "workers"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1, got {value}")
    scale = getattr(args, "scale", None)
    if scale is not None and not scale > 0:
        raise UsageError(f"--scale must be > 0, got {scale}")
    if getattr(args, "shards", None) is None:
        if ray:
            raise UsageError("--ray builds a sharded index: give --shards N")
        if getattr(args, "workers", None) is not None or scale is not None:
            raise UsageError("--workers and --scale go with --shards N")
    elif getattr(args, "workers", None) is not None and not ray:
        raise UsageError("--workers needs --ray")
