"""Document reordering (recursive graph bisection): a permutation that clusters postings, and an
index written or optimized in that order that still searches exactly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from reference import brute_force
from sparseir.index import IndexWriter, open_index, write_index
from sparseir.index.reorder import bp_order, log_gap_cost
from sparseir.search import Searcher

TERMS = [f"t{j}" for j in range(200)]


def topics(n: int, seed: int = 0) -> sp.csr_matrix:
    """Documents drawn from 8 topics of 25 terms each, shuffled: a corpus with an order to find."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        topic = rng.integers(8)
        dims = rng.choice(np.arange(topic * 25, topic * 25 + 25), size=8, replace=False)
        row = np.zeros(len(TERMS), np.float32)
        row[dims] = rng.integers(1, 50, size=8) / 10
        rows.append(row)
    return sp.csr_matrix(np.array(rows))


def test_bp_order_is_a_deterministic_permutation_that_clusters_postings():
    x = topics(400)
    order = bp_order(x, seed=1)
    assert np.array_equal(np.sort(order), np.arange(400))
    assert np.array_equal(order, bp_order(x, seed=1))
    shuffled = log_gap_cost(x, np.random.default_rng(0).permutation(400))
    assert log_gap_cost(x, order) < 0.75 * shuffled


@pytest.mark.parametrize("n", [0, 1, 5, 17])
def test_bp_order_small_inputs(n):
    assert np.array_equal(np.sort(bp_order(topics(n) if n else sp.csr_matrix((0, 200), dtype=np.float32))),
                          np.arange(n))


def test_bp_order_rejects_bad_settings():
    with pytest.raises(ValueError, match="leaf"):
        bp_order(topics(10), leaf=1)
    with pytest.raises(ValueError, match="iterations"):
        bp_order(topics(10), iterations=-1)


def _search_equals_brute_force(index, queries, k=10):
    expected, _ = brute_force(index, queries, k)
    ids, scores, counts = Searcher(index).search_vectors(queries, k)
    for i, want in enumerate(expected):
        assert [float(s) for s in scores[i, :counts[i]]] == pytest.approx([s for _, s in want], rel=1e-6)
        assert sorted(ids[i, :counts[i]].tolist()) == sorted(d for d, _ in want) or \
            len({s for _, s in want}) < len(want)  # a tie at the cut may pick either document


def test_write_index_reordered_searches_exactly_and_keeps_ids(tmp_path):
    x = topics(300)
    ids = [f"doc{i}" for i in range(300)]
    plain = open_index(write_index(tmp_path / "plain", ids, x, TERMS, quantize="float32"))
    reordered = open_index(write_index(tmp_path / "bp", ids, x, TERMS, quantize="float32", reorder=True))
    assert reordered.live_ids() != plain.live_ids() and sorted(reordered.live_ids()) == sorted(ids)
    queries = topics(20, seed=5)
    _search_equals_brute_force(reordered, queries)
    a, b = Searcher(plain), Searcher(reordered)
    for i in range(queries.shape[0]):  # same documents, same scores, in either numbering
        hits_a = {(h.doc_id, round(h.score, 5)) for h in a.search(queries[i], k=300)}
        assert hits_a == {(h.doc_id, round(h.score, 5)) for h in b.search(queries[i], k=300)}


def test_optimize_reorder_keeps_stored_documents_and_drops_deletions(tmp_path):
    x = topics(120)
    path = tmp_path / "live"
    with IndexWriter(path, terms=TERMS, max_buffered_docs=50) as w:
        w.add([Doc(f"d{i}", f"text {i}") for i in range(120)], x)
    with IndexWriter(path) as w:
        w.delete([f"d{i}" for i in range(0, 120, 7)])
        w.optimize(reorder=True)
    index = open_index(path)
    assert len(index.segments) == 1 and index.n_deleted == 0
    assert index.segments[0].manifest["reordered"] is True
    live = sorted(index.live_ids(), key=lambda s: int(s[1:]))
    assert live == [f"d{i}" for i in range(120) if i % 7]
    for doc_id in ("d1", "d64", "d118"):
        assert index.doc(doc_id)["text"] == f"text {doc_id[1:]}"
        pos = index.position(doc_id)
        assert np.allclose(index.to_csr()[pos].toarray(), x[int(doc_id[1:])].toarray(), atol=0.2)
    _search_equals_brute_force(index, topics(10, seed=9))


def test_cli_optimize_reorder(tmp_path):
    path = write_index(tmp_path / "ix", [f"d{i}" for i in range(50)], topics(50), TERMS)
    run = subprocess.run([sys.executable, "-m", "sparseir.cli", "optimize", str(path), "--reorder"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "reordered" in run.stdout
    assert open_index(path).segments[0].manifest["reordered"] is True


class Doc:
    """A minimal document (the writer reads ``id``, ``text``, ``title``, ``fields``)."""

    def __init__(self, id: str, text: str) -> None:
        self.id, self.text, self.title, self.fields = id, text, "", None
