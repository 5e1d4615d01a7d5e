"""Retrieval quality through ir-measures, with checks that qrels, queries and documents match.

Convention: :func:`evaluate` follows BEIR's evaluation by default and ignores a retrieved document
whose id equals its query's id (``remove_query=True``); pass ``remove_query=False`` to score the run
as it is (Pyserini's default: its ``--remove-query`` is off unless given).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from .errors import SparseirError, UsageError

DEFAULT_METRICS = ("nDCG@10", "R@100", "RR@10")
#: How each setting of ``remove_query`` is described in reports.
CONVENTIONS = {True: "BEIR: a retrieved document whose id equals the query id is ignored",
               False: "as retrieved: documents whose id equals the query id are kept (Pyserini's default)"}

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


class EvaluationError(SparseirError, ValueError):
    """Qrels that cannot be evaluated: empty, or matching no query or no document."""


class QrelsCoverage(NamedTuple):
    """How many judged queries and judged documents match the queries and the index."""

    queries: int
    queries_matched: int
    judgements: int
    judgements_matched: int


def parse_metrics(metrics: Iterable[str]) -> list:
    """ir-measures measure objects; an unknown or malformed name lists the valid measure names."""
    import ir_measures

    parsed = []
    for name in metrics:
        try:
            parsed.append(ir_measures.parse_measure(name.strip()))
        except (NameError, ValueError, TypeError, SyntaxError, AttributeError) as e:
            valid = ", ".join(sorted(ir_measures.measures.registry))
            raise UsageError(f"unknown metric {name!r} ({e}); valid measures (add @k where it applies, "
                             f"e.g. nDCG@10, R@100, RR@10): {valid}") from None
    if not parsed:
        raise UsageError("no metrics given")
    return parsed


def check_qrels(qrels: Qrels, query_ids: Iterable[str], doc_ids: set[str] | None = None,
                source: str = "qrels") -> QrelsCoverage:
    """Fail when ``qrels`` is empty or matches no query (or no indexed document, when ``doc_ids`` is
    given); warn with counts when only some of it matches."""
    n_judgements = sum(len(d) for d in qrels.values())
    if not n_judgements:
        raise EvaluationError(f"{source}: no relevance judgements")
    query_ids = set(query_ids)
    q_matched = sum(q in query_ids for q in qrels)
    if not q_matched:
        raise EvaluationError(f"{source}: none of its {len(qrels)} query ids matches a query "
                              f"(e.g. {next(iter(qrels))!r}); wrong queries file or split?")
    j_matched = n_judgements
    if doc_ids is not None:
        j_matched = sum(d in doc_ids for docs in qrels.values() for d in docs)
        if not j_matched:
            some = next(iter(next(iter(qrels.values()))), "")
            raise EvaluationError(f"{source}: none of its {n_judgements} judged document ids is in the index "
                                  f"(e.g. {some!r}); was the index built from another corpus?")
    coverage = QrelsCoverage(len(qrels), q_matched, n_judgements, j_matched)
    if q_matched < len(qrels) or j_matched < n_judgements:
        warnings.warn(f"{source}: {len(qrels) - q_matched} of {len(qrels)} judged queries have no query text and "
                      f"{n_judgements - j_matched} of {n_judgements} judgements name documents not in the index",
                      stacklevel=2)
    return coverage


def remove_self_hits(run: Run) -> dict[str, dict[str, float]]:
    """Drop every document whose id equals its query's id (BEIR's evaluation, Pyserini's ``--remove-query``)."""
    return {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}


def evaluate(run: Run, qrels: Qrels, metrics: Iterable[str] = DEFAULT_METRICS,
             remove_query: bool = True) -> dict[str, float]:
    """Mean of each metric over the judged queries (those with a relevant document).

    A judged query missing from ``run`` scores 0, unlike a bare trec_eval call, which skips it.
    ``remove_query`` picks the convention (see :data:`CONVENTIONS`).
    """
    import ir_measures

    metrics = [m.strip() for m in metrics]
    parsed = parse_metrics(metrics)
    if remove_query:
        run = remove_self_hits(run)
    judged = [q for q, docs in qrels.items() if any(g > 0 for g in docs.values())]
    if not judged:
        raise EvaluationError("qrels have no relevant (grade > 0) judgement")
    per_query = {str(m): {} for m in parsed}
    run = {q: dict(docs) for q, docs in run.items() if docs}
    qrels = {q: dict(docs) for q, docs in qrels.items()}
    for m in ir_measures.iter_calc(parsed, qrels, run):
        per_query[str(m.measure)][m.query_id] = m.value
    return {name: sum(per_query[str(p)].get(q, 0.0) for q in judged) / len(judged)
            for name, p in zip(metrics, parsed)}
