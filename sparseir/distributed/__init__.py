"""Scale-out: sharded indexes, exact merged search, and Ray for distributed encoding and search.

Ray is optional (``pip install sparseir[ray]``): a sharded index can be built and searched in one
process too. Importing this package is cheap (for the CLI); the rest loads on first use, and
nothing imports Ray until a Ray path is used.
"""

from importlib import import_module
from typing import Any

from .api import add_arguments, check_arguments, open_searcher, open_writer

_LAZY = {
    "build_sharded_index": "build", "write_sharded_index": "build",
    "merge_topk": "merge", "ShardedWriter": "writer",
    "ShardedSearcher": "searcher", "ShardError": "searcher",
    "ShardMap": "shardmap", "ShardMapError": "shardmap", "is_sharded": "shardmap", "route": "shardmap",
    "shard_of": "shardmap", "shard_paths": "shardmap",
    "RaySearcher": "actors",
}

__all__ = ["add_arguments", "check_arguments", "open_searcher", "open_writer", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
