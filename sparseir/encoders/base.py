"""The encoder interface shared by every family (MLM, LLM, SAE).

Subclasses implement one method, :meth:`SparseEncoder._encode_batch`, that maps a batch of
texts to a dense, non-negative ``[batch, dim]`` tensor. This class does the rest: empty texts,
length-sorted batching, ``inference_mode``, autocast on CUDA, ``max_active_dims`` pruning,
CSR assembly in input order, progress bars and docs/s.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm


class EncoderError(ValueError):
    """An encoder could not be loaded or configured."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def module_fingerprint(*modules: torch.nn.Module) -> str:
    """A cheap, stable hash of weights: names, shapes and a sample of values of every tensor."""
    h = hashlib.sha256()
    for module in modules:
        for name, t in sorted(module.state_dict().items()):
            t = t.detach().to("cpu", torch.float64).flatten()
            h.update(f"{name}:{tuple(t.shape)}:".encode())
            h.update(t[:256].numpy().tobytes())
            h.update(np.float64(t.sum().item()).tobytes())
    return h.hexdigest()[:16]


class SparseEncoder(ABC):
    """Texts to sparse vectors over named dimensions (tokens or SAE features)."""

    name: ClassVar[str]

    def __init__(self, *, batch_size: int = 32, max_active_dims: int | None = None,
                 device: str | torch.device | None = None) -> None:
        if batch_size < 1:
            raise EncoderError("batch_size must be >= 1")
        if max_active_dims is not None and max_active_dims < 1:
            raise EncoderError("max_active_dims must be >= 1")
        self.batch_size = batch_size
        self.max_active_dims = max_active_dims
        self.device = pick_device(device)
        self.last_docs_per_second = float("nan")
        self._terms: list[str] = []

    # --- what subclasses provide -------------------------------------------------------
    @abstractmethod
    def _encode_batch(self, texts: list[str], is_query: bool) -> torch.Tensor:
        """Dense non-negative weights, shape ``[len(texts), dim]``; texts are non-empty."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings; ``load_encoder(config)`` rebuilds this encoder."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A short hash identifying the weights."""

    # --- public API --------------------------------------------------------------------
    @property
    def terms(self) -> list[str]:
        """The name of every dimension."""
        return self._terms

    @property
    def dim(self) -> int:
        return len(self._terms)

    def encode_document(self, texts: Sequence[str], batch_size: int | None = None,
                        show_progress_bar: bool | None = None) -> sp.csr_matrix:
        """Encode documents into a ``[n, dim]`` float32 CSR matrix."""
        return self._encode(texts, False, batch_size, show_progress_bar)

    def encode_query(self, texts: Sequence[str], batch_size: int | None = None,
                     show_progress_bar: bool | None = None) -> sp.csr_matrix:
        """Encode queries into a ``[n, dim]`` float32 CSR matrix."""
        return self._encode(texts, True, batch_size, show_progress_bar)

    def decode(self, vectors: sp.spmatrix | np.ndarray | torch.Tensor,
               top_k: int | None = None) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """Map vectors to ``(term, weight)`` pairs, heaviest first.

        A single row (1-D array or one-row matrix) gives one list; more rows give a list per row.
        """
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().float().cpu().numpy()
        single = not sp.issparse(vectors) and np.ndim(vectors) == 1
        m = sp.csr_matrix(np.atleast_2d(vectors) if not sp.issparse(vectors) else vectors)
        out = []
        for i in range(m.shape[0]):
            row = m.getrow(i)
            order = np.lexsort((row.indices, -row.data))[:top_k]
            out.append([(self._terms[row.indices[j]], float(row.data[j])) for j in order if row.data[j] != 0])
        return out[0] if single or m.shape[0] == 1 else out

    # --- machinery ---------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _encode(self, texts: Iterable[str], is_query: bool, batch_size: int | None,
                show_progress_bar: bool | None) -> sp.csr_matrix:
        texts = list(texts)
        bs = batch_size or self.batch_size
        n = len(texts)
        # Longest first: similar lengths share a batch (little padding) and OOM shows up early.
        order = sorted((i for i, t in enumerate(texts) if t and t.strip()), key=lambda i: -len(texts[i]))
        if show_progress_bar is None:
            show_progress_bar = len(order) > 4 * bs
        rows, cols, vals = [], [], []
        start = time.perf_counter()
        with torch.inference_mode(), tqdm(total=n, unit="doc", disable=not show_progress_bar,
                                          desc="encode queries" if is_query else "encode documents") as bar:
            bar.update(n - len(order))
            for b in range(0, len(order), bs):
                idx = order[b:b + bs]
                with self._autocast():
                    dense = self._encode_batch([texts[i] for i in idx], is_query)
                r, c, v = self._sparsify(dense.float())
                rows.append(np.asarray(idx, dtype=np.int64)[r])
                cols.append(c)
                vals.append(v)
                bar.update(len(idx))
                bar.set_postfix(docs_per_s=f"{bar.n / (time.perf_counter() - start):.1f}")
        elapsed = time.perf_counter() - start
        self.last_docs_per_second = n / elapsed if elapsed > 0 else float("inf")
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt, copy=False) if xs else np.zeros(0, dt))
        return sp.csr_matrix((cat(vals, np.float32), (cat(rows, np.int64), cat(cols, np.int64))),
                             shape=(n, self.dim), dtype=np.float32)

    def _sparsify(self, dense: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, columns and values of the positive entries, keeping the top ``max_active_dims``."""
        if self.max_active_dims is not None and self.max_active_dims < dense.shape[1]:
            values, cols = dense.topk(self.max_active_dims, dim=1)
            dense = torch.zeros_like(dense).scatter_(1, cols, values)
        r, c = (dense > 0).nonzero(as_tuple=True)
        return r.cpu().numpy(), c.cpu().numpy(), dense[r, c].cpu().numpy()
