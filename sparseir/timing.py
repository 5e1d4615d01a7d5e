"""Wall-clock measurement helpers: per-call latency percentiles, batch throughput, peak RSS."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np


def latency(fn: Callable[[Any], Any], items: Iterable[Any], *, warmup: int = 3) -> dict[str, float]:
    """Call ``fn(item)`` for each item; milliseconds at p50/p99/mean after ``warmup`` untimed calls."""
    items = list(items)
    if not items:
        raise ValueError("latency needs at least one item")
    for item in items[:warmup]:
        fn(item)
    times = np.empty(len(items))
    for i, item in enumerate(items):
        start = time.perf_counter()
        fn(item)
        times[i] = time.perf_counter() - start
    ms = times * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": len(items)}


def throughput(fn: Callable[[], Any], n_items: int) -> tuple[Any, dict[str, float]]:
    """Run ``fn()`` once; its result and ``{"seconds", "qps"}`` for ``n_items`` items."""
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, {"seconds": seconds, "qps": n_items / seconds if seconds > 0 else float("inf")}


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Limit torch and Numba to one thread inside the block (restored afterwards)."""
    restore: list[Callable[[], None]] = []
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        restore.append(lambda: torch.set_num_threads(n))
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        n_nb = numba.get_num_threads()
        numba.set_num_threads(1)
        restore.append(lambda: numba.set_num_threads(n_nb))
    try:
        yield
    finally:
        for undo in restore:
            undo()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``getrusage``; Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
