"""The one result shape of every searcher and baseline, and the batch-query conventions they share.

Light on purpose (no Numba, no torch): the baselines and the CLI import it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ..encoders.sources import Source
from ..errors import UsageError

#: ``{query_id: {doc_id: score}}``, what ir-measures and the fusion functions take.
Run = dict[str, dict[str, float]]


class Hit(NamedTuple):
    """One retrieved document; a list of hits is best first, so ``dict(hits)`` is a run row."""

    doc_id: str
    score: float


class Contribution(NamedTuple):
    """One shared dimension's share of a score: ``query_weight * doc_weight``.

    With ``explain(..., provenance=True)``, ``query_sources`` and ``doc_sources`` list the input
    positions behind each side's weight (:class:`~sparseir.encoders.sources.Source`: the word and
    its character span in the query or the stored text); otherwise they are ``None``.
    """

    term: str
    query_weight: float
    doc_weight: float
    product: float
    query_sources: list[Source] | None = None
    doc_sources: list[Source] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: sources as ``{"token", "start", "end", "weight"}`` dicts, left out when not computed."""
        out = self._asdict()
        for side in ("query_sources", "doc_sources"):
            if out[side] is None:
                del out[side]
            else:
                out[side] = [s._asdict() for s in out[side]]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Contribution:
        """The inverse of :meth:`to_dict`."""
        sides = {side: [Source(**s) for s in d[side]] for side in ("query_sources", "doc_sources") if side in d}
        return cls(d["term"], d["query_weight"], d["doc_weight"], d["product"], **sides)


def to_run(results: Mapping[str, Sequence[Hit]]) -> Run:
    """``{qid: hits}`` as a run ``{qid: {doc_id: score}}``."""
    return {qid: dict(hits) for qid, hits in results.items()}


def batch_items(queries: Mapping[str, Any] | Sequence[Any], qids: Sequence[str] | None,
                n: int | None = None) -> tuple[list[str], list[Any] | Any]:
    """``(qids, queries)`` from ``batch_search``'s arguments, in Pyserini's order: a ``{qid: query}``
    mapping, or queries (``n`` of them, e.g. the rows of a matrix) with ``qids`` beside them (default
    ``"0", "1", ...``). Bad combinations are a :class:`UsageError`."""
    if isinstance(qids, int) and not isinstance(qids, bool):
        raise UsageError("batch_search(queries, qids=None, k=10, threads=None): pass k by keyword")
    if isinstance(queries, Mapping):
        if qids is not None:
            raise UsageError("batch_search: give qids either as the mapping's keys or as qids, not both")
        return [str(q) for q in queries], list(queries.values())
    n = len(queries) if n is None else n
    qids = [str(i) for i in range(n)] if qids is None else [str(q) for q in qids]
    if len(qids) != n:
        raise UsageError(f"batch_search: {len(qids)} qids for {n} queries")
    if len(set(qids)) != len(qids):
        raise UsageError("batch_search: duplicate qids")
    return qids, queries
