"""Wall-clock measurement helpers: per-call latency percentiles, batch throughput, peak RSS."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from tqdm.auto import tqdm


def latency(fn: Callable[[Any], Any], items: Iterable[Any], *, warmup: int = 3,
            show_progress: bool = False) -> tuple[dict[str, float], np.ndarray]:
    """Call ``fn(item)`` for each item after ``warmup`` untimed calls.

    Returns ``{"p50_ms", "p99_ms", "mean_ms", "n"}`` and the per-item milliseconds.
    """
    items = list(items)
    if not items:
        raise ValueError("latency needs at least one item")
    for item in items[:warmup]:
        fn(item)
    ms = np.empty(len(items))
    for i, item in enumerate(tqdm(items, desc="latency", unit="query", disable=not show_progress)):
        start = time.perf_counter()
        fn(item)
        ms[i] = (time.perf_counter() - start) * 1e3
    return summarize_ms(ms), ms


def summarize_ms(ms: np.ndarray) -> dict[str, float]:
    """p50, p99 and mean of per-item milliseconds."""
    ms = np.asarray(ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": int(ms.size)}


def throughput(fn: Callable[[], Any], n_items: int) -> tuple[Any, dict[str, float]]:
    """Run ``fn()`` once; its result and ``{"seconds", "qps"}`` for ``n_items`` items."""
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, {"seconds": seconds, "qps": n_items / seconds if seconds > 0 else float("inf")}


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Limit Numba and torch to one thread inside the block (restored afterwards).

    Numba goes first: launching its threading layer resets the OpenMP thread
    count that torch shares, which would leave torch running on more threads
    than it believes (and, on a busy machine, many times slower).
    """
    restore: list[Callable[[], None]] = []
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        n_nb = numba.get_num_threads()
        numba.set_num_threads(1)
        restore.append(lambda: numba.set_num_threads(n_nb))
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        restore.append(lambda: torch.set_num_threads(n))
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``getrusage``; Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
