"""Approximate top-k search: a query-term cut, candidate generation, exact re-scoring.

Learned sparse vectors ("wacky weights") defeat WAND/MaxScore: queries have many terms with
similar upper bounds, so dynamic pruning skips little. This mode bounds the work per query:

1. **Query-term cut**: only the ``query_cut`` heaviest query dimensions generate candidates.
2. **Candidates**, from one of three sources:

   - ``"full"``: the exact kernel runs on the full posting lists of the cut dims only;
     the ``candidates`` best partial scores are kept. The heaviest query dims of SPLADE-like
     vectors are the rarer ones: on the 1M-document benchmark the 12 heaviest of ~50 dims hold
     about a fifth of the postings a query touches.
   - ``"impact"`` (default; **static impact pruning**): the same, over lists that keep only the ``keep``
     fraction of all postings with the highest impacts (one global threshold; doc order kept).
     Low impacts move few documents across the top-k boundary, so the best partial scores
     still contain the top documents (``bench/results/speed.md``: realtext). On a uint8 index
     ("impact" and "full") the partial scores are summed in a 16-bit accumulator
     (:func:`~sparseir.search.approx_kernels.candidates_u16`): half the bytes, no overflow.
   - ``"pruned"`` (Seismic-style): each dimension keeps only its ``n_postings`` highest impacts
     (**static pruning**), cut in impact order into **blocks** of ``block_size`` whose
     **summary** is their largest impact, so ``q_t * summary`` bounds a block's contribution.
     Blocks of the cut dims are visited score-at-a-time in decreasing bound order until
     ``budget`` distinct documents are touched; the ``candidates`` best partial scores are kept.

3. **Exact re-scoring with a heap factor**: candidates, best partial score first, are scored
   with every query dim through a forward index; the scan stops at the first candidate whose
   partial score is below ``heap_factor`` times the current k-th exact score (0: score all).
   Returned scores are exact dot products, bit-identical to the exact path's.

Each segment of a live index gets its own structures; deleted documents are never candidates;
the per-segment results are merged as in exact search. The defaults were picked by measurement
(``bench/README.md``, "The approximate mode"): recall@10 >= 0.95 of exact on SciFact and on
realtext (splade-tiny vectors), where "impact" is the fastest source at that recall.

The extra structures are built from the exact index on demand, or saved once into the segment
folder (:func:`save_approx`, ``sparseir optimize --approx``) and memory-mapped from then on;
:attr:`ApproxIndex.nbytes` reports their size. Exact search stays the default: use
:class:`ApproxSearcher` to opt in.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp

from .._fs import atomic_dir
from ..errors import UsageError
from ..index.format import FORMAT_NAME, FORMAT_VERSION, IndexFormatError, checksum, read_json, require, sha256_file
from ..index.live import LiveIndex
from ..index.segment import SparseIndex
from ..index.segment_writer import write_json
from .approx_kernels import (Forward, Knobs, Pruned, Scratch, approx_search_batch, approx_search_one, forward_index,
                             full_search_one, impact_order_float, impact_order_uint8, impact_prune,
                             pruned_lengths)
from .kernels import Postings, Queries, Query, TopK
from .params import ApproxParams, check_k
from .searcher import Searcher, as_live, canonical_csr, merge_topk, numba_threads


#: the arrays of an :class:`ApproxIndex`, saved as ``<name>.npy``
_ARRAYS = ("fwd_indptr", "fwd_dims", "fwd_vals", "p_offsets", "p_docs", "p_impacts", "s_offsets", "s_docs",
           "s_impacts")
APPROX_META = "approx.json"


class ApproxIndex:
    """The approximate mode's structures for one segment (:class:`SparseIndex`).

    Built from the segment in memory (``ApproxIndex(segment)``, under a second at 366k documents),
    or saved once next to the segment's postings (:meth:`save`, ``sparseir optimize --approx``) and
    memory-mapped by every later process (:meth:`open`), so search servers share one copy.
    """

    def __init__(self, index: SparseIndex, n_postings: int = ApproxParams.n_postings,
                 block_size: int = ApproxParams.block_size, keep: float = ApproxParams.keep) -> None:
        ApproxParams(n_postings=n_postings, block_size=block_size, keep=keep)  # validates
        start = time.perf_counter()
        offsets, docs, impacts = index.offsets, np.asarray(index.docs), np.asarray(index.impacts)
        if len(docs) and int(docs.max()) >= index.n_docs:
            raise IndexFormatError(f"{index.path}: posting document ids beyond n_docs ({index.n_docs}), the index "
                                   "is corrupt (run `sparseir check`)")
        doc_nnz = np.asarray(index.doc_nnz)
        if int(doc_nnz.sum()) != len(docs):
            raise IndexFormatError(f"{index.path}: doc_nnz disagrees with the postings, the index is corrupt")
        dims_dtype = np.uint16 if index.n_dims <= np.iinfo(np.uint16).max + 1 else np.uint32
        fwd_dims = np.empty(index.n_postings, dtype=dims_dtype)
        fwd_vals = np.empty(index.n_postings, dtype=impacts.dtype)
        fwd_indptr = forward_index(offsets, docs, impacts, doc_nnz, fwd_dims, fwd_vals)
        p_offsets = np.zeros(index.n_dims + 1, dtype=np.int64)
        np.cumsum(pruned_lengths(offsets, n_postings), out=p_offsets[1:])
        p_docs = np.empty(p_offsets[-1], dtype=np.uint32)
        p_impacts = np.empty(p_offsets[-1], dtype=impacts.dtype)
        order = impact_order_uint8 if impacts.dtype == np.uint8 else impact_order_float
        order(offsets, docs, impacts, p_offsets, p_docs, p_impacts)
        s_offsets = np.zeros(index.n_dims + 1, dtype=np.int64)
        s_docs, s_impacts = np.empty(len(docs), dtype=np.uint32), np.empty(len(docs), dtype=impacts.dtype)
        kept = impact_prune(offsets, docs, impacts, keep_threshold(impacts, keep), s_offsets, s_docs, s_impacts)
        self._set(index, n_postings, block_size, keep, dict(
            fwd_indptr=fwd_indptr, fwd_dims=fwd_dims, fwd_vals=fwd_vals, p_offsets=p_offsets, p_docs=p_docs,
            p_impacts=p_impacts, s_offsets=s_offsets, s_docs=s_docs[:kept].copy(), s_impacts=s_impacts[:kept].copy()))
        self.build_seconds = time.perf_counter() - start

    def _set(self, index: SparseIndex, n_postings: int, block_size: int, keep: float,
             arrays: dict[str, np.ndarray]) -> None:
        self.n_postings, self.block_size, self.keep = n_postings, block_size, keep
        self.n_docs, self.n_dims = index.n_docs, index.n_dims
        for name in _ARRAYS:
            setattr(self, name, arrays[name])
        self.forward = Forward(self.fwd_indptr, self.fwd_dims, self.fwd_vals)
        self.pruned = Pruned(self.p_offsets, self.p_docs, self.p_impacts, block_size)
        #: 1 for each dim whose impact-pruned list a kernel has found ascending and inside the segment
        self.s_checked = np.zeros(index.n_dims, dtype=np.uint8)
        self.build_seconds = 0.0

    @property
    def settings(self) -> tuple[int, int, float]:
        """The build-time knobs: ``(n_postings, block_size, keep)``."""
        return self.n_postings, self.block_size, self.keep

    @property
    def nbytes(self) -> int:
        """Bytes of the forward index, the pruned impact-ordered lists and the impact-pruned lists."""
        return sum(getattr(self, name).nbytes for name in _ARRAYS)

    @staticmethod
    def folder(index: SparseIndex, n_postings: int = ApproxParams.n_postings,
               block_size: int = ApproxParams.block_size, keep: float = ApproxParams.keep) -> Path:
        """Where :meth:`save` puts the structures of ``index`` built with these settings."""
        return index.path / f"approx-p{n_postings}-b{block_size}-k{keep:g}"

    def save(self, index: SparseIndex) -> Path:
        """Write the structures into :meth:`folder` of their segment, atomically; returns the folder."""
        out = self.folder(index, *self.settings)
        with atomic_dir(out) as tmp:
            for name in _ARRAYS:
                np.save(tmp / f"{name}.npy", getattr(self, name))
            meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": "approx",
                    "segment_checksum": index.manifest["checksum"], "n_postings": self.n_postings,
                    "block_size": self.block_size, "keep": self.keep,
                    "sha256": {name: sha256_file(tmp / f"{name}.npy") for name in _ARRAYS}}
            meta["checksum"] = checksum(meta)
            write_json(tmp / APPROX_META, meta)
        return out

    @classmethod
    def load(cls, folder: str | Path, index: SparseIndex, *, verify: bool = False) -> ApproxIndex:
        """Memory-map structures saved by :meth:`save` for segment ``index``; ``verify`` checks every
        array's sha256. Arrays are range-checked, so a hostile file cannot send a kernel out of bounds."""
        folder = Path(folder)
        meta = read_json(folder / APPROX_META, "approximate-search metadata")
        require(meta, folder / APPROX_META, n_postings=int, block_size=int, keep=(int, float), segment_checksum=str,
                sha256=dict)
        if meta["segment_checksum"] != index.manifest["checksum"]:
            raise IndexFormatError(f"{folder}: saved for another segment than {index.path}")
        if meta["n_postings"] < 1 or meta["block_size"] < 1 or not 0 < meta["keep"] <= 1:
            raise IndexFormatError(f"{folder / APPROX_META}: n_postings and block_size must be >= 1, keep in (0, 1]")
        arrays = {}
        for name in _ARRAYS:
            file = folder / f"{name}.npy"
            if verify and sha256_file(file) != meta["sha256"].get(name):
                raise IndexFormatError(f"{file}: sha256 mismatch, the file was modified or is corrupt")
            try:
                arrays[name] = np.load(file, mmap_mode="r")
            except (ValueError, OSError, EOFError) as e:
                raise IndexFormatError(f"{file}: unreadable or truncated array ({e})") from None
        _check_arrays(folder, arrays, index, meta["block_size"])
        self = cls.__new__(cls)
        self._set(index, meta["n_postings"], meta["block_size"], float(meta["keep"]), arrays)
        return self

    @classmethod
    def open(cls, index: SparseIndex, n_postings: int = ApproxParams.n_postings,
             block_size: int = ApproxParams.block_size, keep: float = ApproxParams.keep) -> ApproxIndex:
        """The saved structures of ``index`` for these settings if there are any, else new ones."""
        folder = cls.folder(index, n_postings, block_size, keep)
        if (folder / APPROX_META).is_file():
            return cls.load(folder, index)
        return cls(index, n_postings, block_size, keep)


def _check_arrays(folder: Path, a: dict[str, np.ndarray], index: SparseIndex, block_size: int) -> None:
    """Shapes, dtypes and index ranges of loaded :class:`ApproxIndex` arrays (vectorised: cheap)."""
    def bad(name: str, what: str) -> IndexFormatError:
        return IndexFormatError(f"{folder / (name + '.npy')}: {what}; remove the folder (`sparseir optimize "
                                "--approx` rebuilds it)")

    n, n_docs, n_dims = index.n_postings, index.n_docs, index.n_dims
    for name, dtypes, length in (("fwd_indptr", (np.int64,), n_docs + 1), ("fwd_dims", (np.uint16, np.uint32), n),
                                 ("fwd_vals", (index.impacts.dtype,), n), ("p_offsets", (np.int64,), n_dims + 1),
                                 ("p_docs", (np.uint32,), None), ("p_impacts", (index.impacts.dtype,), None),
                                 ("s_offsets", (np.int64,), n_dims + 1), ("s_docs", (np.uint32,), None),
                                 ("s_impacts", (index.impacts.dtype,), None)):
        arr = a[name]
        if arr.ndim != 1 or arr.dtype not in dtypes or (length is not None and len(arr) != length):
            raise bad(name, f"shape {arr.shape} / dtype {arr.dtype} do not fit segment {index.path}")
    for name, total in (("fwd_indptr", n), ("p_offsets", len(a["p_docs"])), ("s_offsets", len(a["s_docs"]))):
        ptr = a[name]
        if ptr[0] != 0 or ptr[-1] != total or (np.diff(ptr) < 0).any():
            raise bad(name, "offsets not ascending from 0 to the array length")
    for docs, vals in (("p_docs", "p_impacts"), ("s_docs", "s_impacts")):
        if len(a[vals]) != len(a[docs]):
            raise bad(vals, f"length differs from {docs}")
    if n and int(a["fwd_dims"].max()) >= n_dims:
        raise bad("fwd_dims", f"a dimension >= n_dims ({n_dims})")
    for name in ("p_docs", "s_docs"):
        if len(a[name]) and int(a[name].max()) >= n_docs:
            raise bad(name, f"a document id >= n_docs ({n_docs})")


def keep_threshold(impacts: np.ndarray, keep: float) -> float:
    """The smallest impact of the ``keep`` fraction of highest impacts (every tie at it is kept)."""
    if keep >= 1.0 or not len(impacts):
        return -np.inf
    if impacts.dtype == np.uint8:
        at_least = np.cumsum(np.bincount(impacts, minlength=256)[::-1])[::-1]  # postings with impact >= v
        return float(np.flatnonzero(at_least >= keep * len(impacts)).max())
    return float(np.quantile(impacts, 1.0 - keep, method="higher"))


def save_approx(index: LiveIndex | SparseIndex | str | Path, params: ApproxParams = ApproxParams()) -> list[Path]:
    """Save the approximate-search structures (``params``' build-time knobs) of every segment of
    ``index`` that lacks them; returns their folders."""
    settings = (params.n_postings, params.block_size, params.keep)
    out = []
    for seg in as_live(index).segments:
        folder = ApproxIndex.folder(seg, *settings)
        out.append(folder if (folder / APPROX_META).is_file() else ApproxIndex(seg, *settings).save(seg))
    return out


class ApproxSearcher(Searcher):
    """A :class:`Searcher` whose searches are approximate (see the module docstring).

    ``params`` sets every knob; ``approx`` reuses structures already built (one
    :class:`ApproxIndex` per segment, or one for a one-segment index) with the same
    ``n_postings`` and ``block_size``. :meth:`exact` gives the exact searcher of the same index.
    """

    def __init__(self, index: LiveIndex | SparseIndex | str | Path, encoder=None,
                 params: ApproxParams = ApproxParams(), approx: ApproxIndex | list[ApproxIndex] | None = None) -> None:
        self.params = params
        self._given = [approx] if isinstance(approx, ApproxIndex) else approx
        super().__init__(index, encoder)

    def _use(self, index: LiveIndex) -> None:
        super()._use(index)
        p, given = self.params, self._given
        if given is not None:
            if len(given) != len(index.segments) or any(
                    (*a.settings, a.n_docs) != (p.n_postings, p.block_size, p.keep, s.n_docs)
                    for a, s in zip(given, index.segments)):
                raise UsageError("approx was built for another index or other n_postings/block_size/keep")
            self.approx = list(given)
        else:
            old = {id(s): a for s, a in zip(getattr(self, "_approx_segments", []), getattr(self, "approx", []))}
            self.approx = [old.get(id(s)) or ApproxIndex.open(s, p.n_postings, p.block_size, p.keep)
                           for s in index.segments]
        self._given = None  # a refresh builds structures for new segments
        self._approx_segments = list(index.segments)
        self._scratch: list[Scratch | None] = [None] * len(index.segments)

    def with_params(self, **changes) -> ApproxSearcher:
        """A searcher over the same structures with other per-query knobs."""
        params = ApproxParams(**{**asdict(self.params), **changes})
        return ApproxSearcher(self.index, self._encoder, params, self.approx)

    def exact(self) -> Searcher:
        return Searcher(self.index, self._encoder)

    def _lists(self, post: Postings, a: ApproxIndex) -> Postings:
        """The posting lists candidates come from: the segment's, or (source "impact") the pruned ones."""
        if self.params.source != "impact":
            return post
        return Postings(a.s_offsets, a.s_docs, a.s_impacts, post.dead, a.s_checked)

    def _touched_size(self, n_docs: int) -> int:
        b = self.params.budget
        return max(1, min(n_docs, b) if b > 0 else n_docs)

    def search_vectors(self, queries: sp.spmatrix, k: int = 10,
                       threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Approximate top-k global positions ``[n, k]``, exact scores ``[n, k]`` and hit counts ``[n]``."""
        check_k(k)
        q = canonical_csr(queries)
        p = self.params
        qs = Queries(q.indptr, q.indices, q.data * np.float32(self.index.scale))
        kn = Knobs(k, p.query_cut, p.budget, p.candidates, p.heap_factor)
        n = q.shape[0]
        parts = []
        for s, (post, a) in enumerate(zip(self._postings, self.approx)):
            out = TopK(np.zeros((n, k), np.int64), np.zeros((n, k), np.float32), np.zeros(n, np.int64))
            n_docs = post.dead.shape[0]
            acc16_len = n_docs if p.source != "pruned" and post.impacts.dtype == np.uint8 else 0
            if n == 1:
                sc = self._scratch[s]
                sizes = (0 if acc16_len else n_docs, self._touched_size(n_docs), acc16_len)
                if sc is None or (sc.acc.shape[0], sc.touched.shape[0], sc.acc16.shape[0]) != sizes:
                    sc = self._scratch[s] = Scratch(np.zeros(sizes[0], np.float32), np.empty(sizes[1], np.int64),
                                                    np.zeros(self.index.n_dims, np.float32),
                                                    np.zeros(acc16_len, np.uint16))
                one = Query(qs.dims, qs.weights)
                if p.source != "pruned":
                    out.counts[0] = full_search_one(self._lists(post, a), a.forward, one, kn, sc, out.ids[0],
                                                    out.scores[0])
                else:
                    out.counts[0] = approx_search_one(post, a.pruned, a.forward, one, kn, sc, out.ids[0],
                                                      out.scores[0])
            elif n:
                with numba_threads(threads):
                    blocks = min(n, 4 * numba.get_num_threads())
                    approx_search_batch(self._lists(post, a), a.pruned, a.forward, qs, kn, p.source != "pruned",
                                        self.index.n_dims, blocks, self._touched_size(n_docs), acc16_len, out)
            self._check(out.counts, self.index.segments[s].path)
            parts.append(out)
        return merge_topk(parts, self.index.bases, n, k)
