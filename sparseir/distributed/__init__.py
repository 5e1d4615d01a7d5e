"""Scale-out: sharded indexes, exact merged search, and Ray for distributed encoding and search.

Ray is optional (``pip install sparseir[ray]``): a sharded index can be built and searched in one
process too. Nothing here imports Ray until a Ray path is used.
"""

from .build import build_sharded_index, write_sharded_index
from .merge import ShardHits, merge_topk
from .searcher import ShardedSearcher, ShardError
from .shardmap import ShardMap, ShardMapError, is_sharded, route, shard_of

__all__ = ["ShardError", "ShardHits", "ShardMap", "ShardMapError", "ShardedSearcher", "build_sharded_index", "write_sharded_index",
           "is_sharded", "merge_topk", "route", "shard_of"]
