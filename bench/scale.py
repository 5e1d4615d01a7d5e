"""Scale-out benchmark: Ray's encoding overhead, sharded search latency/QPS, memory per posting and doc.

    flock /work/bench.lock python -m bench.scale                 # writes bench/results/scale.{md,json}
    python -m bench.scale --encode-docs 500 --search-docs 20000  # a quicker run

1. Encoding docs/s on realtext with splade-tiny (256 tokens): the plain in-process ``build_index``
   against ``build_sharded_index`` on a local Ray (one encoding actor per CPU), same documents.
2. Search on the cached realtext vectors (``bench/vectors.py``): single-query p50/p99 latency and
   batch QPS for the unsharded index and for 1, 2 and 4 shards, searched in-process (a loop over
   shards) and through Ray shard actors; every sharded run is checked to return the unsharded results.
3. Bytes per 1M postings and per 1M documents: index files on disk, and the searcher's resident
   memory after touching every array (the arrays are memory-mapped).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import platform
import shutil
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np

from bench.vectors import load_vectors
from sparseir._fs import dir_bytes
from sparseir.corpus import Document, load_queries
from sparseir.distributed import ShardedSearcher, build_sharded_index, write_sharded_index
from sparseir.distributed.cluster import connect
from sparseir.encoders import MLMSparseEncoder
from sparseir.index import write_index
from sparseir.indexing import build_index
from sparseir.search import Searcher

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
REALTEXT = ROOT.parent / "shared" / "data" / "realtext"
MODEL = ROOT.parent / "shared" / "models" / "splade-tiny"
CACHE = Path("/work/cache/realtext-splade-tiny")
CHUNK = 128  # documents per Ray encoding batch


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def encoding(n_docs: int, workdir: Path, startup: float) -> dict:
    """docs/s of the in-process build and of the Ray build (2 shards), same documents."""
    import ray

    with gzip.open(REALTEXT / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in islice(f, n_docs)]
    docs = [Document(r["_id"], " ".join(t for t in (r.get("title"), r.get("text")) if t)) for r in records]
    encoder = MLMSparseEncoder(str(MODEL))
    start = time.perf_counter()
    flat = build_index(docs, encoder, workdir / "enc-flat", show_progress_bar=False)
    local = time.perf_counter() - start
    start = time.perf_counter()  # the flat index's scale: every batch is encoded on Ray
    build_sharded_index(docs, encoder, workdir / "enc-ray", 2, scale=flat.scale, chunk_size=CHUNK,
                        show_progress_bar=False)
    on_ray = time.perf_counter() - start
    cpus = int(ray.cluster_resources().get("CPU", 0))
    return {"docs": len(docs), "in_process_docs_per_s": len(docs) / local, "ray_docs_per_s": len(docs) / on_ray,
            "ray_over_in_process": local / on_ray, "ray_start_seconds": startup, "ray_cpus": cpus,
            "torch_threads_in_process": __import__("torch").get_num_threads()}


def latency(searcher, queries: list, k: int, reps: int) -> dict:
    """Single-query p50/p99 in ms (after a warm-up) and batch QPS."""
    for q in queries[:5]:
        searcher.search(q, k)
    times = []
    for q in queries[:reps]:
        t = time.perf_counter()
        searcher.search(q, k)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    searcher.batch_search(queries, k=k)
    batch = time.perf_counter() - t
    ms = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "single_qps": len(times) / float(np.sum(times)), "batch_qps": len(queries) / batch}


def search(n_docs: int | None, n_queries: int, k: int, reps: int, workdir: Path) -> dict:
    from sparseir.distributed.actors import RaySearcher

    ids, x, terms = load_vectors(CACHE, n_docs)
    encoder = MLMSparseEncoder(str(MODEL))
    texts = list(load_queries(REALTEXT / "queries.jsonl").values())[:n_queries]
    queries = list(encoder.encode_query(texts))
    out = {"docs": len(ids), "queries": len(queries), "k": k, "complete_cache": (CACHE / "COMPLETE").exists(),
           "runs": {}}
    flat_path = write_index(workdir / "flat", ids, x, terms)
    flat = Searcher(flat_path)
    want = flat.batch_search(queries, k=k)
    out["runs"]["unsharded"] = latency(flat, queries, k, reps)
    for shards in (1, 2, 4):
        path = write_sharded_index(workdir / f"sh{shards}", ids, x, terms, shards)
        local = ShardedSearcher(path)
        assert local.batch_search(queries, k=k) == want, f"{shards} shards differ from the unsharded index"
        out["runs"][f"{shards} shards, in-process"] = latency(local, queries, k, reps)
        remote = RaySearcher(path)
        try:
            assert remote.batch_search(queries, k=k) == want, f"{shards} Ray shards differ from the unsharded index"
            out["runs"][f"{shards} shards, Ray actors"] = latency(remote, queries, k, reps)
        finally:
            remote.close()
        del local
    out["memory"] = memory(flat_path)
    return out


def memory(path: Path) -> dict:
    """Disk bytes and resident bytes of a searcher over ``path``, per 1M postings and per 1M documents."""
    gc.collect()
    before = rss_bytes()
    searcher = Searcher(path)
    touched = sum(int(np.asarray(a).sum() % 7) for seg in searcher.index.segments  # fault every array in
                  for a in (seg.offsets, seg.docs, seg.impacts))
    resident = rss_bytes() - before
    disk = dir_bytes(path)
    n_docs, n_postings = searcher.index.n_docs, searcher.index.stats()["n_postings"]
    return {"n_docs": n_docs, "n_postings": n_postings, "postings_per_doc": n_postings / n_docs,
            "disk_bytes": disk, "resident_bytes": resident, "touched": touched,
            "disk_bytes_per_1M_postings": disk / n_postings * 1e6, "disk_bytes_per_1M_docs": disk / n_docs * 1e6,
            "resident_bytes_per_1M_postings": resident / n_postings * 1e6,
            "resident_bytes_per_1M_docs": resident / n_docs * 1e6}


def report(r: dict) -> str:
    e, s, m = r["encoding"], r["search"], r["search"]["memory"]
    lines = [
        "# Scale-out benchmark (local Ray)", "",
        f"Machine: {r['machine']}. Generated by `python -m bench.scale`; raw figures in `scale.json`.",
        "The machine is shared with other jobs, so absolute figures are noisy; ratios were taken in the same run.",
        "",
        "## Encoding: Ray Data against the in-process path", "",
        f"{e['docs']} realtext documents, splade-tiny, 256 tokens, CPU. Ray: {e['ray_cpus']} encoding actors "
        f"(one per CPU, one torch thread each), batches of {CHUNK}, 2 shards; segment writing and the per-shard "
        f"commits included; Ray started in {e['ray_start_seconds']:.1f} s (not included).", "",
        "| path | docs/s |", "|---|---:|",
        f"| in-process `build_index` (torch, {e['torch_threads_in_process']} threads) "
        f"| {e['in_process_docs_per_s']:.1f} |",
        f"| `build_sharded_index` on local Ray | {e['ray_docs_per_s']:.1f} |", "",
        f"Ray / in-process: {e['ray_over_in_process']:.2f}x. No GPU here: the GPU path (`num_gpus=1` actors) "
        "is untested.",
        "", "## Search: unsharded against 1, 2, 4 shards", "",
        f"{s['docs']:,} realtext documents from the vector cache "
        f"({'the whole corpus' if s['complete_cache'] and s['docs'] == 366372 else 'not the whole 366,372'}), "
        f"{s['queries']} MS MARCO dev queries, k={s['k']}, exact search. Every sharded run returned exactly the "
        "unsharded ids and scores (asserted).", "",
        "| searcher | p50 ms | p99 ms | single-query QPS | batch QPS |", "|---|---:|---:|---:|---:|",
        *[f"| {name} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['single_qps']:.0f} | {v['batch_qps']:.0f} |"
          for name, v in s["runs"].items()], "",
        "## Memory", "",
        f"Unsharded uint8 index, {m['n_docs']:,} docs, {m['n_postings']:,} postings "
        f"({m['postings_per_doc']:.1f} per doc).",
        "", "| | per 1M postings | per 1M docs |", "|---|---:|---:|",
        f"| disk | {m['disk_bytes_per_1M_postings'] / 2**20:.2f} MiB | {m['disk_bytes_per_1M_docs'] / 2**20:.1f} MiB |",
        f"| resident (searcher, all arrays touched) | {m['resident_bytes_per_1M_postings'] / 2**20:.2f} MiB | "
        f"{m['resident_bytes_per_1M_docs'] / 2**20:.1f} MiB |", "",
        "The synthetic 1M-document index was not re-measured here; see `bench/results/core.md` for it.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encode-docs", type=int, default=1000)
    p.add_argument("--search-docs", type=int, default=None, help="cached documents used (default: all cached)")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--reps", type=int, default=200, help="single queries timed")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="scale-", dir="/tmp"))
    try:
        results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, load average "
                              f"{os.getloadavg()[0]:.1f} at start"}
        start = time.perf_counter()
        connect(None)
        startup = time.perf_counter() - start
        results["search"] = search(args.search_docs, args.queries, args.k, args.reps, workdir)
        results["encoding"] = encoding(args.encode_docs, workdir, startup)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(results, indent=2))
    (args.out / "scale.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
