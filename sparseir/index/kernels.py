"""Numba kernels for building postings. They take arrays, not objects."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def scatter_postings(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, first_doc: int,
                     cursor: np.ndarray, out_docs: np.ndarray, out_impacts: np.ndarray, inv_scale: float,
                     quantize: bool) -> None:
    """Append the rows of one CSR chunk to the postings lists.

    ``cursor[t]`` is the next free slot of dimension ``t``; chunks arrive in document order,
    so every list stays sorted by document id.
    """
    for row in range(len(indptr) - 1):
        doc = first_doc + row
        for p in range(indptr[row], indptr[row + 1]):
            t = indices[p]
            slot = cursor[t]
            out_docs[slot] = doc
            if quantize:
                out_impacts[slot] = min(np.floor(data[p] * inv_scale + 0.5), 255.0)
            else:
                out_impacts[slot] = data[p]
            cursor[t] = slot + 1
