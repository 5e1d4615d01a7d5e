"""Sharded build and search on a real local Ray cluster (2 CPUs), with faults."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import pytest
import scipy.sparse as sp

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed")

from conftest import make_beir_slice  # noqa: E402
from sparseir.cli import main  # noqa: E402
from sparseir.corpus import load_corpus, load_queries  # noqa: E402
from sparseir.distributed import ShardedSearcher, ShardError, build_sharded_index, open_searcher  # noqa: E402
from sparseir.distributed.actors import RaySearcher  # noqa: E402
from sparseir.indexing import build_index  # noqa: E402
from sparseir.search import ApproxParams, Searcher  # noqa: E402
from test_distributed import serve_checks  # noqa: E402

CHUNK = 25  # documents per encoding batch, the same for every build so that the vectors are bit-identical


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_slice(tmp_path_factory):
    """75 SciFact documents with their judged test queries."""
    return make_beir_slice(tmp_path_factory.mktemp("scifact") / "scifact-75", 75)


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory, tiny_slice, splade_tiny):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray actor with one CPU
    try:
        out = build_index(load_corpus(tiny_slice), splade_tiny, tmp_path_factory.mktemp("flat") / "flat",
                          chunk_size=CHUNK, show_progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    return Searcher(out, splade_tiny)


@pytest.fixture(scope="module")
def ray_built(ray_cluster, tmp_path_factory, tiny_slice, splade_tiny, unsharded):
    """The slice encoded on 2 Ray actors into 3 shards, with the unsharded index's scale."""
    return build_sharded_index(load_corpus(tiny_slice), splade_tiny, tmp_path_factory.mktemp("ray") / "rt", 3,
                               chunk_size=CHUNK, workers=2, scale=unsharded.index.scale, show_progress_bar=False)


@pytest.fixture(scope="module")
def query_vectors(tiny_slice, splade_tiny):
    """The slice's queries encoded once, so that every comparison searches the very same vectors."""
    return splade_tiny.encode_query(list(load_queries(tiny_slice).values()))


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


def test_ray_build_and_search_equal_unsharded(ray_built, unsharded, query_vectors, tiny_slice, splade_tiny,
                                             capsys):
    want = unsharded.batch_search(query_vectors, k=100)
    assert ShardedSearcher(ray_built, splade_tiny).batch_search(query_vectors, k=100) == want  # ids and scores
    searcher = open_searcher(ray_built, ray=True, params=ApproxParams(query_cut=4))
    try:
        assert searcher.batch_search(query_vectors, k=10) == \
            ShardedSearcher(ray_built, splade_tiny, ApproxParams(query_cut=4)).batch_search(query_vectors, k=10)
    finally:
        searcher.close()
    searcher = open_searcher(ray_built, ray=True)
    try:
        assert isinstance(searcher, RaySearcher)
        assert searcher.batch_search(query_vectors, k=100) == want
        top = want["0"][0].doc_id
        assert searcher.explain(query_vectors[0], top) == unsharded.explain(query_vectors[0], top)
        assert searcher.doc(top) == unsharded.doc(top)
        text = next(iter(load_queries(tiny_slice).values()))
        assert [h.doc_id for h in searcher.search(text, k=10)] == [h.doc_id for h in unsharded.search(text, k=10)]
    finally:
        searcher.close()
    capsys.readouterr()
    assert main(["search", str(ray_built), text, "-k", "3", "--ray", "--json"]) == 0  # Ray already up: joined
    (res,) = json.loads(capsys.readouterr().out)
    assert [h["doc_id"] for h in res["hits"]] == [h.doc_id for h in unsharded.search(text, k=3)]


def test_serve_ray(ray_built, tiny_slice, splade_tiny, tmp_path):
    """``sparseir serve --ray``: the HTTP service over one Ray actor per shard."""
    sh = tmp_path / "sh"
    shutil.copytree(ray_built, sh)
    serve_checks(sh, ShardedSearcher(sh, splade_tiny), load_queries(tiny_slice), ray=True)


def test_killed_shard_actor_is_restarted_and_the_query_retried(ray_built, unsharded, query_vectors):
    queries = sp.vstack([query_vectors] * 200, format="csr")  # a batch long enough to be killed in flight
    want = unsharded.batch_search(queries, k=20)
    searcher = RaySearcher(ray_built)
    try:
        assert searcher.batch_search(queries, k=20) == want
        pid = ray.get(searcher.actors[1].__ray_call__.remote(lambda self: os.getpid()))
        results, retried = {}, []
        wait = searcher._wait_restarted
        searcher._wait_restarted = lambda shard: (retried.append(shard), wait(shard))
        thread = threading.Thread(target=lambda: results.update(searcher.batch_search(queries, k=20)))
        thread.start()  # the batch is in flight while shard 1 dies
        os.kill(pid, signal.SIGKILL)
        thread.join(120)
        assert results == want and retried == [1]  # the call on shard 1 failed, was retried after the restart
        assert searcher.batch_search(queries, k=20) == want  # and after the restart
        assert ray.get(searcher.actors[1].__ray_call__.remote(lambda self: os.getpid())) != pid
    finally:
        searcher.close()


def test_dead_shard_without_restarts_names_the_shard(ray_built):
    searcher = RaySearcher(ray_built, max_restarts=0, timeout=30)
    try:
        ray.kill(searcher.actors[1], no_restart=True)
        with pytest.raises(ShardError, match=r"shard 1 \(shard-001\)"):
            searcher.search("cancer", k=5)
    finally:
        searcher.close()


def test_killed_encoding_worker_build_completes(ray_cluster, tmp_path, tiny_slice, splade_tiny, unsharded,
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
    try:
        out = build_sharded_index(load_corpus(tiny_slice), splade_tiny, tmp_path / "rt", 2, chunk_size=CHUNK,
                                  workers=2, scale=unsharded.index.scale, show_progress_bar=False)
    except Exception:  # a clean failure: nothing published, no staging left
        thread.join()
        assert killed and list(tmp_path.iterdir()) == []
        raise
    thread.join()
    assert killed, "no encoding worker was caught mid-batch"
    want = unsharded.batch_search(query_vectors, k=100)
    assert ShardedSearcher(out, splade_tiny).batch_search(query_vectors, k=100) == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt"]  # no staging or temporary folder left
