"""The speed harness on a small corpus: shared order, child-process builds, exact peers equal brute force."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from bench import speed
from bench.speed_build import built
from bench.speed_corpora import df_curve, near_duplicates, save_csr
from bench.speed_engines import PISA_ALGORITHMS, make
from bench.synth import mixed_corpus, synthetic_corpus


def _random_docs(n: int, dims: int = 400, nnz: int = 30, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, dims + 1) ** 0.8  # Zipf-like term popularity
    rows = [np.unique(rng.choice(dims, size=nnz, p=p / p.sum())) for _ in range(n)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    data = rng.gamma(2.0, 0.5, size=indptr[-1]).astype(np.float32)
    return sp.csr_matrix((data, np.concatenate(rows), indptr), shape=(n, dims))


def test_mixed_corpus_keeps_df_curve_and_avoids_near_duplicates():
    base = _random_docs(300)
    mixed = mixed_corpus(base, 900, parents=3, seed=1)
    assert mixed.shape == (900, base.shape[1])
    for i in range(20):  # sorted, unique columns per row
        cols = mixed.indices[mixed.indptr[i]:mixed.indptr[i + 1]]
        assert np.all(np.diff(cols) > 0)
    b, m = df_curve(base), df_curve(mixed)
    top = min(len(b), len(m), 50)
    assert np.allclose(m[:top], b[:top], rtol=0.3, atol=0.02)  # df fractions follow the base's
    assert abs(mixed.nnz / mixed.shape[0] - base.nnz / base.shape[0]) < 0.25 * base.nnz / base.shape[0]
    old = synthetic_corpus(base, 900, seed=1)  # 70/30 pairs: every base row is the main parent of ~3 docs
    assert near_duplicates(mixed, sample=60)["share_nn_cosine_above_0.9"] < \
        near_duplicates(old, sample=60)["share_nn_cosine_above_0.9"]


def test_mixed_corpus_rejects_more_parents_than_rows():
    with pytest.raises(ValueError, match="parents"):
        mixed_corpus(_random_docs(2), 10, parents=3)


def test_quantized_queries_are_integers_up_to_the_levels():
    q = speed.quantize_queries(_random_docs(20, seed=3))
    assert np.all(q.data == np.rint(q.data)) and q.data.min() >= 1
    assert np.all(np.maximum.reduceat(q.data, q.indptr[:-1]) == speed.QUERY_LEVELS)


def test_truth_is_tie_aware(monkeypatch):
    monkeypatch.setattr(speed, "K", 2)
    docs = sp.csr_matrix(np.array([[3, 0], [2, 0], [2, 0], [0, 1]], dtype=np.float32))  # scores 3, 2, 2, 1
    queries = sp.csr_matrix(np.array([[1, 1]], dtype=np.float32))
    truth = speed.Truth([np.array([0, 1])], docs, queries)
    assert truth.compare([np.array([1, 0])]) == (1.0, 1.0)  # same documents, other order
    assert truth.compare([np.array([0, 2])]) == (1.0, 1.0)  # the tie broken the other way
    assert truth.compare([np.array([0, 3])]) == (0.5, 0.0)  # one below the exact 2nd score
    assert truth.compare([np.array([0, 0])]) == (0.5, 0.0)  # a duplicate counts once


def test_pareto_keeps_only_undominated_points():
    rs = [{"mean_us": 1, "recall@10": 0.5}, {"mean_us": 2, "recall@10": 0.4}, {"mean_us": 3, "recall@10": 0.9}]
    assert [r["mean_us"] for r in speed.pareto(rs)] == [1, 3]


@pytest.fixture
def corpus_dir(tmp_path):
    """A small corpus prepared as ``bench.speed.prepare`` does, in a shuffled shared order."""
    docs = _random_docs(500, seed=5)
    perm = np.random.default_rng(0).permutation(docs.shape[0])
    d = tmp_path / "c"
    d.mkdir()
    (d / "terms.txt").write_text("\n".join(f"t{i}" for i in range(docs.shape[1])), encoding="utf-8")
    (d / "ids.txt").write_text("\n".join(f"d{i}" for i in perm), encoding="utf-8")
    save_csr(d / "docs-float.npz", docs[perm])
    info = built("sparseir-index", {}, d, d / "sparseir")
    from sparseir.index import SparseIndex

    save_csr(d / "docs-int.npz", speed.integer_docs(SparseIndex.load(d / "sparseir" / "index")))
    return d, info, perm


def test_builds_run_in_a_child_and_are_cached(corpus_dir):
    d, info, _ = corpus_dir
    assert info["engine"] == "sparseir-index" and info["build_s"] > 0 and info["bytes"] > 0
    assert info["peak_rss_bytes"] >= info["rss_before_build_bytes"] > 0
    assert built("sparseir-index", {}, d, d / "sparseir") == info  # cached: not rebuilt
    assert not list(d.glob("*.tmp-*"))


def test_pisa_and_sparseir_exact_equal_brute_force(corpus_dir):
    d, _, perm = corpus_dir
    from bench.speed_engines import load_int_docs

    docs = load_int_docs(d)
    queries = speed.quantize_queries(_random_docs(30, seed=9))
    data = {"dir": d, "queries": queries, "docs": docs, "info": {"order": "test"},
            "corpus": SimpleNamespace(name="tiny", query_ids=[str(i) for i in range(30)], qrels=None)}
    args = SimpleNamespace(repeats=1, pass_budget=1.0, commit="test")
    exact = speed.measure(make("sparseir-exact"), json.loads((d / "sparseir" / "BUILT.json").read_text()),
                          [{}], data, None, args)
    truth = data["truth"]
    brute = (docs @ queries.T).toarray().T
    for i, top in enumerate(truth.top):
        assert np.array_equal(top, np.sort(brute[i][brute[i] > 0])[::-1][:10])
    pisa = make("pisa")
    recs = speed.measure(pisa, built("pisa", {}, d, d / pisa.key), pisa.points, data, truth, args)
    assert [r["point"]["algorithm"] for r in recs] == list(PISA_ALGORITHMS)
    for r in exact + recs:
        assert r["recall@10"] == 1.0 and r["top10_identical"] == 1.0, r
        assert r["peak_rss_bytes"] > 0 and r["bytes"] > 0


def test_headline_plan_and_targets_pick_each_peers_best():
    def rec(engine, us, recall, build=None, point=None, same=None):
        return {"engine": engine, "corpus": "c", "mean_us": us, "recall@10": recall, "build": build or {},
                "point": point or {}, "top10_identical": recall == 1.0 if same is None else same}

    swept = [rec("pisa", 900, 1.0, point={"algorithm": "wand"}), rec("pisa", 800, 1.0, point={"algorithm": "maxscore"}),
             rec("seismic", 100, 0.91, {"n_postings": 1}, {"query_cut": 3}),
             rec("seismic", 200, 0.96, {"n_postings": 2}, {"query_cut": 5}),
             rec("seismic", 150, 0.97, {"n_postings": 1}, {"query_cut": 10}),
             rec("bmp", 500, 0.99, {"bsize": 16}, {"alpha": 1.0, "beta": 1.0}, same=0.9),  # not exact: overflow
             rec("sparseir-approx", 90, 0.93, {"keep": 0.3}, {"candidates": 50}),
             rec("sparseir-approx", 130, 0.96, {}, {"source": "full"})]
    plan = {(e, json.dumps(b, sort_keys=True)): p for e, b, p in speed.headline_plan(swept)}
    assert plan[("pisa", "{}")] == [{"algorithm": "maxscore"}]
    assert plan[("seismic", '{"n_postings": 1}')] == [{"query_cut": 3}, {"query_cut": 10}]  # 0.90; 0.95 and 0.99
    assert ("seismic", '{"n_postings": 2}') not in plan  # dominated
    assert plan[("sparseir-approx", '{"keep": 0.3}')] == [{"candidates": 50}]  # its fastest at 0.90
    assert plan[("sparseir-approx", "{}")] == [{"source": "full"}]  # at 0.95 and 0.99
    head = [rec("sparseir-exact", 400, 1.0), rec("sparseir-approx", 60, 0.92, point={"query_cut": 2}),
            rec("sparseir-approx", 120, 0.97)] + swept
    t = speed.targets(head, "c")
    assert t["exact_vs_pisa"]["met"] and t["exact_vs_pisa"]["ratio"] == 0.5
    assert "exact_vs_bmp" not in t  # BMP never returned exact results
    assert t["approx_vs_seismic@0.90"]["met"] and t["approx_vs_seismic@0.90"]["ratio"] == 0.6
    assert not t["approx_vs_seismic@0.95"]["met"]  # 120 > 0.7 * 150
    assert t["approx_vs_seismic@0.99"]["ratio"] is None and not t["approx_vs_seismic@0.99"]["met"]
