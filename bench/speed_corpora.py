"""The corpora of ``bench/speed.py``: realtext, corpora resampled from it, SciFact and NFCorpus.

- ``realtext``: all 366,372 cached splade-tiny vectors of ``../shared/data/realtext``
  (``bench.vectors``), searched with its 6,980 MS MARCO dev queries encoded as queries
  (splade-tiny, ``query_max_length`` 64), cached as ``.npz`` under the cache folder.
- ``realtext-1M`` (any ``realtext-<N>`` / ``realtext-<N>M``): ``bench.synth.mixed_corpus`` of the realtext
  vectors, same queries; its term document-frequency curve is checked against realtext's
  (``df_curve``, ``plot_df``) and so is its near-duplicate rate (``near_duplicates``).
- ``scifact`` and ``nfcorpus``: the BEIR sets with their test queries and qrels (nDCG@10).

The cache folder is ``$SPARSEIR_BENCH_CACHE`` or ``../cache`` beside the repository.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.synth import NFCORPUS, ROOT, SCIFACT, SHARED, SPLADE_TINY, mixed_corpus, scifact_vectors
from bench.vectors import load_vectors

CACHE = Path(os.environ.get("SPARSEIR_BENCH_CACHE", ROOT.parent / "cache"))
REALTEXT = SHARED / "data" / "realtext"
REALTEXT_VECTORS = CACHE / "realtext-splade-tiny"
RESAMPLE_PARENTS = 3


@dataclass
class Corpus:
    name: str
    doc_ids: list[str]
    docs: sp.csr_matrix        # float32 [n_docs, vocab], corpus order
    query_ids: list[str]
    queries: sp.csr_matrix     # float32 [n_queries, vocab]
    terms: list[str]
    qrels: dict[str, dict[str, int]] | None
    note: str = ""


def save_csr(path: Path, x: sp.csr_matrix, **extra) -> None:
    """``x`` (and ``extra`` arrays) as an ``.npz``, written to a temporary name and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(tmp, data=x.data, indices=x.indices, indptr=x.indptr, shape=np.array(x.shape), **extra)
    os.replace(tmp, path)


def load_csr(path: Path) -> tuple[sp.csr_matrix, dict[str, np.ndarray]]:
    """The matrix and the extra arrays of a :func:`save_csr` file."""
    z = np.load(path, allow_pickle=False)
    x = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
    return x, {k: z[k] for k in z.files if k not in ("data", "indices", "indptr", "shape")}


def realtext_queries(model: Path = SPLADE_TINY) -> tuple[list[str], sp.csr_matrix]:
    """The 6,980 realtext (MS MARCO dev) queries encoded as queries, cached."""
    from sparseir.encoders import MLMSparseEncoder

    encoder = MLMSparseEncoder(str(model), max_length=256, query_max_length=64)
    path = CACHE / f"realtext-queries-{model.name}-{encoder.fingerprint}.npz"
    if path.is_file():
        q, extra = load_csr(path)
        return extra["ids"].tolist(), q
    rows = [json.loads(line) for line in (REALTEXT / "queries.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    q = encoder.encode_query([r["text"] for r in rows], show_progress_bar=True)
    ids = [str(r["_id"]) for r in rows]
    save_csr(path, sp.csr_matrix(q, dtype=np.float32), ids=np.array(ids))
    return ids, q


def _resampled_size(name: str) -> int:
    m = re.fullmatch(r"realtext-(\d+)([kM]?)", name)
    if not m:
        raise ValueError(f"unknown corpus {name!r}: use realtext, realtext-<N>[k|M], scifact or nfcorpus")
    return int(m[1]) * {"": 1, "k": 1000, "M": 1_000_000}[m[2]]


def load_corpus(name: str) -> Corpus:
    """The named corpus (see the module docstring); resampled corpora are cached once made."""
    if name in ("scifact", "nfcorpus"):
        ds = scifact_vectors(data={"scifact": SCIFACT, "nfcorpus": NFCORPUS}[name])
        return Corpus(name, list(ds.doc_ids), ds.docs, list(ds.query_ids), ds.queries, ds.terms, ds.qrels)
    qids, queries = realtext_queries()
    if name == "realtext":
        ids, docs, terms = load_vectors(REALTEXT_VECTORS)
        return Corpus(name, ids, docs, qids, queries, terms, None)
    n = _resampled_size(name)
    path = CACHE / "speed" / name / f"docs-mixed{RESAMPLE_PARENTS}-seed0.npz"
    _, base, terms = load_vectors(REALTEXT_VECTORS)
    if path.is_file():
        docs, _ = load_csr(path)
    else:
        docs = mixed_corpus(base, n, parents=RESAMPLE_PARENTS, seed=0)
        save_csr(path, docs)
    note = (f"{n:,} documents, each mixing a random 1/{RESAMPLE_PARENTS} of the terms of {RESAMPLE_PARENTS} "
            f"distinct random realtext documents (bench.synth.mixed_corpus, seed 0)")
    return Corpus(name, [f"m{i}" for i in range(n)], docs, qids, queries, terms, None, note)


def df_curve(docs: sp.csr_matrix) -> np.ndarray:
    """Document frequency of every term that occurs, largest first, as a fraction of the documents."""
    df = np.bincount(docs.indices, minlength=docs.shape[1])
    return np.sort(df[df > 0])[::-1] / docs.shape[0]


def near_duplicates(docs: sp.csr_matrix, sample: int = 200, threshold: float = 0.9, seed: int = 0,
                    chunk: int = 20) -> dict[str, float]:
    """Cosine of sampled documents to their nearest other document: median and the share above
    ``threshold`` (exact, by sparse products over the whole corpus)."""
    x = sp.csr_matrix(docs, dtype=np.float32)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ x
    rows = np.random.default_rng(seed).choice(x.shape[0], size=min(sample, x.shape[0]), replace=False)
    xt = x.T.tocsr()
    best = []
    for lo in range(0, len(rows), chunk):
        part = rows[lo:lo + chunk]
        s = (x[part] @ xt).tocsr()
        for j, r in enumerate(part):
            row = s.getrow(j)
            vals = row.data[row.indices != r]
            best.append(float(vals.max()) if len(vals) else 0.0)
    best = np.array(best)
    return {"sample": int(len(rows)), "median_nn_cosine": float(np.median(best)),
            f"share_nn_cosine_above_{threshold}": float((best > threshold).mean())}


def plot_df(curves: dict[str, np.ndarray], path: Path) -> None:
    """Rank against document frequency (fraction of documents), log-log, one line per corpus."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, df in curves.items():
        ax.loglog(np.arange(1, len(df) + 1), df, label=f"{name} ({len(df):,} terms)")
    ax.set_xlabel("term rank by document frequency")
    ax.set_ylabel("document frequency / documents")
    ax.set_title("Term document-frequency curves")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
