"""Request counters and latency percentiles over a window of recent requests."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque

import numpy as np

#: Latencies kept per route for the percentiles.
WINDOW = 10_000


class Metrics:
    """Thread-safe counts by route and status, and latency percentiles of the last :data:`WINDOW` requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, int]] = Counter()
        self._latencies: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=WINDOW))

    def record(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._counts[route, status] += 1
            self._latencies[route].append(seconds)

    def snapshot(self) -> dict[str, dict]:
        """``{route: {"requests", "by_status", "latency_ms": {"p50", "p90", "p99", "max"}}}``."""
        with self._lock:
            counts = dict(self._counts)
            latencies = {r: np.fromiter(d, dtype=np.float64) for r, d in self._latencies.items()}
        out: dict[str, dict] = {}
        for (route, status), n in sorted(counts.items()):
            entry = out.setdefault(route, {"requests": 0, "by_status": {}})
            entry["requests"] += n
            entry["by_status"][str(status)] = n
        for route, lat in latencies.items():
            p50, p90, p99 = np.percentile(lat, [50, 90, 99]) * 1000 if len(lat) else (0.0, 0.0, 0.0)
            out[route]["latency_ms"] = {"p50": round(p50, 3), "p90": round(p90, 3), "p99": round(p99, 3),
                                        "max": round(float(lat.max()) * 1000, 3) if len(lat) else 0.0,
                                        "window": len(lat)}
        return out
