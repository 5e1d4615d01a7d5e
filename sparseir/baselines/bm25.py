"""BM25 through Pyserini's Lucene (Anserini ``SimpleIndexer`` / ``SimpleSearcher``).

Documents are indexed as Anserini ``JsonCollection`` documents (one ``contents``
field, Anserini's default English analyzer: Porter stemming, Lucene stopwords),
which is how Pyserini's BEIR "flat" indexes are built.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from sparseir._fs import atomic_dir, dir_bytes
from sparseir.java import init_java
from sparseir.search.params import check_k
from sparseir.search.results import Hit, batch_items


def build_bm25_index(docs: Iterable[tuple[str, str]], out: str | Path, *, threads: int = 1,
                     batch_size: int = 1000, show_progress: bool = True, total: int | None = None) -> Path:
    """Index :class:`~sparseir.corpus.Document` s or ``(doc_id, text)`` pairs into a Lucene index at ``out``
    (written atomically)."""
    init_java()
    from pyserini.index.lucene import LuceneIndexer

    with atomic_dir(out) as tmp:
        indexer = LuceneIndexer(str(tmp), threads=threads)
        it = iter(docs)
        with tqdm(total=total, desc="bm25 index", unit="doc", disable=not show_progress) as bar:
            while batch := list(itertools.islice(it, batch_size)):
                for d in batch:
                    if not isinstance(d[0], str) or not d[0]:
                        raise ValueError(f"document id must be a non-empty string, got {d[0]!r}")
                indexer.add_batch_dict([{"id": d[0], "contents": d[1]} for d in batch])
                bar.update(len(batch))
        indexer.close()
    return Path(out)


class BM25Searcher:
    """Lucene BM25 over an index made by :func:`build_bm25_index`."""

    def __init__(self, index_dir: str | Path, *, k1: float = 0.9, b: float = 0.4):
        if not any(Path(index_dir).glob("segments_*")):
            raise FileNotFoundError(f"{index_dir}: not a Lucene index")
        init_java()
        from pyserini.search.lucene import LuceneSearcher

        self.index_dir = Path(index_dir)
        self.k1, self.b = float(k1), float(b)
        self._searcher = LuceneSearcher(str(index_dir))
        self._searcher.set_bm25(self.k1, self.b)

    @property
    def nbytes(self) -> int:
        """Index size on disk."""
        return dir_bytes(self.index_dir)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """Top ``k`` documents for one query, best first."""
        return [Hit(h.docid, float(h.score)) for h in self._searcher.search(query, k=check_k(k))]

    def batch_search(self, queries: Mapping[str, str] | Sequence[str], qids: Sequence[str] | None = None,
                     k: int = 10, threads: int = 1) -> dict[str, list[Hit]]:
        """``{qid: hits}`` for many queries on ``threads`` Java threads (Pyserini's argument order)."""
        qids, texts = batch_items(queries, qids)
        hits = self._searcher.batch_search(list(texts), qids, k=check_k(k), threads=threads)
        return {qid: [Hit(h.docid, float(h.score)) for h in hits.get(qid, [])] for qid in qids}
