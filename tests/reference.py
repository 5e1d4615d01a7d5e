"""The one brute-force reference for search tests: scipy ``q @ D.T`` on the stored vectors."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def brute_force(index, queries: sp.csr_matrix, k: int):
    """Top-k ``(position, score)`` per query and the dense score matrix; ties by smaller position.

    ``index``: a segment (:class:`SparseIndex`) or a :class:`LiveIndex` (deleted rows score 0).
    Scores are dot products of the (de)quantised stored vectors, positive ones only.
    """
    scores = (sp.csr_matrix(queries, dtype=np.float32) @ index.to_csr().T).toarray()
    out = []
    for row in scores:
        order = np.lexsort((np.arange(len(row)), -row))
        out.append([(int(d), float(row[d])) for d in order[:k] if row[d] > 0])
    return out, scores
