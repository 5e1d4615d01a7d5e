"""Retrieval quality through ir-measures."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import ir_measures

DEFAULT_METRICS = ("nDCG@10", "R@100", "RR@10")

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def remove_self_hits(run: Run) -> dict[str, dict[str, float]]:
    """Drop every document whose id equals its query's id (Pyserini's ``--remove-query``)."""
    return {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}


def evaluate(run: Run, qrels: Qrels, metrics: Iterable[str] = DEFAULT_METRICS,
             remove_query: bool = True) -> dict[str, float]:
    """Mean of each metric over the judged queries (those with a relevant document).

    A judged query missing from ``run`` scores 0, unlike a bare trec_eval call, which skips it.
    """
    metrics = list(metrics)
    if remove_query:
        run = remove_self_hits(run)
    judged = [q for q, docs in qrels.items() if any(g > 0 for g in docs.values())]
    parsed = [ir_measures.parse_measure(m) for m in metrics]
    per_query = {str(m): {} for m in parsed}
    run = {q: dict(docs) for q, docs in run.items() if docs}
    qrels = {q: dict(docs) for q, docs in qrels.items()}
    for m in ir_measures.iter_calc(parsed, qrels, run):
        per_query[str(m.measure)][m.query_id] = m.value
    return {name: sum(per_query[str(p)].get(q, 0.0) for q in judged) / max(len(judged), 1)
            for name, p in zip(metrics, parsed)}


def run_from_hits(results: Mapping[str, Iterable[tuple[str, float]]]) -> dict[str, dict[str, float]]:
    """``{qid: [(doc_id, score), ...]}`` to a run dict."""
    return {q: {d: float(s) for d, s in hits} for q, hits in results.items()}
