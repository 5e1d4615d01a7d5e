"""Sharded build and search on a real local Ray cluster (2 CPUs), with faults."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed")

from sparseir.corpus import load_corpus, load_queries  # noqa: E402
from sparseir.distributed import ShardedSearcher, ShardError, build_sharded_index, open_searcher  # noqa: E402
from sparseir.distributed.actors import RaySearcher  # noqa: E402
from sparseir.indexing import build_index  # noqa: E402
from sparseir.search import ApproxParams, Searcher  # noqa: E402
from test_distributed import as_dict  # noqa: E402

CHUNK = 50  # documents per encoding batch, the same for every build so that the vectors are bit-identical


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory, scifact_slice, splade_tiny):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = build_index(load_corpus(scifact_slice), splade_tiny, tmp_path_factory.mktemp("flat") / "flat",
                          chunk_size=CHUNK, show_progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    return Searcher(out, splade_tiny)


@pytest.fixture(scope="module")
def ray_built(ray_cluster, tmp_path_factory, scifact_slice, splade_tiny):
    return build_sharded_index(load_corpus(scifact_slice), splade_tiny, tmp_path_factory.mktemp("ray") / "rt", 3,
                               chunk_size=CHUNK, workers=2, show_progress_bar=False)


@pytest.fixture(scope="module")
def query_vectors(scifact_slice, splade_tiny):
    """The slice's queries encoded once, so that every comparison searches the very same vectors."""
    return list(splade_tiny.encode_query(list(load_queries(scifact_slice).values())))


def _descendants(root: int) -> set[int]:
    """Processes below ``root`` (this test's local Ray cluster), never anyone else's."""
    parents = {}
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/stat", encoding="ascii", errors="replace") as f:
                parents[int(p)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _pids(title: bytes) -> list[int]:
    """This test's processes whose title (set by Ray) starts with ``title``."""
    pids = []
    for p in _descendants(os.getpid()):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if f.read().startswith(title):
                    pids.append(p)
        except OSError:
            continue
    return pids


def test_ray_build_and_search_equal_unsharded(ray_built, unsharded, query_vectors, scifact_slice, splade_tiny):
    queries = query_vectors
    want = as_dict(unsharded.batch_search(queries, k=100))
    local = ShardedSearcher(ray_built, splade_tiny)
    assert local.batch_search(queries, k=100) == want  # ids and scores
    searcher = open_searcher(ray_built, ray=True, params=ApproxParams())
    try:
        assert searcher.batch_search(queries, k=10) == ShardedSearcher(ray_built, splade_tiny, ApproxParams()) \
            .batch_search(queries, k=10)
    finally:
        searcher.close()
    searcher = open_searcher(ray_built, ray=True)
    try:
        assert isinstance(searcher, RaySearcher)
        assert searcher.batch_search(queries, k=100) == want
        top = want["0"][0].doc_id
        assert searcher.explain(queries[0], top) == unsharded.explain(queries[0], top)
        text = next(iter(load_queries(scifact_slice).values()))
        assert [h.doc_id for h in searcher.search(text, k=10)] == [h.doc_id for h in unsharded.search(text, k=10)]
    finally:
        searcher.close()


def test_killed_shard_actor_is_restarted_and_the_query_retried(ray_built, unsharded, query_vectors):
    queries = query_vectors
    want = as_dict(unsharded.batch_search(queries, k=20))
    searcher = RaySearcher(ray_built)
    try:
        assert searcher.batch_search(queries, k=20) == want
        pid = ray.get(searcher.actors[1].__ray_call__.remote(lambda self: os.getpid()))
        results = {}
        thread = threading.Thread(target=lambda: results.update(searcher.batch_search(queries, k=20)))
        thread.start()  # the batch is in flight while shard 1 dies
        os.kill(pid, signal.SIGKILL)
        thread.join(120)
        assert results == want
        assert searcher.batch_search(queries, k=20) == want  # and after the restart
        assert ray.get(searcher.actors[1].__ray_call__.remote(lambda self: os.getpid())) != pid
    finally:
        searcher.close()


def test_dead_shard_without_restarts_names_the_shard(ray_built, scifact_slice):
    searcher = RaySearcher(ray_built, max_restarts=0, timeout=30)
    try:
        ray.kill(searcher.actors[1], no_restart=True)
        with pytest.raises(ShardError, match=r"shard 1 \(shard-001\)"):
            searcher.search("cancer", k=5)
    finally:
        searcher.close()


def test_killed_encoding_worker_build_completes(ray_cluster, tmp_path, scifact_slice, splade_tiny, unsharded,
                                               query_vectors):
    killed = []

    def kill_one_busy_worker():
        deadline = time.time() + 120
        while not killed and time.time() < deadline:
            for pid in _pids(b"ray::MapWorker(MapBatches(EncodeToShards)).submit"):
                os.kill(pid, signal.SIGKILL)  # mid-batch: the worker is running a batch
                killed.append(pid)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=kill_one_busy_worker)
    thread.start()
    out = build_sharded_index(load_corpus(scifact_slice), splade_tiny, tmp_path / "rt", 2, chunk_size=CHUNK,
                              workers=2, show_progress_bar=False)
    thread.join()
    assert killed, "no encoding worker was caught mid-batch"
    want = as_dict(unsharded.batch_search(query_vectors, k=100))
    assert ShardedSearcher(out, splade_tiny).batch_search(query_vectors, k=100) == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt"]  # no staging or temporary folder left


@pytest.mark.slow
def test_full_scifact_eval_through_ray_shards_equals_unsharded(ray_cluster, tmp_path, splade_tiny):
    """Full SciFact encoded once; the unsharded index and 4 Ray shards give the same run and nDCG@10."""
    from conftest import SCIFACT
    from sparseir.corpus import load_qrels
    from sparseir.distributed import write_sharded_index
    from sparseir.evaluate import evaluate, run_from_hits
    from sparseir.index import write_index

    docs = list(load_corpus(SCIFACT))
    x = splade_tiny.encode_document([d.text for d in docs], show_progress_bar=False)
    ids = [d.id for d in docs]
    qrels = load_qrels(SCIFACT)
    queries = {q: t for q, t in load_queries(SCIFACT).items() if q in qrels}
    vectors = list(splade_tiny.encode_query(list(queries.values())))
    flat = Searcher(write_index(tmp_path / "flat", ids, x, splade_tiny.terms), splade_tiny)
    want = dict(zip(queries, as_dict(flat.batch_search(vectors, k=100)).values()))
    searcher = RaySearcher(write_sharded_index(tmp_path / "sh", ids, x, splade_tiny.terms, 4))
    try:
        got = searcher.batch_search(vectors, qids=list(queries), k=100)
    finally:
        searcher.close()
    assert got == want
    ndcg = evaluate(run_from_hits(got), qrels)["nDCG@10"]
    assert ndcg == evaluate(run_from_hits(want), qrels)["nDCG@10"]
    assert ndcg > 0.6  # splade-tiny measured 0.644 (bench/results/core.md)
