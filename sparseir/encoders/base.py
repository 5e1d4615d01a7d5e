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
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ..errors import SparseirError, UsageError
from .pooling import Trace
from .sources import ProvenanceError, Source

Texts = str | Sequence[str]
#: Per sequence position: the model's token and its character span in the text (``None`` outside the text).
Tokens = list[tuple[str, tuple[int, int] | None]]


class EncoderError(SparseirError, ValueError):
    """An encoder could not be loaded or configured."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU (the one device rule of the project)."""
    if device is not None:
        try:
            return torch.device(device)
        except RuntimeError as e:
            raise UsageError(f"--device {device!r}: {e}") from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def position_limit(model: torch.nn.Module, tokenizer: Any = None) -> int | None:
    """The most tokens ``model`` (and ``tokenizer``) accept per text, or ``None`` when unknown."""
    limits = [getattr(getattr(model, "config", None), "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]  # tokenizers say 1e30 for "none"
    return min(limits) if limits else None


def _as_texts(texts: Texts) -> list[str]:
    """A plain string is one text (as in sentence-transformers); a list is many."""
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] is {type(texts[bad]).__name__}, expected str")
    return texts


def _check_positive(value: int | None, option: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageError(f"{option} must be an integer >= 1, got {value!r}")
    return value


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
        self.batch_size = _check_positive(batch_size, "batch_size")
        self.max_active_dims = _check_positive(max_active_dims, "max_active_dims")
        self.device = pick_device(device)
        self.last_docs_per_second = float("nan")
        self._terms: list[str] = []

    # --- what subclasses provide -------------------------------------------------------
    @abstractmethod
    def _encode_batch(self, texts: list[str], is_query: bool) -> torch.Tensor:
        """Dense non-negative weights, shape ``[len(texts), dim]``; texts are non-empty."""

    def _trace(self, text: str, is_query: bool) -> tuple[torch.Tensor, Trace, Tokens]:
        """Encode one non-empty text, keeping the pooling's sources: the ``[dim]`` weights as
        :meth:`_encode_batch` gives them, the :class:`~.pooling.Trace` and the :data:`Tokens`."""
        raise ProvenanceError(f"the {self.name} encoder has no token provenance")

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings; ``load_encoder(config)`` rebuilds this encoder."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A short hash identifying the weights."""

    @staticmethod
    def _check_max_length(value: int | None, limit: int | None, option: str) -> int | None:
        """``value`` if it is a token count in ``1..limit`` (the model's position limit), else a
        :class:`~sparseir.errors.UsageError` naming ``option`` (e.g. ``"--max-length"``). ``None`` passes."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (limit and value > limit):
            bound = f"be in 1..{limit} (the model's position limit)" if limit else "be >= 1"
            raise UsageError(f"{option} must {bound}, got {value!r}")
        return value

    # --- public API --------------------------------------------------------------------
    @property
    def terms(self) -> list[str]:
        """The name of every dimension."""
        return self._terms

    @property
    def health(self) -> dict[str, Any] | None:
        """Training diagnostics an index keeps with the encoder's settings (an SAE's FVU, L0, dead latents...);
        ``None`` when the encoder has none."""
        return None

    @property
    def dim(self) -> int:
        return len(self._terms)

    def encode_document(self, texts: Texts, batch_size: int | None = None, show_progress_bar: bool | None = None,
                        max_active_dims: int | None = None) -> sp.csr_matrix:
        """Encode documents into a ``[n, dim]`` float32 CSR matrix; a plain string is one document.

        ``max_active_dims`` overrides the encoder's setting for this call.
        """
        return self._encode(_as_texts(texts), False, batch_size, show_progress_bar, max_active_dims)

    def encode_query(self, texts: Texts, batch_size: int | None = None, show_progress_bar: bool | None = None,
                     max_active_dims: int | None = None) -> sp.csr_matrix:
        """Encode queries into a ``[n, dim]`` float32 CSR matrix; a plain string is one query."""
        return self._encode(_as_texts(texts), True, batch_size, show_progress_bar, max_active_dims)

    def decode(self, vectors: sp.spmatrix | np.ndarray | torch.Tensor,
               top_k: int | None = None) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
        """``(term, weight)`` pairs, heaviest first, as sentence-transformers' ``decode``.

        One vector (a 1-D array or tensor) gives one list; a matrix (2-D, sparse or dense, even with
        one row) gives a list per row.
        """
        _check_positive(top_k, "top_k")
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().float().cpu().numpy()
        single = not sp.issparse(vectors) and np.ndim(vectors) == 1
        m = sp.csr_matrix(vectors if sp.issparse(vectors) else np.atleast_2d(vectors))
        if m.shape[1] != self.dim:
            raise ValueError(f"vectors have {m.shape[1]} dimensions, the encoder {self.dim}")
        out = []
        for i in range(m.shape[0]):
            row = m.getrow(i)
            order = np.lexsort((row.indices, -row.data))[:top_k]
            out.append([(self._terms[row.indices[j]], float(row.data[j])) for j in order if row.data[j] != 0])
        return out[0] if single else out

    def provenance(self, text: str, is_query: bool = False) -> dict[int, list[Source]]:
        """Re-encode ``text`` and return, for each active dimension, the input positions its weight
        comes from, heaviest first, with their character spans in ``text``.

        Max pooling gives one position per dimension (the argmax), sum pooling every position that
        adds to it. Raises :class:`~.sources.ProvenanceError` for an encoder whose dimensions have
        no token positions (an embedding-source SAE, an LLM's prompt mode).
        """
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}, expected str")
        if not text.strip():
            return {}
        with torch.inference_mode(), self._autocast():
            weights, trace, tokens = self._trace(text, is_query)
        keep = (weights.float()[trace.dim] > 0).cpu().numpy()
        out: dict[int, list[Source]] = {}
        for pos, dim, w in zip(trace.position.cpu().numpy()[keep], trace.dim.cpu().numpy()[keep],
                               trace.weight.float().cpu().numpy()[keep]):
            token, span = tokens[pos]
            source = Source(token, None, None, float(w)) if span is None else _text_source(text, *span, float(w))
            out.setdefault(int(dim), []).append(source)
        for sources in out.values():
            sources.sort(key=lambda s: -s.weight)
        return out

    @staticmethod
    def sparsity(vectors: sp.spmatrix | np.ndarray | torch.Tensor) -> dict[str, float]:
        """Mean non-zero dimensions per row and the fraction of zeros (sentence-transformers' ``sparsity``)."""
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().float().cpu().numpy()
        m = sp.csr_matrix(vectors if sp.issparse(vectors) else np.atleast_2d(vectors))
        m.eliminate_zeros()
        rows, dim = m.shape
        active = m.nnz / rows if rows else 0.0
        return {"active_dims": active, "sparsity_ratio": 1.0 - active / dim if dim else 1.0}

    # --- machinery ---------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _encode(self, texts: list[str], is_query: bool, batch_size: int | None,
                show_progress_bar: bool | None, max_active_dims: int | None) -> sp.csr_matrix:
        bs = _check_positive(batch_size, "batch_size") or self.batch_size
        keep = _check_positive(max_active_dims, "max_active_dims") or self.max_active_dims
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
                r, c, v = _sparsify(dense.float(), keep)
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


def _text_source(text: str, start: int, end: int, weight: float) -> Source:
    """The :class:`Source` at ``text[start:end]``, surrounding whitespace left out (byte-level BPE
    tokens carry their leading space)."""
    start, end = max(0, start), min(len(text), end)
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Source(text[start:end], start, end, weight)


def _sparsify(dense: torch.Tensor, keep: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and values of the positive entries, keeping the top ``keep`` of each row."""
    if keep is not None and keep < dense.shape[1]:
        values, cols = dense.topk(keep, dim=1)
        dense = torch.zeros_like(dense).scatter_(1, cols, values)
    r, c = (dense > 0).nonzero(as_tuple=True)
    return r.cpu().numpy(), c.cpu().numpy(), dense[r, c].cpu().numpy()
