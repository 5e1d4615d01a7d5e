"""Sharded indexes without Ray: routing, the exact merge, live writes, in-process build and search, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import SCIFACT, SPLADE_TINY, make_beir_slice
from sparseir.cli import main
from sparseir.corpus import Document, load_corpus, load_qrels, load_queries
from sparseir.distributed import (ShardedSearcher, ShardedWriter, ShardMap, ShardMapError, build_sharded_index,
                                  open_searcher, route, shard_of, write_sharded_index)
from sparseir.errors import UsageError
from sparseir.evaluate import evaluate
from sparseir.index import IndexWriter, LockError, write_index
from sparseir.indexing import add_documents
from sparseir.search import ApproxParams, ApproxSearcher, Searcher, to_run

CHUNK = 40  # documents per encoding chunk, the same for every build so that the vectors are bit-identical


@pytest.fixture(scope="module")
def small_slice(tmp_path_factory):
    """120 SciFact documents with their judged test queries (every build here encodes it once)."""
    return make_beir_slice(tmp_path_factory.mktemp("scifact") / "scifact-120", 120)


@pytest.fixture(scope="module")
def built(small_slice, splade_tiny, tmp_path_factory):
    """The slice built in process as 3 shards (scale from the first chunk) and as one index with that scale."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("built")
        sharded = build_sharded_index(load_corpus(small_slice), splade_tiny, root / "sh", 3, ray=False,
                                      chunk_size=CHUNK, show_progress_bar=False)
        scale = json.loads((sharded / "build.json").read_text())["scale"]
        with IndexWriter(root / "flat", splade_tiny, scale=scale, create=True) as w:
            add_documents(w, load_corpus(small_slice), chunk_size=CHUNK, show_progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    return sharded, root / "flat"


def test_routing_is_blake2b_and_stable_across_processes():
    ids = [f"doc{i}" for i in range(2000)]
    expected = [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") % 4 for i in ids]
    assert route(ids, 4).tolist() == expected == [shard_of(i, 4) for i in ids]
    assert np.bincount(expected, minlength=4).min() > 400  # roughly balanced
    code = "from sparseir.distributed import route; print(route(['doc%d' % i for i in range(2000)], 4).tolist())"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(other.stdout) == expected


def _tie_heavy(n_docs: int = 600, n_dims: int = 40, seed: int = 0) -> sp.csr_matrix:
    """Small integer weights on few dimensions: many documents share a score."""
    rng = np.random.default_rng(seed)
    dense = rng.integers(0, 3, size=(n_docs, n_dims)) * (rng.random((n_docs, n_dims)) < 0.15)
    return sp.csr_matrix(dense.astype(np.float32))


def _queries(n_dims: int) -> list[sp.csr_matrix]:
    q = _tie_heavy(50, n_dims, seed=1)
    return list(q[np.diff(q.indptr) > 0])


@pytest.mark.parametrize("quantize", ["uint8", "float32"])
@pytest.mark.parametrize("shards", [1, 3, 7])
def test_merge_is_exact_with_ties(tmp_path, quantize, shards):
    x = _tie_heavy()
    ids = [f"d{i:04d}" for i in range(x.shape[0])]
    terms = [f"t{j}" for j in range(x.shape[1])]
    flat = Searcher(write_index(tmp_path / "flat", ids, x, terms, quantize=quantize))
    sharded = ShardedSearcher(write_sharded_index(tmp_path / "sh", ids, x, terms, shards, quantize=quantize))
    queries = _queries(x.shape[1])
    brute = (sp.vstack(queries) @ flat.index.to_csr().T).toarray()  # on the stored (quantised) weights
    for k in (1, 5, 40, 1000):
        got = sharded.batch_search(queries, k=k)
        assert got == flat.batch_search(queries, k=k)
        for q, hits in got.items():  # and brute force: score descending, ties by insertion order
            row = brute[int(q)]
            order = [i for i in np.lexsort((np.arange(len(row)), -row)) if row[i] > 0][:k]
            assert [h.doc_id for h in hits] == [ids[i] for i in order]
        assert k == 1 or sum(len(h) - len({s for _, s in h}) for h in got.values()) > 0  # the test has ties to break


def test_sharded_writer_add_update_delete_equal_one_index(tmp_path):
    """The same writes on a sharded index and on one index give the same ids and scores, ties included."""
    x = _tie_heavy(900)
    terms = [f"t{j}" for j in range(x.shape[1])]
    ids = [f"d{i:04d}" for i in range(900)]
    scale = float(x.max()) / 255
    flat = IndexWriter(tmp_path / "flat", terms=terms, scale=scale, store=False)
    sharded = ShardedWriter(tmp_path / "sh", terms=terms, shards=4)  # scale: fixed by the first add
    rng = np.random.default_rng(3)
    steps = [("add", slice(0, 500)), ("commit",), ("delete", rng.choice(500, 60, replace=False)),
             ("update", rng.choice(500, 80, replace=False)), ("add", slice(500, 700)), ("commit",),
             ("optimize",), ("delete", rng.choice(700, 40, replace=False)), ("update", rng.choice(700, 40)),
             ("add", slice(700, 900)), ("commit",)]
    n_seqs = 0
    for step in steps:
        n_seqs += len(set(step[1].tolist())) if step[0] == "update" else len(ids[step[1]]) if step[0] == "add" else 0
        for w in (flat, sharded):
            if step[0] == "add":
                w.add(ids[step[1]], x[step[1]])
            elif step[0] == "update":
                rows = sorted(set(step[1].tolist()))  # new vectors for old ids: the rows shifted by one
                w.update([ids[r] for r in rows], x[[(r + 1) % 900 for r in rows]])
            elif step[0] == "delete":
                assert w.delete([ids[r] for r in step[1]] + ["nope"])[-1] == "nope"
            else:
                getattr(w, step[0])()
    assert sharded.scale == scale
    flat.close()
    sharded.close()
    one, many = Searcher(tmp_path / "flat"), ShardedSearcher(tmp_path / "sh")
    assert many.n_docs == one.index.n_docs
    queries = _queries(x.shape[1])
    for k in (3, 50, 1000):
        assert many.batch_search(queries, k=k) == one.batch_search(queries, k=k)
    with ShardedWriter(tmp_path / "sh") as w:  # reopened: the shard map's sequence numbers go on
        assert w.map.next_seq == n_seqs and w.scale == scale
        with pytest.raises(UsageError, match="already in the index"):
            w.add([ids[899], "new"], x[:2])
        with pytest.raises(LockError):
            ShardedWriter(tmp_path / "sh")
    assert ShardedSearcher(tmp_path / "sh").n_docs == many.n_docs  # the failed add added nothing


def test_sharded_equals_unsharded_on_a_scifact_slice(built, small_slice, splade_tiny):
    sharded_path, flat_path = built
    flat, sharded = Searcher(flat_path, splade_tiny), ShardedSearcher(sharded_path, splade_tiny)
    assert sharded.n_shards == 3 and sharded.n_docs == flat.index.n_docs == 120
    for s, shard in enumerate(sharded._shards):
        assert all(shard_of(i, 3) == s for i in shard.searcher.index.live_ids())
    queries = load_queries(small_slice)
    assert sharded.batch_search(queries, k=100) == flat.batch_search(queries, k=100)
    text = next(iter(queries.values()))
    hits = sharded.search(text, k=10)
    assert hits == flat.search(text, k=10)
    assert sharded.explain(text, hits[0].doc_id) == flat.explain(text, hits[0].doc_id)
    assert sharded.doc(hits[0].doc_id) == flat.doc(hits[0].doc_id) and sharded.doc("nope") is None
    params = ApproxParams(query_cut=4)
    approx = ShardedSearcher(sharded_path, splade_tiny, params)
    assert approx.batch_search(queries, k=10) == ApproxSearcher(flat_path, splade_tiny, params).batch_search(
        queries, k=10)
    build = json.loads((sharded_path / "build.json").read_text())
    assert build["n_docs"] == 120 and build["ray"] is False
    assert sorted(p.name for p in sharded_path.parent.iterdir()) == ["flat", "sh"]  # no staging left


def test_cli_on_a_sharded_index(built, small_slice, tmp_path, capsys):
    sharded_path, flat_path = built
    sh, flat = tmp_path / "sh", tmp_path / "flat"
    shutil.copytree(sharded_path, sh)
    shutil.copytree(flat_path, flat)
    capsys.readouterr()
    outputs = []
    for path in (flat, sh):
        assert main(["eval", str(path), str(small_slice), "--json"]) == 0
        scores = json.loads(capsys.readouterr().out)
        outputs.append({k: scores[k] for k in ("queries", "nDCG@10", "R@100", "RR@10")})
    assert outputs[0] == outputs[1]
    first = next(iter(load_corpus(small_slice))).id
    extra = tmp_path / "extra.jsonl"
    extra.write_text("".join(json.dumps({"_id": f"x{i}", "title": "", "text": t}) + "\n"
                             for i, t in enumerate(["stem cells in glioma", "vitamin D and bones"])))
    for path in (flat, sh):
        assert main(["add", str(path), str(extra)]) == 0
        assert main(["delete", str(path), first, "x1"]) == 0
        assert main(["add", str(path), str(extra)]) == 2  # x0 is already there
        assert main(["search", str(path), "glioma stem cells", "-k", "5", "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out.split("\n", 2)[-1]))
    assert outputs[2] == outputs[3] and "x0" in [h["doc_id"] for h in outputs[3][0]["hits"]]
    assert main(["info", str(sh), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_shards"] == 3 and info["n_docs"] == 120 + 2 - 2
    assert main(["check", str(sh)]) == 0 and main(["optimize", str(sh)]) == 0
    capsys.readouterr()
    assert main(["optimize", str(sh), "--reorder", "--approx"]) == 0  # every shard, and its approx structures
    assert capsys.readouterr().out.count("approximate-search structures") == 3
    assert main(["search", str(sh), "glioma stem cells", "-k", "5", "--json"]) == 0
    reordered = json.loads(capsys.readouterr().out)
    assert [(h["doc_id"], round(h["score"], 4)) for h in reordered[0]["hits"]] == \
        [(h["doc_id"], round(h["score"], 4)) for h in outputs[3][0]["hits"]]
    assert main(["index", str(small_slice), "--encoder", str(SPLADE_TINY), "--out", str(tmp_path / "y"),
                 "--shards", "2", "--reorder"]) == 2
    assert main(["search", str(flat), "q", "--ray"]) == 2  # --ray needs a sharded index
    assert main(["index", str(small_slice), "--encoder", str(SPLADE_TINY), "--out", str(tmp_path / "x"),
                 "--shards", "0"]) == 2
    assert main(["index", str(small_slice), "--encoder", str(SPLADE_TINY), "--out", str(tmp_path / "x"),
                 "--ray"]) == 2  # --ray needs --shards
    assert "--shards" in capsys.readouterr().err


def _bm25_vectors():
    """Full SciFact as BM25 weights over the splade-tiny word pieces (k1=0.9, b=0.4), queries as term counts.

    Encoding 5,183 documents with splade-tiny takes about 8 minutes on 2 CPU cores; these vectors
    take seconds and give a real ranking over the whole corpus.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(SPLADE_TINY))
    docs = list(load_corpus(SCIFACT))
    qrels = load_qrels(SCIFACT)
    queries = {q: t for q, t in load_queries(SCIFACT).items() if q in qrels}
    n = len(tok)

    def counts(texts):
        pieces = tok(texts, add_special_tokens=False)["input_ids"]
        rows = np.repeat(np.arange(len(pieces)), [len(p) for p in pieces])
        return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, np.concatenate(pieces))), shape=(len(texts), n))

    tf = counts([d.text for d in docs])
    length = np.asarray(tf.sum(axis=1)).ravel()
    df = np.bincount(tf.indices, minlength=n)
    idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5)).astype(np.float32)
    norm = (0.9 * (1 - 0.4 + 0.4 * length / length.mean())).astype(np.float32)
    x = tf.copy()
    x.data = x.data * 1.9 / (x.data + np.repeat(norm, np.diff(x.indptr))) * idf[x.indices]
    terms = tok.convert_ids_to_tokens(list(range(n)))
    return [d.id for d in docs], x, terms, queries, counts(list(queries.values())), qrels


def test_full_scifact_eval_sharded_equals_unsharded(tmp_path):
    """All 5,183 SciFact documents, all judged test queries: 4 shards give the run and nDCG@10 of one index."""
    ids, x, terms, queries, qx, qrels = _bm25_vectors()
    assert len(ids) == 5183 and len(queries) == 300
    flat = Searcher(write_index(tmp_path / "flat", ids, x, terms))
    sharded = open_searcher(write_sharded_index(tmp_path / "sh", ids, x, terms, 4))
    want = flat.batch_search(qx, qids=list(queries), k=100)
    got = sharded.batch_search(qx, qids=list(queries), k=100)
    assert got == want  # ids and scores
    ndcg = evaluate(to_run(got), qrels)["nDCG@10"]
    assert ndcg == evaluate(to_run(want), qrels)["nDCG@10"]
    assert ndcg > 0.5  # BM25 over word pieces, without stemming


def test_errors(tmp_path):
    x = _tie_heavy(50)
    ids, terms = [f"d{i}" for i in range(50)], [f"t{j}" for j in range(x.shape[1])]
    with pytest.raises(UsageError, match="--shards"):
        write_sharded_index(tmp_path / "bad", ids, x, terms, 0)
    bad = x.copy()
    bad.data[5] = np.nan
    with pytest.raises(UsageError, match="finite"):
        write_sharded_index(tmp_path / "nan", ids, bad, terms, 2)
    assert not list(tmp_path.iterdir())  # nothing published
    out = write_sharded_index(tmp_path / "sh", ids, x, terms, 2)
    with pytest.raises(UsageError, match="already exists"):
        write_sharded_index(out, ids, x, terms, 2)
    with pytest.raises(UsageError, match="2 shards, not 3"):
        ShardedWriter(out, shards=3)
    with pytest.raises(UsageError, match="unsharded index"):
        ShardedWriter(write_index(tmp_path / "flat", ids, x, terms), shards=2)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a sparseir index"):
        ShardedWriter(tmp_path / "junk", terms=terms, shards=2)
    with pytest.raises(UsageError, match="k .* must be"):
        ShardedSearcher(out).search(x[0], k=0)
    with pytest.raises(UsageError, match="--shards must"):
        build_sharded_index([Document("a", "b")], None, tmp_path / "b", 0)
    (out / "shards.json").write_text("{not json")
    with pytest.raises(ShardMapError, match="shards.json"):
        ShardedSearcher(out)
    (out / "shards.json").write_text(json.dumps({"n_shards": 2, "hash": "python-hash"}))
    with pytest.raises(ShardMapError, match="unsupported"):
        ShardMap.load(out)
    with pytest.raises(ShardMapError, match="not a sharded index"):
        ShardMap.load(tmp_path)


def serve_checks(path, searcher, queries, ray: bool = False) -> None:
    """The HTTP service over a sharded index answers as ``searcher``, and takes writes routed by id."""
    from fastapi.testclient import TestClient

    from sparseir.serve.app import create_app
    from sparseir.serve.config import ServeConfig

    with TestClient(create_app(ServeConfig(index=str(path), refresh_seconds=0, ray=ray))) as client:
        texts = list(queries.values())[:5]
        r = client.post("/search", json={"queries": texts, "k": 10, "explain": True}).json()
        want = searcher.batch_search(texts, k=10)
        for res, hits in zip(r["results"], want.values()):
            assert [(h["doc_id"], h["score"]) for h in res["hits"]] == [tuple(h) for h in hits]
        assert client.post("/search", json={"query": texts[0], "approx": {}}).status_code == 400
        doc = {"id": "new-1", "title": "Glioma", "text": "glioma stem cells and their niche"}
        assert client.post("/documents", json={"documents": [doc]}).status_code == 200
        assert client.get("/documents/new-1").json()["title"] == "Glioma"
        hits = client.post("/search", json={"query": "glioma stem cells niche", "k": 3}).json()["hits"]
        assert "new-1" in [h["doc_id"] for h in hits]
        assert client.delete("/documents/new-1").status_code == 200
        stats = client.get("/stats").json()
        assert stats["n_shards"] == searcher.n_shards and stats["n_docs"] == searcher.n_docs


def test_serve_a_sharded_index(built, small_slice, tmp_path, splade_tiny):
    sh = tmp_path / "sh"
    shutil.copytree(built[0], sh)
    serve_checks(sh, ShardedSearcher(sh, splade_tiny), load_queries(small_slice))
