"""Dense retrieval with a sentence-transformers model and exact cosine search.

Embeddings are L2-normalised, so cosine similarity is a matrix product. The
index is a float32 matrix plus the document ids, saved as ``embeddings.npy`` and
``ids.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sparseir._fs import atomic_dir
from sparseir.search.params import check_k
from sparseir.search.results import Hit, batch_items


def load_model(model: str, device: str | None = None, max_seq_length: int | None = None):
    """A ``SentenceTransformer`` on ``device`` (CUDA when available and ``device`` is None)."""
    import torch
    from sentence_transformers import SentenceTransformer

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    st = SentenceTransformer(model, device=device)
    if max_seq_length is not None:
        st.max_seq_length = max_seq_length
    return st


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise indices and values of the ``k`` largest scores, best first (ties: lower index first)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(scores, idx, axis=1)


class DenseIndex:
    """Normalised document embeddings with ids; exact cosine top-k search."""

    def __init__(self, ids: Sequence[str], embeddings: np.ndarray):
        if embeddings.ndim != 2 or len(ids) != embeddings.shape[0]:
            raise ValueError(f"{len(ids)} ids for an embedding matrix of shape {embeddings.shape}")
        self.ids = list(ids)
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)

    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str], model, *, batch_size: int = 64,
              show_progress: bool = True) -> "DenseIndex":
        """Encode ``texts`` with ``model`` (a ``SentenceTransformer``)."""
        emb = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=show_progress)
        return cls(ids, emb)

    def save(self, out: str | Path) -> Path:
        """Write ``embeddings.npy`` and ``ids.json`` atomically into folder ``out``."""
        with atomic_dir(out) as tmp:
            np.save(tmp / "embeddings.npy", self.embeddings)
            (tmp / "ids.json").write_text(json.dumps(self.ids), encoding="utf-8")
        return Path(out)

    @classmethod
    def load(cls, path: str | Path) -> "DenseIndex":
        path = Path(path)
        ids = json.loads((path / "ids.json").read_text(encoding="utf-8"))
        return cls(ids, np.load(path / "embeddings.npy"))

    @property
    def nbytes(self) -> int:
        return int(self.embeddings.nbytes)

    def search_vectors(self, queries: np.ndarray, k: int = 10, chunk: int = 256) -> list[list[Hit]]:
        """Top ``k`` hits (cosine) per row of normalised ``queries``, best first."""
        check_k(k)
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        out: list[list[Hit]] = []
        for start in range(0, len(queries), chunk):
            idx, vals = top_k(queries[start:start + chunk] @ self.embeddings.T, k)
            out.extend([Hit(self.ids[i], float(v)) for i, v in zip(row_i, row_v)] for row_i, row_v in zip(idx, vals))
        return out


class DenseSearcher:
    """Encode query text with a sentence-transformers model and search a :class:`DenseIndex`."""

    def __init__(self, index: DenseIndex, model):
        self.index = index
        self.model = model

    @property
    def nbytes(self) -> int:
        return self.index.nbytes

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Normalised query embeddings, one row per text."""
        return self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """Top ``k`` documents for one query, best first."""
        return self.index.search_vectors(self.encode([query]), k)[0]

    def batch_search(self, queries: Mapping[str, str] | Sequence[str], qids: Sequence[str] | None = None,
                     k: int = 10, batch_size: int = 64) -> dict[str, list[Hit]]:
        """``{qid: hits}`` for many queries (Pyserini's argument order)."""
        qids, texts = batch_items(queries, qids)
        return dict(zip(qids, self.index.search_vectors(self.encode(list(texts), batch_size), k)))
