"""The live index through its API and CLI: adds, deletes, updates, merges, the document store,
the write lock, bad input and hostile files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import SPLADE_TINY
from reference import brute_force
from sparseir.errors import UsageError
from sparseir.index import IndexFormatError, IndexWriter, LockError, MergePolicy, open_index, write_index
from sparseir.index.format import checksum, sha256_file
from sparseir.search import ApproxParams, ApproxSearcher, Searcher

TERMS = [f"t{j}" for j in range(40)]


class Document(NamedTuple):
    """The shape of ``sparseir.corpus.Document`` (the writer reads these attributes)."""

    id: str
    text: str
    title: str = ""
    fields: dict | None = None


def rows(rng, n, n_dims=40, density=0.2):
    return sp.csr_matrix(((rng.random((n, n_dims)) < density) * rng.integers(1, 40, (n, n_dims)) / 8)
                         .astype(np.float32))


def live_state(index):
    x = index.to_csr()
    keep = np.concatenate([np.ones(s.n_docs, bool) if d is None else d == 0
                           for s, d in zip(index.segments, index.dead)]) if index.segments else np.zeros(0, bool)
    return index.live_ids(), x[np.flatnonzero(keep)]


@pytest.mark.parametrize("quantize", ["float32", "uint8"])
def test_adds_deletes_updates_rank_as_a_fresh_index(tmp_path, quantize):
    rng = np.random.default_rng(0)
    path = tmp_path / "live"
    model: dict[str, sp.csr_matrix] = {}
    policy = MergePolicy(merge_factor=3, min_docs=5)
    for step in range(8):
        with IndexWriter(path, terms=TERMS, quantize=quantize, merge_policy=policy, max_buffered_docs=13) as w:
            new = [f"d{step}-{i}" for i in range(int(rng.integers(5, 30)))]
            x = rows(rng, len(new))
            w.add(new, x)
            model.update({i: x[j] for j, i in enumerate(new)})
            keys = list(model)
            gone = list({keys[int(rng.integers(len(keys)))] for _ in range(4)})
            assert w.delete(gone + ["nope"]) == ["nope"]
            for i in gone:
                del model[i]
            keys = list(model)
            upd = list({keys[int(rng.integers(len(keys)))] for _ in range(3)})
            y = rows(rng, len(upd))
            w.update(upd, y)
            for j, i in enumerate(upd):
                del model[i]
                model[i] = y[j]
    live = open_index(path)
    assert len(live.segments) > 1 and live.n_deleted > 0
    ids, vectors = live_state(live)
    assert ids == list(model)
    queries = rows(rng, 20, density=0.3)
    searcher = Searcher(live)
    expected, _ = brute_force(live, queries, 10)
    got = searcher.search_vectors(queries, 10)
    for q, exp in enumerate(expected):  # exact search equals brute force through segments and deletions
        if quantize == "float32":  # dyadic weights: float sums are exact in any order
            assert list(zip(got[0][q, :got[2][q]].tolist(), got[1][q, :got[2][q]].tolist())) == exp
        else:  # the kernel folds the scale into the query: equal up to float rounding
            np.testing.assert_allclose(got[1][q, :got[2][q]], [sc for _, sc in exp], rtol=1e-5)
    live_hits = searcher.batch_search(queries, k=10)
    if quantize == "float32":  # the same documents in one fresh segment rank identically, ties included
        fresh = write_index(tmp_path / "fresh", ids, vectors, TERMS, quantize="float32")
        assert Searcher(fresh).batch_search(queries, k=10) == live_hits
    with IndexWriter(path) as w:
        w.optimize()
    optimized = Searcher(path)
    assert len(optimized.index.segments) == 1 and optimized.index.n_deleted == 0
    assert optimized.batch_search(queries, k=10) == live_hits  # merges keep order, impacts and scores
    for source in ("full", "pruned"):
        approx = ApproxSearcher(live, params=ApproxParams(source=source, query_cut=100, budget=0,
                                                          candidates=10**6))
        assert approx.batch_search(queries, k=10) == live_hits  # deleted docs never candidates


def test_document_store_and_doc(tmp_path):
    docs = [Document("a", "alpha text", "Alpha", {"year": 2001}), Document("b", "beta text", "Beta"),
            Document("c", "gamma text")]
    x = rows(np.random.default_rng(1), 3)
    with IndexWriter(tmp_path / "ix", terms=TERMS) as w:
        w.add(docs, x)
    s = Searcher(tmp_path / "ix")
    assert s.doc("a") == {"id": "a", "title": "Alpha", "text": "alpha text", "year": 2001}
    assert s.doc("c") == {"id": "c", "title": "", "text": "gamma text"} and s.doc("zz") is None
    with IndexWriter(tmp_path / "ix") as w:
        w.delete(["a"])
        w.update([Document("b", "beta v2", "Beta 2")], x[1])
    assert not s.refresh() or s.generation == 2
    assert s.doc("a") is None and s.doc("b")["text"] == "beta v2"
    with pytest.raises(KeyError, match="not in the index"):
        s.explain({"t1": 1.0}, "a")
    with IndexWriter(tmp_path / "ix") as w:
        w.optimize()
    s.refresh()
    assert s.doc("b")["title"] == "Beta 2" and len(s.index.segments) == 1
    assert s.index.stats()["store_bytes_per_doc"] > 0
    with IndexWriter(tmp_path / "nostore", terms=TERMS, store=False) as w:
        w.add(docs, x)
    assert Searcher(tmp_path / "nostore").doc("a") is None


def test_second_writer_gets_a_lock_error_naming_the_holder(tmp_path):
    write_index(tmp_path / "ix", ["a"], rows(np.random.default_rng(2), 1), TERMS)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from sparseir.index import IndexWriter; "
                               "w = IndexWriter(sys.argv[1]); print('held', flush=True); time.sleep(60)",
                               str(tmp_path / "ix")], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match=f"locked by another writer \\(pid {holder.pid} on "):
            IndexWriter(tmp_path / "ix")
        assert Searcher(tmp_path / "ix").search({"t1": 1.0}, k=1) is not None  # readers take no lock
    finally:
        holder.kill()
        holder.wait()
    IndexWriter(tmp_path / "ix").close()  # the lock died with its holder


def test_bad_input(tmp_path):
    rng = np.random.default_rng(3)
    path = write_index(tmp_path / "ix", ["a", "b"], rows(rng, 2), TERMS)
    with IndexWriter(path) as w:
        with pytest.raises(UsageError, match="'a' is already in the index.*upsert"):
            w.add(["c", "a"], rows(rng, 2))
        with pytest.raises(UsageError, match="duplicate document id 'c'"):
            w.add(["c", "c"], rows(rng, 2))
        with pytest.raises(UsageError, match="shape"):
            w.add(["c"], rows(rng, 2))
        assert w.delete(["zz", "a"]) == ["zz"]
    assert open_index(path).live_ids() == ["b"]  # failed adds changed nothing
    commit = sorted(path.glob("commit-*.json"))[-1]
    record = json.loads(commit.read_text())
    commit.write_text(json.dumps({**record, "settings": {**record["settings"], "scale": 2.0}}))
    with pytest.raises(IndexFormatError, match="commit-.*checksum mismatch"):
        IndexWriter(path)  # an add to a corrupt index
    with pytest.raises(IndexFormatError, match="commit-.*checksum mismatch"):
        open_index(path)
    commit.write_text(json.dumps([1]))
    with pytest.raises(IndexFormatError, match="commit-.*JSON list"):
        open_index(path)
    commit.write_text(json.dumps({**record, "version": "1"}))
    with pytest.raises(IndexFormatError, match="commit-.*version '1' is not an integer"):
        open_index(path)
    with pytest.raises(UsageError, match="k .* must be an integer >= 1"):
        Searcher(write_index(tmp_path / "ok", ["a"], rows(rng, 1), TERMS)).search({"t1": 1.0}, k=0)


def test_exceptions_leave_no_trace(tmp_path):
    rng = np.random.default_rng(4)
    for exc in (KeyboardInterrupt, SystemExit, RuntimeError):
        with pytest.raises(exc):
            with IndexWriter(tmp_path / "new", terms=TERMS, max_buffered_docs=2) as w:
                w.add(["a", "b", "c"], rows(rng, 3))
                raise exc()
        assert not (tmp_path / "new").exists()
    path = write_index(tmp_path / "ix", ["a"], rows(rng, 1), TERMS)
    before = sorted(p.name for p in path.rglob("*"))
    with pytest.raises(KeyboardInterrupt):
        with IndexWriter(path, max_buffered_docs=2) as w:
            w.add(["b", "c", "d"], rows(rng, 3))
            raise KeyboardInterrupt
    assert sorted(p.name for p in path.rglob("*")) == before


def hostile(path: Path, docs: np.ndarray) -> None:
    """Replace segment 0's postings_docs with ``docs`` and re-compute every checksum."""
    commit_file = sorted(path.glob("commit-*.json"))[-1]
    commit = json.loads(commit_file.read_text())
    seg = path / "segments" / commit["segments"][0]["name"]
    np.save(seg / "postings_docs.npy", docs)
    m = json.loads((seg / "manifest.json").read_text())
    m["files"]["docs"]["sha256"] = sha256_file(seg / "postings_docs.npy")
    m["checksum"] = checksum(m)
    (seg / "manifest.json").write_text(json.dumps(m))
    commit["segments"][0]["manifest_sha256"] = sha256_file(seg / "manifest.json")
    commit["checksum"] = checksum(commit)
    commit_file.write_text(json.dumps(commit))


@pytest.mark.parametrize("where", ["last", "middle"])
def test_hostile_postings_give_a_clear_error_not_a_segfault(tmp_path, where):
    rng = np.random.default_rng(5)
    path = write_index(tmp_path / "ix", [str(i) for i in range(50)], rows(rng, 50, density=0.5), TERMS)
    seg = open_index(path).segments[0]
    docs = np.array(seg.docs)
    lo, hi = int(seg.offsets[1]), int(seg.offsets[2])
    docs[hi - 1 if where == "last" else (lo + hi) // 2] = 10**9
    hostile(path, docs)
    s = Searcher(path)  # opening stays cheap and succeeds
    with pytest.raises(IndexFormatError, match="out of range"):
        s.search({"t1": 1.0}, k=5)
    with pytest.raises(IndexFormatError, match="out of range"):
        s.batch_search([{"t1": 1.0}, {"t1": 2.0}], k=5)
    with pytest.raises(IndexFormatError, match="beyond n_docs"):
        ApproxSearcher(path)
    from sparseir.cli import main

    assert main(["check", str(path)]) == 2


def test_add_segments_adopts_standalone_segments(tmp_path):
    from sparseir.index import write_segment

    rng = np.random.default_rng(6)
    path = write_index(tmp_path / "ix", ["a", "b"], rows(rng, 2), TERMS, quantize="float32")
    parts = [write_segment(tmp_path / f"part{i}", [f"p{i}-{j}" for j in range(5)], rows(rng, 5), TERMS,
                           quantize="float32") for i in range(2)]
    with IndexWriter(path) as w:
        w.add_segments(parts)
    assert open_index(path).live_ids() == ["a", "b"] + [f"p{i}-{j}" for i in range(2) for j in range(5)]
    with IndexWriter(path) as w, pytest.raises(UsageError, match="already in the index"):
        w.add_segments([parts[0]])


def test_merge_policy_bounds_the_segment_count(tmp_path):
    rng = np.random.default_rng(7)
    policy = MergePolicy(merge_factor=4, min_docs=10)
    path = tmp_path / "ix"
    counts = []
    for step in range(40):
        with IndexWriter(path, terms=TERMS, merge_policy=policy) as w:
            w.add([f"d{step}-{i}" for i in range(10)], rows(rng, 10))
        counts.append(len(open_index(path).segments))
    assert max(counts) <= 3 * 3 + 1  # (merge_factor - 1) per tier, log_4(400 / 10) tiers
    assert open_index(path).live_ids() == [f"d{s}-{i}" for s in range(40) for i in range(10)]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparseir.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def test_cli_live_commands(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": f"bone fracture {i} vitamin"})
                              + "\n" for i in range(6)))
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"_id": "d0", "title": "new", "text": "cells"}) + "\n" +
                    json.dumps({"_id": "x1", "title": "X", "text": "heart"}) + "\n")
    ix = tmp_path / "ix"
    enc = ["--encoder", str(SPLADE_TINY)]
    r = _cli("index", str(corpus), *enc, "--out", str(ix))
    assert r.returncode == 0, r.stderr
    r = _cli("add", str(ix), str(more))
    assert r.returncode == 2 and "'d0' is already in the index" in r.stderr
    r = _cli("add", str(ix), str(more), "--upsert")
    assert r.returncode == 0 and "added 2 documents" in r.stdout, r.stderr
    r = _cli("delete", str(ix), "d1", "nope")
    assert r.returncode == 2 and "deleted 1 documents" in r.stdout and "'nope'" in r.stderr
    r = _cli("info", str(ix))
    assert r.returncode == 0 and "n_deleted" in r.stdout and "segments (" in r.stdout, r.stderr
    r = _cli("optimize", str(ix))
    assert r.returncode == 0, r.stderr
    r = _cli("check", str(ix))
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    live = open_index(ix)
    assert live.live_ids() == ["d2", "d3", "d4", "d5", "d0", "x1"] and len(live.segments) == 1
    assert "cells" in live.doc("d0")["text"]
    # --overwrite replaces only a sparseir index; everything else is refused untouched
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "mine.txt").write_text("keep")
    r = _cli("index", str(corpus), *enc, "--out", str(precious), "--overwrite")
    assert r.returncode == 2 and "not a sparseir index" in r.stderr
    assert [p.name for p in precious.iterdir()] == ["mine.txt"]
    r = _cli("index", str(corpus), *enc, "--out", ".", "--overwrite", cwd=precious)
    assert r.returncode == 2 and "not a sparseir index" in r.stderr
    r = _cli("index", str(corpus), *enc, "--out", str(precious / "mine.txt" / "ix"))
    assert r.returncode == 2 and "is a file" in r.stderr
    for bad in ("0", "-1"):
        r = _cli("index", str(corpus), *enc, "--out", str(tmp_path / "k"), "--chunk-size", bad)
        assert r.returncode == 2 and "--chunk-size must be >= 1" in r.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    r = _cli("index", str(empty), *enc, "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and "--allow-empty" in r.stderr and not (tmp_path / "e").exists()
    r = _cli("index", str(empty), *enc, "--out", str(tmp_path / "e"), "--allow-empty", "--no-store")
    assert r.returncode == 0 and open_index(tmp_path / "e").n_docs == 0
    r = _cli("index", str(corpus), *enc, "--out", str(ix), "--overwrite", "--no-store")
    assert r.returncode == 0 and open_index(ix).live_ids() == [f"d{i}" for i in range(6)]


def test_info_check_and_help_import_neither_torch_nor_transformers(tmp_path):
    path = write_index(tmp_path / "ix", ["a"], rows(np.random.default_rng(8), 1), TERMS)
    code = ("import sys; from sparseir.cli import main; rc = [main(a) for a in ({cmds})]; "
            "assert rc == [0] * len(rc), rc; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    cmds = repr([["info", str(path)], ["check", str(path)]])[1:-1] + ","
    r = subprocess.run([sys.executable, "-c", code.format(cmds=cmds)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 0, r.stderr
    for command in ("index", "add", "delete", "optimize", "check", "info"):
        code = (f"import sys\nfrom sparseir.cli import main\ntry:\n    main(['{command}', '--help'])\n"
                "except SystemExit:\n    pass\nbad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
                "assert not bad, bad")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert r.returncode == 0, (command, r.stderr[-2000:])
