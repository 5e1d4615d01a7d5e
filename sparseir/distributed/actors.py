"""Sharded search on Ray: one actor per shard, spread over the cluster's nodes.

Every call fans out as Ray tasks on the shard actors. A dead actor is restarted by Ray
(``max_restarts``); the call that failed is retried once, and a second failure raises
:class:`ShardError` naming the shard.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
import scipy.sparse as sp
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from ..search import ApproxParams
from .cluster import connect
from .searcher import Call, ShardedSearcher, ShardError
from .shard import Shard

_FAILURES = (RayActorError, ActorUnavailableError, GetTimeoutError)


class RaySearcher(ShardedSearcher):
    """:class:`ShardedSearcher` whose shards live in Ray actors (``SPREAD`` over the nodes).

    The index folder must be readable at the same path on every node (a shared or replicated
    filesystem). Each actor reserves ``num_cpus`` (default: one CPU, or an equal share of the
    cluster's CPUs when there are fewer CPUs than shards). ``timeout`` bounds a retried call, in seconds.
    """

    def __init__(self, path: str | Path, encoder=None, params: ApproxParams | None = None, *,
                 address: str | None = None, num_cpus: float | None = None, max_restarts: int = 3,
                 timeout: float | None = 120) -> None:
        connect(address)
        self.num_cpus, self.max_restarts, self.timeout = num_cpus, max_restarts, timeout
        super().__init__(Path(path).resolve(), encoder, params)
        ray.get([a.ping.remote() for a in self._shards])  # fail now, not on the first query

    def _open(self, encoder) -> list[Any]:
        cpus = self.num_cpus
        if cpus is None:
            cpus = min(1.0, ray.cluster_resources().get("CPU", 1) / self.map.n_shards)
        actor = ray.remote(Shard).options(num_cpus=cpus, max_restarts=self.max_restarts,
                                          max_task_retries=0, scheduling_strategy="SPREAD")
        return [actor.remote(str(self.path), s, encoder, self.params) for s in range(self.map.n_shards)]

    @property
    def actors(self) -> list[Any]:
        """The shard actors' handles, in shard order."""
        return list(self._shards)

    def _run(self, calls: Sequence[Call]) -> list[Any]:
        """Run the calls on their shards' actors in parallel; a failed call is retried once after a restart."""
        stored: dict[int, Any] = {}  # a big query batch goes to the object store once, for every shard

        def put(a: Any) -> Any:
            return stored.setdefault(id(a), ray.put(a)) if sp.issparse(a) else a

        calls = [(s, method, tuple(put(a) for a in args)) for s, method, args in calls]
        refs = [getattr(self._shards[s], method).remote(*args) for s, method, args in calls]
        out = []
        for (s, method, args), ref in zip(calls, refs):
            try:
                out.append(ray.get(ref))
            except _FAILURES:
                try:
                    self._wait_restarted(s)
                    out.append(ray.get(getattr(self._shards[s], method).remote(*args), timeout=self.timeout))
                except _FAILURES as e:
                    raise ShardError(f"{self.path}: shard {s} ({self.map.shard_dir(s)}) failed after a restart "
                                     f"and one retry: {type(e).__name__}: {e}") from None
        return out

    def _wait_restarted(self, shard: int) -> None:
        """Wait (up to ``timeout``) until Ray has restarted the actor of ``shard``."""
        deadline = time.monotonic() + (self.timeout or float("inf"))
        while True:
            try:
                ray.get(self._shards[shard].ping.remote(), timeout=max(0.0, deadline - time.monotonic()))
                return
            except ActorUnavailableError:  # restarting: ask again shortly
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        """Stop the shard actors."""
        for a in self._shards:
            ray.kill(a, no_restart=True)
        self._shards = []
