"""Hybrid fusion of ranked runs.

A run is ``{query_id: {doc_id: score}}`` (higher is better). Both functions fuse
two or more runs over the union of their queries and documents and return a run
of the same shape, each query's documents sorted best first.

- :func:`rrf`: reciprocal rank fusion, ``sum_r w_r / (k + rank_r(d))`` with
  1-based ranks (Cormack et al., 2009). A document missing from a run gets
  nothing from it.
- :func:`convex`: convex combination ``sum_r w_r * norm(s_r(d))`` of per-query
  normalised scores, the weights rescaled to sum to 1. A document missing from a run gets that run's normalised
  minimum (0 for ``"minmax"``), the usual choice in hybrid retrieval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .search.results import Run

NORMS = ("minmax", "zscore", "none")


def _check(runs: Sequence[Run], weights: Sequence[float] | None, default: float) -> list[float]:
    """Validated weights, ``default`` for every run when ``weights`` is None."""
    if len(runs) < 2:
        raise ValueError(f"fusion needs at least two runs, got {len(runs)}")
    if weights is None:
        return [default] * len(runs)
    if len(weights) != len(runs):
        raise ValueError(f"{len(weights)} weights for {len(runs)} runs")
    if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero: {list(weights)}")
    return [float(w) for w in weights]


def _ranked(docs: dict[str, float]) -> list[str]:
    """Doc ids best first; ties broken by doc id so the result is deterministic."""
    return sorted(docs, key=lambda d: (-docs[d], d))


def _finish(fused: dict[str, dict[str, float]], depth: int | None) -> Run:
    out: Run = {}
    for qid, docs in fused.items():
        ranked = _ranked(docs)[:depth] if depth is not None else _ranked(docs)
        out[qid] = {d: docs[d] for d in ranked}
    return out


def rrf(runs: Sequence[Run], k: float = 60, *, weights: Sequence[float] | None = None,
        depth: int | None = None) -> Run:
    """Reciprocal rank fusion of ``runs``; ``weights`` default to equal, ``depth`` truncates the result."""
    if k < 0:
        raise ValueError(f"rrf k must be non-negative, got {k}")
    weights = _check(runs, weights, 1.0)
    fused: dict[str, dict[str, float]] = {}
    for run, w in zip(runs, weights):
        for qid, docs in run.items():
            acc = fused.setdefault(qid, {})
            for rank, doc in enumerate(_ranked(docs), start=1):
                acc[doc] = acc.get(doc, 0.0) + w / (k + rank)
    return _finish(fused, depth)


def normalize(docs: dict[str, float], norm: str = "minmax") -> dict[str, float]:
    """Normalise one query's scores: ``"minmax"`` to [0, 1], ``"zscore"``, or ``"none"``."""
    if norm not in NORMS:
        raise ValueError(f"unknown normalisation {norm!r}; expected one of {NORMS}")
    if not docs or norm == "none":
        return dict(docs)
    vals = list(docs.values())
    if norm == "minmax":
        lo, hi = min(vals), max(vals)
        span = hi - lo
        return {d: (s - lo) / span if span > 0 else 1.0 for d, s in docs.items()}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return {d: (s - mean) / std if std > 0 else 0.0 for d, s in docs.items()}


def convex(runs: Sequence[Run], weights: Sequence[float] | None = None, norm: str = "minmax", *,
           depth: int | None = None) -> Run:
    """Weighted sum of per-query normalised scores; ``weights`` (default equal) are rescaled to sum to 1."""
    weights = _check(runs, weights, 1.0)
    total = sum(weights)
    weights = [w / total for w in weights]
    normed = [{qid: normalize(docs, norm) for qid, docs in run.items()} for run in runs]
    qids = sorted(set().union(*(run.keys() for run in runs)))
    fused: dict[str, dict[str, float]] = {}
    for qid in qids:
        per_run = [run.get(qid, {}) for run in normed]
        floors = [min(docs.values()) if docs else 0.0 for docs in per_run]
        acc: dict[str, float] = {}
        for doc in set().union(*per_run):
            acc[doc] = sum(w * docs.get(doc, floor) for w, docs, floor in zip(weights, per_run, floors))
        fused[qid] = acc
    return _finish(fused, depth)
