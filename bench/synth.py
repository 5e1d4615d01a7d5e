"""Real BEIR splade-tiny vectors, and large synthetic corpora resampled from real vectors.

``synthetic_corpus(n_docs, seed)`` makes each document from two random real documents: about
70% of the first one's terms and 30% of the second's, weights jittered by a log-normal factor.
Document lengths and per-term document frequencies therefore follow SciFact's, scaled up; with
few base documents it makes near-duplicates (each base document is the main parent of many).

``mixed_corpus(base, n_docs, parents, seed)`` avoids that: each document takes a random ``1/parents``
of the terms of each of ``parents`` distinct random base documents, so two documents that share a
parent share only about ``1/parents**2`` of its terms, while lengths and document frequencies stay
close to the base's (checked by ``bench.speed_corpora.df_curve``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCIFACT = SHARED / "data" / "beir" / "scifact"
NFCORPUS = SHARED / "data" / "beir" / "nfcorpus"
SPLADE_TINY = SHARED / "models" / "splade-tiny"
CACHE = ROOT / "data" / "cache"


@dataclass
class EncodedDataset:
    doc_ids: list[str]
    docs: sp.csr_matrix          # float32 [n_docs, vocab]
    query_ids: list[str]
    queries: sp.csr_matrix       # float32 [n_queries, vocab]
    terms: list[str]
    qrels: dict[str, dict[str, int]]
    docs_per_second: float       # encoding throughput when the cache was made (nan if loaded)


def scifact_vectors(model: Path = SPLADE_TINY, data: Path = SCIFACT) -> EncodedDataset:
    """A BEIR set (SciFact by default) encoded with splade-tiny (docs at 256 tokens, queries at 64),
    test queries with qrels only, cached on disk."""
    from sparseir.corpus import load_corpus, load_qrels, load_queries
    from sparseir.encoders import MLMSparseEncoder

    encoder = MLMSparseEncoder(str(model), max_length=256, query_max_length=64)
    qrels = load_qrels(data)
    queries = {q: t for q, t in load_queries(data).items() if q in qrels}
    cache = CACHE / f"{data.name}-{model.name}-{encoder.fingerprint}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        docs = sp.csr_matrix((z["d_data"], z["d_indices"], z["d_indptr"]), shape=tuple(z["d_shape"]))
        qs = sp.csr_matrix((z["q_data"], z["q_indices"], z["q_indptr"]), shape=tuple(z["q_shape"]))
        return EncodedDataset(z["doc_ids"].tolist(), docs, z["query_ids"].tolist(), qs, encoder.terms, qrels,
                              float("nan"))
    corpus = list(load_corpus(data))
    docs = encoder.encode_document([d.text for d in corpus], show_progress_bar=True)
    dps = encoder.last_docs_per_second
    qs = encoder.encode_query(list(queries.values()))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.npz")
    np.savez(tmp, d_data=docs.data, d_indices=docs.indices, d_indptr=docs.indptr, d_shape=docs.shape,
             q_data=qs.data, q_indices=qs.indices, q_indptr=qs.indptr, q_shape=qs.shape,
             doc_ids=np.array([d.id for d in corpus]), query_ids=np.array(list(queries)))
    os.replace(tmp, cache)
    return EncodedDataset([d.id for d in corpus], docs, list(queries), qs, encoder.terms, qrels, dps)


def _gather_rows(base: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row number, column, value) of every entry of ``base[rows]``, row numbers 0..len(rows)-1."""
    lengths = np.diff(base.indptr)[rows]
    owner = np.repeat(np.arange(len(rows)), lengths)
    first = np.cumsum(lengths) - lengths
    pos = base.indptr[rows][owner] + (np.arange(lengths.sum()) - first[owner])
    return owner, base.indices[pos], base.data[pos]


def _append_rows(r: np.ndarray, c: np.ndarray, v: np.ndarray, m: int, rng: np.random.Generator, jitter: float,
                 indptr: list, indices: list, data: list) -> None:
    """Append ``m`` CSR rows from (row, column, weight) triples: weights jittered (log-normal), a term
    drawn twice for one row keeps the larger weight."""
    v = (v * rng.lognormal(0.0, jitter, size=len(v))).astype(np.float32)
    order = np.lexsort((c, r))
    r, c, v = r[order], c[order], v[order]
    first = np.ones(len(r), dtype=bool)
    first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    starts = np.flatnonzero(first)
    v = np.maximum.reduceat(v, starts) if len(v) else v
    r, c = r[starts], c[starts]
    indptr.append(indptr[-1][-1] + np.cumsum(np.bincount(r, minlength=m)))
    indices.append(c.astype(np.int32))
    data.append(v)


def synthetic_corpus(base: sp.csr_matrix, n_docs: int, seed: int = 0, chunk: int = 100_000,
                     keep_first: float = 0.7, keep_second: float = 0.3, jitter: float = 0.1) -> sp.csr_matrix:
    """``n_docs`` documents resampled from the rows of ``base`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    indptr, indices, data = [np.zeros(1, np.int64)], [], []
    base = sp.csr_matrix(base)
    for start in range(0, n_docs, chunk):
        m = min(chunk, n_docs - start)
        parts = []
        for keep in (keep_first, keep_second):
            r, c, v = _gather_rows(base, rng.integers(base.shape[0], size=m))
            mask = rng.random(len(r)) < keep
            parts.append((r[mask], c[mask], v[mask]))
        _append_rows(*(np.concatenate(x) for x in zip(*parts)), m, rng, jitter, indptr, indices, data)
    return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.concatenate(indptr)),
                         shape=(n_docs, base.shape[1]))


def mixed_corpus(base: sp.csr_matrix, n_docs: int, parents: int = 3, seed: int = 0, chunk: int = 100_000,
                 jitter: float = 0.1) -> sp.csr_matrix:
    """``n_docs`` documents, each mixed from ``parents`` distinct random rows of ``base`` (see the module
    docstring); a term drawn from two parents keeps the larger weight."""
    if parents < 1 or parents > base.shape[0]:
        raise ValueError(f"parents must be in [1, {base.shape[0]}], got {parents}")
    rng = np.random.default_rng(seed)
    indptr, indices, data = [np.zeros(1, np.int64)], [], []
    base = sp.csr_matrix(base)
    for start in range(0, n_docs, chunk):
        m = min(chunk, n_docs - start)
        picks = _distinct_rows(rng, base.shape[0], m, parents)
        r, c, v = _gather_rows(base, picks.ravel())
        keep = rng.random(len(r)) < 1.0 / parents
        _append_rows(r[keep] // parents, c[keep], v[keep], m, rng, jitter, indptr, indices, data)
    return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.concatenate(indptr)),
                         shape=(n_docs, base.shape[1]))


def _distinct_rows(rng: np.random.Generator, n: int, m: int, k: int) -> np.ndarray:
    """``m`` rows of ``k`` distinct integers in ``[0, n)`` (redraws the rows with a repeat)."""
    picks = rng.integers(n, size=(m, k))
    while True:
        s = np.sort(picks, axis=1)
        bad = (s[:, 1:] == s[:, :-1]).any(axis=1)
        if not bad.any():
            return picks
        picks[bad] = rng.integers(n, size=(int(bad.sum()), k))
