"""Training pairs from a BEIR split: ``(query, positive document)`` texts, optionally BM25 hard negatives."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ..corpus import load_corpus, load_qrels, load_queries
from . import TrainError


class Pair(NamedTuple):
    qid: str
    query: str
    doc_id: str
    doc: str


def load_pairs(beir: str | Path, split: str = "train") -> tuple[list[Pair], dict[str, str]]:
    """Every judged-relevant ``(query, document)`` pair of ``qrels/<split>.tsv``, and the corpus ``{id: text}``.

    Pairs whose query or document is missing are dropped; none left is an error that says why.
    """
    qrels_path = Path(beir) / "qrels" / f"{split}.tsv"
    qrels = load_qrels(beir, split)
    if not qrels:
        raise TrainError(f"{qrels_path}: the training set is empty (no judgements)")
    queries = load_queries(beir)
    matched = [q for q in qrels if q in queries]
    if not matched:
        some = ", ".join(sorted(qrels)[:3])
        raise TrainError(f"{qrels_path}: none of its {len(qrels)} query ids (e.g. {some}) is in "
                         f"{Path(beir) / 'queries.jsonl'}")
    corpus = {d.id: d.text for d in load_corpus(beir)}
    pairs = [Pair(q, queries[q], d, corpus[d]) for q in matched for d, grade in sorted(qrels[q].items())
             if grade > 0 and d in corpus and corpus[d].strip() and queries[q].strip()]
    if not pairs:
        raise TrainError(f"{qrels_path}: no relevant (grade > 0) pair has both its query and its document")
    return pairs, corpus


def bm25_negatives(pairs: list[Pair], corpus: dict[str, str], index_dir: str | Path, depth: int = 30,
                   threads: int = 1) -> dict[str, list[str]]:
    """Per query, BM25's top ``depth`` documents that are not judged relevant (hard negatives).

    The Lucene index over ``corpus`` is built once at ``index_dir`` and reused.
    """
    from ..baselines.bm25 import BM25Searcher, build_bm25_index

    if not any(Path(index_dir).glob("segments_*")):
        build_bm25_index(corpus.items(), index_dir, total=len(corpus))
    queries = {p.qid: p.query for p in pairs}
    positives: dict[str, set[str]] = {}
    for p in pairs:
        positives.setdefault(p.qid, set()).add(p.doc_id)
    run = BM25Searcher(index_dir).batch_search(queries, k=depth + 10, threads=threads)
    return {q: [h.doc_id for h in run.get(q, []) if h.doc_id not in positives[q]][:depth] for q in queries}
