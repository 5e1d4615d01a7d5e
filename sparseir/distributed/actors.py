"""Sharded search on Ray: one actor per shard, spread over the cluster's nodes.

Every call fans out as Ray tasks on the shard actors. A dead actor is restarted by Ray
(``max_restarts``); the call that failed is retried once, and a second failure raises
:class:`ShardError` naming the shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from ..search import ApproxParams
from .cluster import connect
from .searcher import ShardedSearcher, ShardError
from .shard import Shard

_FAILURES = (RayActorError, ActorUnavailableError, GetTimeoutError)


class RaySearcher(ShardedSearcher):
    """:class:`ShardedSearcher` whose shards live in Ray actors (``SPREAD`` over the nodes).

    The index folder must be readable at the same path on every node (a shared or replicated
    filesystem). ``timeout`` bounds each retried call in seconds.
    """

    def __init__(self, path: str | Path, encoder=None, params: ApproxParams | None = None, *,
                 address: str | None = None, num_cpus: float = 1, max_restarts: int = 3,
                 timeout: float | None = 120) -> None:
        connect(address)
        self.num_cpus, self.max_restarts, self.timeout = num_cpus, max_restarts, timeout
        super().__init__(Path(path).resolve(), encoder, params)
        ray.get([a.ping.remote() for a in self._shards])  # fail now, not on the first query

    def _open(self, encoder) -> list[Any]:
        actor = ray.remote(Shard).options(num_cpus=self.num_cpus, max_restarts=self.max_restarts,
                                          max_task_retries=0, scheduling_strategy="SPREAD")
        return [actor.remote(str(self.path), s, encoder, self.params) for s in range(self.map.n_shards)]

    @property
    def actors(self) -> list[Any]:
        """The shard actors' handles, in shard order."""
        return list(self._shards)

    def _call(self, shard: int, method: str, *args: Any) -> Any:
        return self._gather([shard], method, args)[0]

    def _fanout(self, method: str, *args: Any) -> list[Any]:
        args = tuple(ray.put(a) if hasattr(a, "shape") else a for a in args)  # ship big query batches once
        return self._gather(list(range(self.map.n_shards)), method, args)

    def _gather(self, shards: list[int], method: str, args: tuple) -> list[Any]:
        refs = [getattr(self._shards[s], method).remote(*args) for s in shards]
        out = []
        for s, ref in zip(shards, refs):
            try:
                out.append(ray.get(ref))
            except _FAILURES:
                try:
                    out.append(ray.get(getattr(self._shards[s], method).remote(*args), timeout=self.timeout))
                except _FAILURES as e:
                    raise ShardError(f"{self.path}: shard {s} ({self.map.shard_dir(s)}) failed after a restart "
                                     f"and one retry: {type(e).__name__}: {e}") from None
        return out

    def close(self) -> None:
        """Stop the shard actors."""
        for a in self._shards:
            ray.kill(a, no_restart=True)
        self._shards = []
