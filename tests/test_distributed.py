"""Sharded indexes without Ray: routing, the exact merge, in-process build and search."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from sparseir.corpus import load_corpus, load_queries
from sparseir.distributed import (ShardedSearcher, ShardMap, ShardMapError, build_sharded_index, open_searcher,
                                  route, shard_of, write_sharded_index)
from sparseir.errors import UsageError
from sparseir.index import write_index
from sparseir.search import ApproxParams, ApproxSearcher, Searcher


def as_dict(results) -> dict:
    """``batch_search`` results keyed by query position (the unsharded searcher may return a list)."""
    return results if isinstance(results, dict) else {str(i): h for i, h in enumerate(results)}


@pytest.fixture(scope="module")
def slice_vectors(scifact_slice, splade_tiny):
    """The SciFact slice encoded once: ids, CSR vectors, query vectors."""
    docs = list(load_corpus(scifact_slice))
    queries = load_queries(scifact_slice)
    return ([d.id for d in docs], splade_tiny.encode_document([d.text for d in docs], show_progress_bar=False),
            queries, splade_tiny.encode_query(list(queries.values())))


def test_routing_is_blake2b_and_stable_across_processes():
    ids = [f"doc{i}" for i in range(2000)]
    expected = [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") % 4 for i in ids]
    assert route(ids, 4).tolist() == expected == [shard_of(i, 4) for i in ids]
    assert np.bincount(expected, minlength=4).min() > 400  # roughly balanced
    code = "from sparseir.distributed import route; print(route(['doc%d' % i for i in range(2000)], 4).tolist())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", **{k: v for k, v in __import__("os").environ.items()
                                                             if k != "PYTHONHASHSEED"}})
    assert json.loads(other.stdout) == expected


def _tie_heavy(n_docs: int = 600, n_dims: int = 40, seed: int = 0) -> sp.csr_matrix:
    """Small integer weights on few dimensions: many documents share a score."""
    rng = np.random.default_rng(seed)
    dense = rng.integers(0, 3, size=(n_docs, n_dims)) * (rng.random((n_docs, n_dims)) < 0.15)
    return sp.csr_matrix(dense.astype(np.float32))


@pytest.mark.parametrize("quantize", ["uint8", "float32"])
@pytest.mark.parametrize("shards", [1, 3, 7])
def test_merge_is_exact_with_ties(tmp_path, quantize, shards):
    x = _tie_heavy()
    ids = [f"d{i:04d}" for i in range(x.shape[0])]
    terms = [f"t{j}" for j in range(x.shape[1])]
    flat = Searcher(write_index(tmp_path / "flat", ids, x, terms, quantize=quantize))
    sharded = ShardedSearcher(write_sharded_index(tmp_path / "sh", ids, x, terms, shards, quantize=quantize,
                                                  chunk_size=97))
    queries = _tie_heavy(50, x.shape[1], seed=1)
    queries = queries[np.diff(queries.indptr) > 0]
    brute = (queries @ flat.index.to_csr().T).toarray()  # on the stored (quantised) weights
    for k in (1, 5, 40, 1000):
        got = sharded.batch_search(list(queries), k=k)
        want = flat.batch_search(list(queries), k=k)
        assert got == as_dict(want)
        for q, hits in got.items():  # and brute force: score descending, ties by insertion order
            row = brute[int(q)]
            order = [i for i in np.lexsort((np.arange(len(row)), -row)) if row[i] > 0][:k]
            assert [h.doc_id for h in hits] == [ids[i] for i in order]
        assert k == 1 or sum(len(h) - len({s for _, s in h}) for h in got.values()) > 0  # the test has ties to break


def test_sharded_equals_unsharded_on_scifact_slice(tmp_path, slice_vectors, splade_tiny):
    ids, x, queries, qx = slice_vectors
    flat = Searcher(write_index(tmp_path / "flat", ids, x, splade_tiny.terms), splade_tiny)
    sharded = ShardedSearcher(write_sharded_index(tmp_path / "sh", ids, x, splade_tiny.terms, 4, chunk_size=64),
                              splade_tiny)
    assert sharded.n_shards == 4
    assert sharded.batch_search(list(qx), k=100) == as_dict(flat.batch_search(list(qx), k=100))
    text = next(iter(queries.values()))
    hits = sharded.search(text, k=10)
    assert hits == flat.search(text, k=10)
    assert sharded.explain(text, hits[0].doc_id) == flat.explain(text, hits[0].doc_id)
    params = ApproxParams()
    approx = ShardedSearcher(tmp_path / "sh", splade_tiny, params)
    assert [h.doc_id for h in approx.search(text, 10)][:3] == \
        [h.doc_id for h in ApproxSearcher(tmp_path / "flat", splade_tiny, params).search(text, 10)][:3]


def test_in_process_build(tmp_path, scifact_slice, splade_tiny, slice_vectors, one_torch_thread):
    out = build_sharded_index(load_corpus(scifact_slice), splade_tiny, tmp_path / "sh", 3, ray=False,
                              chunk_size=100, show_progress_bar=False)
    searcher = open_searcher(out)
    assert isinstance(searcher, ShardedSearcher)
    ids, x, _, qx = slice_vectors
    assert sorted(i for s in searcher._shards for i in s.searcher.index.doc_ids.tolist()) == sorted(ids)
    for s, shard in enumerate(searcher._shards):
        assert all(shard_of(i, 3) == s for i in shard.searcher.index.doc_ids.tolist())
        assert np.all(np.diff(shard.seqs) > 0)
    build = json.loads((out / "build.json").read_text())
    assert build["n_docs"] == len(ids) and build["ray"] is False
    assert not (out / "staging").exists()


def test_errors(tmp_path, slice_vectors, splade_tiny):
    ids, x, _, qx = slice_vectors
    with pytest.raises(UsageError, match="--shards"):
        write_sharded_index(tmp_path / "bad", ids, x, splade_tiny.terms, 0)
    bad = x.copy()
    bad.data[5] = np.nan
    with pytest.raises(ValueError, match="finite"):
        write_sharded_index(tmp_path / "nan", ids, bad, splade_tiny.terms, 2)
    assert not (tmp_path / "nan").exists() and not list(tmp_path.glob(".nan*"))  # nothing published
    out = write_sharded_index(tmp_path / "sh", ids, x, splade_tiny.terms, 2)
    with pytest.raises(FileExistsError):
        write_sharded_index(out, ids, x, splade_tiny.terms, 2)
    with pytest.raises(UsageError, match="k must be"):
        ShardedSearcher(out).search(qx[0], k=0)
    (out / "shards.json").write_text("{not json")
    with pytest.raises(ShardMapError, match="shards.json"):
        ShardedSearcher(out)
    (out / "shards.json").write_text(json.dumps({"n_shards": 2, "hash": "python-hash"}))
    with pytest.raises(ShardMapError, match="unsupported"):
        ShardMap.load(out)
    with pytest.raises(ShardMapError, match="not a sharded index"):
        ShardMap.load(tmp_path)
