"""The shard map of a sharded index and the stable routing of document ids to shards.

A sharded index is a folder holding ``shards.json`` and one live index per shard (``shard-000/``, ...).
A document goes to shard ``blake2b(id) mod n_shards``: stable across processes, machines and
Python versions (never Python's salted ``hash``), so add, delete and update find the same shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from ..errors import SparseirError, UsageError

SHARD_MAP = "shards.json"
FORMAT = "sparseir-shards"
VERSION = 1
HASH = "blake2b-64-le"
#: The stored field that keeps a document's global sequence number (the tie-break across shards).
SEQ_FIELD = "_seq"


class ShardMapError(SparseirError, ValueError):
    """A missing or corrupt shard map."""


def shard_of(doc_id: str, n_shards: int) -> int:
    """The shard of ``doc_id``: the first 8 bytes of its blake2b digest, little-endian, mod ``n_shards``."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_shards


def shard_dir(shard: int) -> str:
    """The folder name of shard ``shard`` inside a sharded index."""
    return f"shard-{shard:03d}"


def route(doc_ids: list[str], n_shards: int) -> np.ndarray:
    """The shard of every id, as an int array."""
    import numpy as np

    return np.fromiter((shard_of(d, n_shards) for d in doc_ids), dtype=np.int64, count=len(doc_ids))


def check_shards(n_shards: int) -> int:
    if not isinstance(n_shards, int) or n_shards < 1:
        raise UsageError(f"--shards must be an integer >= 1, got {n_shards!r}")
    return n_shards


@dataclass(frozen=True)
class ShardMap:
    """How many shards, where they are, and the next global sequence number.

    Every document carries a global sequence number (its position in insertion order over the
    whole sharded index); merged results break score ties by it, which reproduces the order of
    one unsharded index over the same documents.
    """

    n_shards: int
    next_seq: int = 0
    hash: str = HASH
    format: str = FORMAT
    version: int = VERSION

    def shard_dir(self, shard: int) -> str:
        return shard_dir(shard)

    @property
    def shard_dirs(self) -> list[str]:
        return [self.shard_dir(s) for s in range(self.n_shards)]

    def shard_of(self, doc_id: str) -> int:
        return shard_of(doc_id, self.n_shards)

    def save(self, folder: str | Path) -> None:
        """Write ``shards.json`` in ``folder`` (a new file replaces the old one by rename)."""
        path = Path(folder) / SHARD_MAP
        tmp = path.with_name(f".{SHARD_MAP}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, folder: str | Path) -> ShardMap:
        path = Path(folder) / SHARD_MAP
        if not path.is_file():
            raise ShardMapError(f"{folder}: not a sharded index (no {SHARD_MAP})")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            smap = cls(**record)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            raise ShardMapError(f"{path}: corrupt shard map ({e})") from None
        if smap.format != FORMAT or smap.version != VERSION or smap.hash != HASH:
            raise ShardMapError(f"{path}: unsupported shard map (format {smap.format!r} v{smap.version}, "
                                f"hash {smap.hash!r}); this sparseir reads {FORMAT} v{VERSION} with {HASH}")
        if not isinstance(smap.n_shards, int) or smap.n_shards < 1:
            raise ShardMapError(f"{path}: n_shards must be a positive integer, got {smap.n_shards!r}")
        return smap


def is_sharded(path: str | Path) -> bool:
    """Whether ``path`` is a sharded index folder."""
    return (Path(path) / SHARD_MAP).is_file()


def shard_paths(path: str | Path) -> list[Path]:
    """The folders of a sharded index's shards (each a live index), in shard order."""
    smap = ShardMap.load(path)
    return [Path(path) / d for d in smap.shard_dirs]
