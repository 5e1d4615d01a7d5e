import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

from reference import brute_force
from sparseir.errors import UsageError
from sparseir.index import IndexWriter, SparseIndex, open_index, write_index
from sparseir.search import Searcher
from sparseir.search.kernels import Postings, Query, search_one, search_one_split


@st.composite
def dyadic_problem(draw):
    """Weights are multiples of 1/4 below 8, so float32 sums are exact in any order: ties are real.

    The documents go into 1-4 segments (one commit each) and some are deleted.
    """
    n_docs = draw(st.integers(1, 60))
    n_dims = draw(st.integers(1, 24))
    k = draw(st.integers(1, 15))
    n_queries = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.05, 0.2, 0.6]))
    cuts = sorted(draw(st.lists(st.integers(1, n_docs), max_size=3)))
    deleted = draw(st.lists(st.integers(0, n_docs - 1), max_size=n_docs // 3, unique=True))
    rng = np.random.default_rng(seed)

    def matrix(rows):
        m = (rng.random((rows, n_dims)) < density) * rng.integers(1, 32, size=(rows, n_dims)) / 4
        return sp.csr_matrix(m.astype(np.float32))

    return matrix(n_docs), matrix(n_queries), k, cuts, deleted


@settings(max_examples=150, deadline=None)
@given(dyadic_problem())
def test_exact_search_equals_scipy_brute_force(tmp_path_factory, problem):
    docs, queries, k, cuts, deleted = problem
    path = tmp_path_factory.mktemp("ix") / "ix"
    ids = [f"d{i}" for i in range(docs.shape[0])]
    bounds = [0, *cuts, docs.shape[0]]
    with IndexWriter(path, terms=[f"t{j}" for j in range(docs.shape[1])], quantize="float32",
                     merge_policy=None) as w:
        for lo, hi in zip(bounds, bounds[1:]):
            if hi > lo:
                w.add(ids[lo:hi], docs[lo:hi])
                w.commit()
        assert w.delete([ids[d] for d in deleted]) == []
    searcher = Searcher(path)
    index = searcher.index
    assert index.n_docs == docs.shape[0] - len(deleted)
    expected, _ = brute_force(index, queries, k)
    ids_, scores, counts = searcher.search_vectors(queries, k)  # batch kernel (parallel)
    for q, exp in enumerate(expected):
        got = list(zip(ids_[q, :counts[q]].tolist(), scores[q, :counts[q]].tolist()))
        assert got == exp
        one_ids, one_scores, one_count = searcher.search_vectors(queries[q], k)  # single-query kernel
        assert list(zip(one_ids[0, :one_count[0]].tolist(), one_scores[0, :one_count[0]].tolist())) == exp
        row = queries[q]
        for p in searcher._postings:  # the intra-query parallel kernel, each segment split in three
            parts = 3
            acc = np.zeros((parts, -(-len(p.dead) // parts)), dtype=np.float32)
            s_ids, s_scores = np.zeros(k, np.int64), np.zeros(k, np.float32)
            n = search_one_split(p, Query(row.indices, row.data), acc, k, s_ids, s_scores)
            o_ids, o_scores = np.zeros(k, np.int64), np.zeros(k, np.float32)
            m = search_one(p, Query(row.indices, row.data), np.zeros(len(p.dead), np.float32), k, o_ids, o_scores)
            assert (n, s_ids[:n].tolist(), s_scores[:n].tolist()) == (m, o_ids[:m].tolist(), o_scores[:m].tolist())
            assert not acc.any()


@pytest.mark.parametrize("quantize", ["float32", "uint8"])
def test_random_float_weights_within_tolerance(tmp_path, quantize):
    rng = np.random.default_rng(1)
    docs = sp.random(3000, 400, density=0.03, format="csr", random_state=rng, dtype=np.float32) * 3
    queries = sp.random(40, 400, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    path = write_index(tmp_path / "ix", [str(i) for i in range(3000)], docs, [str(j) for j in range(400)],
                       quantize=quantize)
    searcher = Searcher(SparseIndex.load(path))
    expected, dense = brute_force(searcher.index, queries, 20)
    assert isinstance(open_index(path).segments[0], SparseIndex)
    ids, scores, counts = searcher.search_vectors(queries, 20, threads=2)
    for q, exp in enumerate(expected):
        assert counts[q] == len(exp)
        np.testing.assert_allclose(scores[q, :counts[q]], [s for _, s in exp], rtol=1e-5)
        np.testing.assert_allclose(dense[q, ids[q, :counts[q]]], scores[q, :counts[q]], rtol=1e-5)
        # Same ids wherever neighbouring scores are not within float noise of each other.
        gaps = np.abs(np.diff([s for _, s in exp]))
        clear = np.concatenate([[True], gaps > 1e-4]) & np.concatenate([gaps > 1e-4, [True]])
        assert [d for (d, _), c in zip(exp, clear) if c] == [d for d, c in zip(ids[q, :counts[q]], clear) if c]


def test_hits_explain_and_dict_queries(tmp_path):
    docs = sp.csr_matrix(np.array([[1.0, 0, 2.0], [0, 3.0, 1.0], [0, 0, 0]], dtype=np.float32))
    path = write_index(tmp_path / "ix", ["a", "b", "c"], docs, ["apple", "bone", "cell"], quantize="float32")
    s = Searcher(path)
    hits = s.search({"apple": 2.0, "cell": 1.0}, k=5)
    assert hits == [("a", 4.0), ("b", 1.0)]  # the empty document "c" never matches
    expl = s.explain({"apple": 2.0, "cell": 1.0}, "a")
    assert [(c.term, c.product) for c in expl] == [("apple", 2.0), ("cell", 2.0)]
    assert sum(c.product for c in expl) == pytest.approx(hits[0].score)
    assert s.search({"bone": 0.0}, k=3) == []
    assert s.batch_search({"q1": {"bone": 1.0}, "q2": {"apple": 1.0}}, k=1) == {"q1": [("b", 3.0)],
                                                                                 "q2": [("a", 1.0)]}
    with pytest.raises(UsageError, match="not in the index vocabulary"):
        s.search({"zebra": 1.0})
    with pytest.raises(KeyError, match="not in the index"):
        s.explain({"apple": 1.0}, "zzz")


def test_explain_sums_to_score_with_uint8(tmp_path):
    rng = np.random.default_rng(2)
    docs = sp.random(200, 50, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    path = write_index(tmp_path / "ix", [str(i) for i in range(200)], docs, [f"t{j}" for j in range(50)])
    s = Searcher(path)
    q = sp.random(1, 50, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    for hit in s.search(q, k=5):
        assert sum(c.product for c in s.explain(q, hit.doc_id)) == pytest.approx(hit.score, rel=1e-5)


def test_single_query_split_across_threads_matches(tmp_path, monkeypatch):
    import sparseir.search.searcher as searcher_module

    rng = np.random.default_rng(3)
    docs = sp.random(5000, 300, density=0.03, format="csr", random_state=rng, dtype=np.float32)
    path = write_index(tmp_path / "ix", [str(i) for i in range(5000)], docs, [str(j) for j in range(300)])
    s = Searcher(path)
    queries = sp.random(10, 300, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    expected = [s.search_vectors(queries[i], 10, threads=1) for i in range(10)]
    monkeypatch.setattr(searcher_module, "SPLIT_MIN_DOCS", 0)
    for i in range(10):
        got = s.search_vectors(queries[i], 10, threads=2)
        for a, b in zip(got, expected[i]):
            np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(n_docs=st.integers(1, 20_000), k=st.sampled_from([1, 31, 32, 100, 500, 3000]),
       density=st.sampled_from([0.001, 0.01, 0.2]), dead_frac=st.sampled_from([0.0, 0.3, 0.95]),
       seed=st.integers(0, 2**32 - 1))
def test_wide_k_scan_equals_brute_force(n_docs, k, density, dead_frac, seed):
    """From k >= WIDE the scan bounds the k-th score by group maxima first; with many ties and
    deleted documents among those maxima it must still return exactly the brute-force top-k."""
    rng = np.random.default_rng(seed)
    n_dims = 12
    m = (rng.random((n_docs, n_dims)) < density) * rng.integers(1, 8, size=(n_docs, n_dims)) / 4
    docs = sp.csr_matrix(m.astype(np.float32))
    csc = docs.tocsc()
    csc.sort_indices()
    dead = (rng.random(n_docs) < dead_frac).astype(np.uint8)
    p = Postings(csc.indptr.astype(np.int64), csc.indices.astype(np.uint32), csc.data, dead,
                 np.zeros(n_dims, np.uint8))
    q_dims = np.sort(rng.choice(n_dims, size=5, replace=False)).astype(np.int32)
    q_weights = (rng.integers(1, 8, size=5) / 4).astype(np.float32)
    scores = np.asarray(docs[:, q_dims] @ q_weights).ravel()
    live = np.flatnonzero((scores > 0) & (dead == 0))
    expected = sorted(zip((-scores[live]).tolist(), live.tolist()))[:k]
    ids, got_scores, acc = np.zeros(k, np.int64), np.zeros(k, np.float32), np.zeros(n_docs, np.float32)
    n = search_one(p, Query(q_dims, q_weights), acc, k, ids, got_scores)
    assert list(zip(ids[:n].tolist(), got_scores[:n].tolist())) == [(d, -s) for s, d in expected]
    assert not acc.any()
