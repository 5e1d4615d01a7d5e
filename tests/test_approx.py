"""Approximate search mode: its structures, its knobs, and the exact path it must not disturb."""

import numpy as np
import pytest
import scipy.sparse as sp

from reference import brute_force
from sparseir.errors import UsageError
from sparseir.index import SparseIndex, write_index
from sparseir.search import Searcher
from sparseir.search.approx import ApproxIndex, ApproxParams, ApproxSearcher
from sparseir.search.kernels import CHUNK

UNLIMITED = dict(query_cut=10_000, budget=0, candidates=10**9, heap_factor=0.0)


def topical(n_docs: int, n_queries: int, n_dims: int = 2000, seed: int = 0):
    """Documents and queries drawn around shared topics, so top documents share heavy query terms."""
    rng = np.random.default_rng(seed)
    n_topics = 40
    topics = [rng.choice(n_dims, 30, replace=False) for _ in range(n_topics)]

    def draw(n, own, noise):
        rows, cols, vals = [], [], []
        for i in range(n):
            t = topics[rng.integers(n_topics)]
            c = np.concatenate([rng.choice(t, own, replace=False), rng.integers(0, n_dims, noise)])
            rows += [i] * len(c)
            cols += c.tolist()
            vals += (rng.gamma(2.0, 0.5, len(c)) * np.r_[np.full(own, 2.0), np.ones(noise)]).tolist()
        m = sp.csr_matrix((np.float32(vals), (rows, cols)), shape=(n, n_dims))
        m.sum_duplicates()
        return m

    return draw(n_docs, 12, 30), draw(n_queries, 6, 6)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    docs, queries = topical(6000, 60)
    path = tmp_path_factory.mktemp("approx") / "ix"
    write_index(path, [f"d{i}" for i in range(docs.shape[0])], docs, [f"t{j}" for j in range(docs.shape[1])])
    index = SparseIndex.load(path)
    exact = Searcher(index).search_vectors(queries, 10)
    approx = ApproxIndex(index, n_postings=400, block_size=16)
    return index, queries, exact, approx


def recall(exact, got) -> float:
    (ei, _, ec), (gi, _, gc) = exact, got
    return float(np.mean([len(set(gi[q, :gc[q]]) & set(ei[q, :ec[q]])) / max(ec[q], 1) for q in range(len(ec))]))


def test_forward_index_is_the_transpose(corpus):
    index, _, _, approx = corpus
    fwd = sp.csr_matrix((approx.fwd_vals.astype(np.float32) * np.float32(index.scale), approx.fwd_dims.astype(np.int64),
                         approx.fwd_indptr), shape=(index.n_docs, index.n_dims))
    assert (fwd != index.to_csr()).nnz == 0
    for d in range(0, index.n_docs, 997):
        row = approx.fwd_dims[approx.fwd_indptr[d]:approx.fwd_indptr[d + 1]]
        assert np.all(np.diff(row.astype(np.int64)) > 0)


def test_pruned_lists_keep_the_top_impacts_in_order(corpus):
    index, _, _, approx = corpus
    for t in range(0, index.n_dims, 37):
        lo, hi = index.offsets[t], index.offsets[t + 1]
        full = sorted(zip((-index.impacts[lo:hi].astype(int)).tolist(), index.docs[lo:hi].tolist()))
        keep = full[:min(hi - lo, approx.n_postings)]
        plo, phi = approx.p_offsets[t], approx.p_offsets[t + 1]
        assert list(zip((-approx.p_impacts[plo:phi].astype(int)).tolist(), approx.p_docs[plo:phi].tolist())) == keep
        # a block's summary (its first impact) bounds every impact in the block
        for s in range(plo, phi, approx.block_size):
            assert approx.p_impacts[s] == approx.p_impacts[s:min(s + approx.block_size, phi)].max()


def test_impact_lists_keep_the_highest_impacts_in_doc_order(corpus):
    index, _, _, approx = corpus
    impacts = np.asarray(index.impacts)
    threshold = int(approx.s_impacts.min())
    assert len(approx.s_docs) == int((impacts >= threshold).sum())  # every posting at or above the threshold
    assert approx.keep <= len(approx.s_docs) / len(impacts) < approx.keep + 0.05
    for t in range(0, index.n_dims, 37):
        lo, hi = index.offsets[t], index.offsets[t + 1]
        mask = index.impacts[lo:hi] >= threshold
        slo, shi = approx.s_offsets[t], approx.s_offsets[t + 1]
        assert approx.s_docs[slo:shi].tolist() == index.docs[lo:hi][mask].tolist()
        assert approx.s_impacts[slo:shi].tolist() == index.impacts[lo:hi][mask].tolist()


@pytest.mark.parametrize("source", ["full", "pruned", "impact"])
def test_unlimited_knobs_give_exact_results(tmp_path, source):
    docs, queries = topical(1500, 30, seed=3)
    path = write_index(tmp_path / "ix", [str(i) for i in range(1500)], docs, [str(j) for j in range(2000)])
    index = SparseIndex.load(path)
    ei, es, ec = Searcher(index).search_vectors(queries, 10)
    searcher = ApproxSearcher(index, params=ApproxParams(source=source, n_postings=10**6, keep=1.0, **UNLIMITED))
    for ids, scores, counts in (searcher.search_vectors(queries, 10),  # batch kernel
                                [np.concatenate(x) for x in zip(*(searcher.search_vectors(queries[q], 10)
                                                                   for q in range(queries.shape[0])))]):
        np.testing.assert_array_equal(counts, ec)
        for q in range(len(ec)):
            np.testing.assert_array_equal(ids[q, :ec[q]], ei[q, :ec[q]])
            np.testing.assert_array_equal(scores[q, :ec[q]], es[q, :ec[q]])  # bit-identical


@pytest.mark.parametrize("source", ["full", "pruned", "impact"])
def test_default_recall_and_exact_scores(corpus, source):
    index, queries, exact, approx = corpus
    params = ApproxParams(source=source, n_postings=400, block_size=16, heap_factor=0.5 if source == "pruned" else 0.0)
    searcher = ApproxSearcher(index, params=params, approx=approx)
    got = searcher.search_vectors(queries, 10)
    assert recall(exact, got) >= 0.95
    gi, gs, gc = got
    _, brute = brute_force(index, queries, 10)
    for q in range(len(gc)):
        np.testing.assert_allclose(gs[q, :gc[q]], brute[q, gi[q, :gc[q]]], rtol=1e-5)
        assert np.all(np.diff(gs[q, :gc[q]]) <= 0)


@pytest.mark.parametrize("source,knob,values", [
    ("pruned", "candidates", [1, 5, 20, 80, 400]), ("pruned", "budget", [50, 300, 1500, 6000]),
    ("pruned", "query_cut", [1, 2, 4, 8, 12]), ("pruned", "heap_factor", [1.0, 0.9, 0.6, 0.0]),
    ("full", "candidates", [1, 5, 20, 80, 400]), ("full", "query_cut", [1, 2, 4, 8, 12]),
    ("full", "heap_factor", [1.0, 0.9, 0.6, 0.0]), ("impact", "candidates", [1, 5, 20, 80, 400])])
def test_knobs_trade_work_for_recall_monotonically(corpus, source, knob, values):
    index, queries, exact, approx = corpus
    params = ApproxParams(source=source, n_postings=400, block_size=16, **UNLIMITED)
    base = ApproxSearcher(index, params=params, approx=approx)
    recalls = [recall(exact, base.with_params(**{knob: v}).search_vectors(queries, 10)) for v in values]
    assert all(b >= a - 0.02 for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[-1] > recalls[0] or recalls[0] == 1.0


@pytest.mark.parametrize("source", ["full", "pruned", "impact"])
def test_candidates_only_add_documents(corpus, source):
    index, queries, _, approx = corpus
    params = ApproxParams(source=source, n_postings=400, block_size=16, **UNLIMITED)
    base = ApproxSearcher(index, params=params, approx=approx)
    small, large = (base.with_params(candidates=c).search_vectors(queries, 10) for c in (15, 60))
    for q in range(len(small[2])):  # more candidates never lowers the k-th score found
        if small[2][q] == 10:
            assert large[1][q, 9] >= small[1][q, 9]


def test_bad_params_are_rejected(corpus):
    index, _, _, approx = corpus
    with pytest.raises(ValueError, match="query_cut"):
        ApproxParams(query_cut=0)
    with pytest.raises(ValueError, match="heap_factor"):
        ApproxParams(heap_factor=1.5)
    with pytest.raises(ValueError, match="budget"):
        ApproxParams(budget=-1)
    with pytest.raises(ValueError, match="source"):
        ApproxParams(source="dense")
    for keep in (0.0, 1.5):
        with pytest.raises(ValueError, match="keep"):
            ApproxParams(keep=keep)
    with pytest.raises(ValueError, match="n_postings/block_size"):
        ApproxSearcher(index, params=ApproxParams(), approx=approx)


@pytest.mark.slow
def test_exact_kernel_crosses_accumulator_chunks(tmp_path):
    """More documents than one accumulator chunk: blocked TAAT must still equal brute force, ties included."""
    rng = np.random.default_rng(7)
    n_docs, n_dims = CHUNK + 123, 50
    nnz = 2
    rows = np.repeat(np.arange(n_docs), nnz)
    cols = rng.integers(0, n_dims, n_docs * nnz)
    docs = sp.csr_matrix((rng.integers(1, 8, n_docs * nnz).astype(np.float32) / 4, (rows, cols)),
                         shape=(n_docs, n_dims))
    path = write_index(tmp_path / "ix", [str(i) for i in range(n_docs)], docs, [str(j) for j in range(n_dims)],
                       quantize="float32")
    index = SparseIndex.load(path)
    queries = sp.csr_matrix((rng.random((8, n_dims)) < 0.2) * rng.integers(1, 8, (8, n_dims)) / 4, dtype=np.float32)
    ids, scores, counts = Searcher(index).search_vectors(queries, 25)
    expected, _ = brute_force(index, queries, 25)
    for q, exp in enumerate(expected):
        assert list(zip(ids[q, :counts[q]].tolist(), scores[q, :counts[q]].tolist())) == exp


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(index root, document vectors, queries) of a small topical corpus."""
    docs, queries = topical(3000, 30, seed=3)
    path = tmp_path_factory.mktemp("saved") / "ix"
    write_index(path, [f"d{i}" for i in range(docs.shape[0])], docs, [f"t{j}" for j in range(docs.shape[1])])
    return path, docs, queries


def _same_results(a, b, queries):
    for x, y in zip(a.search_vectors(queries, 10), b.search_vectors(queries, 10)):
        assert np.array_equal(x, y)


def test_saved_structures_are_memory_mapped_and_search_the_same(small):
    from sparseir.search import save_approx

    path, _, queries = small
    ix = SparseIndex.load(path, verify=False)
    built = ApproxSearcher(ix, params=ApproxParams(n_postings=512))
    folders = save_approx(path, ApproxParams(n_postings=512))
    assert folders == [ApproxIndex.folder(ix, 512, 32, 0.3)]
    loaded = ApproxIndex.open(ix, 512, 32, 0.3)
    assert isinstance(loaded.fwd_dims, np.memmap) and loaded.nbytes == built.approx[0].nbytes
    for source in ("full", "pruned", "impact"):
        _same_results(built.with_params(source=source),
                      ApproxSearcher(ix, params=ApproxParams(n_postings=512, source=source)), queries)
    assert ix.nbytes == SparseIndex.load(path, verify=False).nbytes  # the segment's own bytes only
    assert save_approx(path, ApproxParams(n_postings=512)) == folders  # already there: kept


@pytest.mark.parametrize("damage", ["fwd_dims", "p_docs", "s_docs", "fwd_indptr", "s_offsets", "meta",
                                    "other-segment"])
def test_hostile_saved_structures_are_refused_by_name(small, tmp_path, damage):
    import json
    import shutil

    from sparseir.index.format import IndexFormatError

    path, docs, _ = small
    copy = tmp_path / "ix"
    shutil.copytree(path, copy)
    seg = SparseIndex.load(copy, verify=False)
    folder = ApproxIndex(seg, 256, 16).save(seg)
    if damage == "meta":
        meta = json.loads((folder / "approx.json").read_text())
        meta["n_postings"] = 7
        (folder / "approx.json").write_text(json.dumps(meta))
        match = "checksum"
    elif damage == "other-segment":
        other = write_index(tmp_path / "other", [str(i) for i in range(docs.shape[0] - 1)], docs[1:],
                            [f"t{j}" for j in range(docs.shape[1])], overwrite=True)
        seg = SparseIndex.load(other, verify=False)
        match = "another segment"
    else:
        arr = np.load(folder / f"{damage}.npy")
        arr[len(arr) // 2] = np.iinfo(arr.dtype).max
        np.save(folder / f"{damage}.npy", arr)
        match = f"{damage}.npy"
    with pytest.raises(IndexFormatError, match=match):
        ApproxIndex.load(folder, seg)


def test_kill_9_while_saving_leaves_the_index_usable(small, tmp_path):
    import shutil
    import signal
    import subprocess
    import sys
    import time

    path, _, queries = small
    copy = tmp_path / "ix"
    shutil.copytree(path, copy)
    seg = SparseIndex.load(copy, verify=False)
    reference = ApproxSearcher(seg)
    code = f"import sys; from sparseir.search import save_approx; print('GO', flush=True); save_approx({str(copy)!r})"
    rng = np.random.default_rng(0)
    for _ in range(6):
        shutil.rmtree(ApproxIndex.folder(seg), ignore_errors=True)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "GO"
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _same_results(reference, ApproxSearcher(SparseIndex.load(copy, verify=False)), queries)


def test_check_verifies_saved_structures(small, tmp_path, capsys):
    import shutil

    from sparseir.cli import main

    path, _, _ = small
    copy = tmp_path / "ix"
    shutil.copytree(path, copy)
    assert main(["optimize", str(copy), "--approx"]) == 0
    assert main(["check", str(copy)]) == 0
    seg = SparseIndex.load(copy, verify=False)
    vals = ApproxIndex.folder(seg) / "fwd_vals.npy"
    arr = np.load(vals)
    arr[0] ^= 1  # same shape and range: only the checksum can tell
    np.save(vals, arr)
    capsys.readouterr()
    assert main(["check", str(copy)]) == 2
    assert "fwd_vals.npy" in capsys.readouterr().err


def test_uint16_candidates_match_their_integer_reference_and_never_wrap(tmp_path):
    """The 16-bit candidate kernel ranks by floor(w * scale) * impact summed, exactly, with no overflow."""
    from sparseir.search.approx_kernels import candidates_u16
    from sparseir.search.kernels import Postings, Query

    rng = np.random.default_rng(7)
    n_docs, n_dims = 3000, 40
    dense = np.where(rng.random((n_docs, n_dims)) < 0.3, rng.integers(1, 256, (n_docs, n_dims)), 0)
    dense[:5, :12] = 255  # documents at the 16-bit ceiling on every query dim
    post = sp.csc_matrix(dense.astype(np.uint8))
    post.sort_indices()
    p = Postings(post.indptr.astype(np.int64), post.indices.astype(np.uint32), post.data,
                 np.zeros(n_docs, np.uint8), np.zeros(n_dims, np.uint8))
    acc16 = np.zeros(n_docs, np.uint16)
    for weights in (np.full(12, 3.7, np.float32), rng.gamma(1.0, 2.0, 12).astype(np.float32)):
        q = Query(np.arange(12, dtype=np.int32), weights)
        scale = np.float32(65535.0) / (np.float32(255.0) * weights.sum(dtype=np.float32))
        ref = dense[:, :12] @ (weights * scale).astype(np.uint16).astype(np.int64)
        assert ref.max() <= 65535
        m = 200
        ids, scores = np.empty(m, np.int64), np.empty(m, np.float32)
        assert candidates_u16(p, q, acc16, m, ids, scores) == m
        np.testing.assert_array_equal(np.sort(ref[ids]), np.sort(ref)[-m:])  # the m best, ties aside
        np.testing.assert_allclose(scores, ref[ids] / scale, rtol=1e-6)
        assert np.all(np.diff(scores) <= 0) and not acc16.any()  # best first; scratch zero again


def test_non_finite_query_weights_are_refused_and_huge_ones_still_search(corpus):
    index, queries, _, approx = corpus
    q = sp.csr_matrix(queries[:3], dtype=np.float32)
    for searcher in (Searcher(index), ApproxSearcher(index, params=ApproxParams(n_postings=400, block_size=16),
                                                     approx=approx)):
        for bad in (np.nan, np.inf, -np.inf):
            hostile = q.copy()
            hostile.data[q.indptr[2]] = bad
            with pytest.raises(UsageError, match=f"query 2: weight {bad} in dimension {q.indices[q.indptr[2]]}"):
                searcher.search_vectors(hostile, 10)
    huge = q[0] * np.float32(1e38 / q[0].data.max())  # finite, but its weights sum past float32's range
    ids, _, counts = ApproxSearcher(index, params=ApproxParams(n_postings=400, block_size=16),
                                    approx=approx).search_vectors(huge, 10)
    exact_ids, _, _ = Searcher(index).search_vectors(q[0], 10)
    assert counts[0] == 10 and set(ids[0]) & set(exact_ids[0])
