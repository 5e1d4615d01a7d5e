"""Full validation of a segment's postings (``sparseir check``): reads every posting once."""

from __future__ import annotations

import numpy as np
from numba import njit

from .format import ARRAYS, IndexFormatError
from .segment import SparseIndex


@njit(cache=True, nogil=True)
def _first_bad_list(offsets: np.ndarray, docs: np.ndarray, n_docs: int) -> int:
    """First dimension whose list is not strictly ascending within ``[0, n_docs)``, else -1."""
    for t in range(offsets.shape[0] - 1):
        prev = -1
        for p in range(offsets[t], offsets[t + 1]):
            d = np.int64(docs[p])
            if d <= prev or d >= n_docs:
                return t
            prev = d
    return -1


def check_postings(seg: SparseIndex) -> None:
    """Raise :class:`IndexFormatError` if a posting list is unsorted or names a document outside the segment."""
    t = _first_bad_list(np.asarray(seg.offsets), np.asarray(seg.docs), seg.n_docs)
    if t >= 0:
        raise IndexFormatError(f"{seg.path / ARRAYS['docs']}: the posting list of dimension {t} is unsorted or "
                               f"names a document outside 0..{seg.n_docs - 1}")
    nnz = np.bincount(np.asarray(seg.docs, dtype=np.int64), minlength=seg.n_docs)
    if not np.array_equal(nnz, np.asarray(seg.doc_nnz)):
        raise IndexFormatError(f"{seg.path / ARRAYS['doc_nnz']}: disagrees with the postings")
