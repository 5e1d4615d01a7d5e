"""Live-index benchmark: adds, deletes, segments, merges, the document store.

    flock /work/bench.lock python -m bench.live        # writes bench/results/live.md and live.json

On SciFact (splade-tiny vectors, cached by ``bench/synth.py``) and on the cached realtext vectors
(``/work/cache/realtext-splade-tiny``, every part present; the count used is reported):

1. add throughput excluding encoding (vectors and stored records in, commits every 10 batches);
2. delete cost (1% of the documents, one commit);
3. exact single-query latency (1 thread) and 2-thread batch QPS with 1, 10 and 50 segments, after
   ``optimize``, and at the merge policy's steady state, each against a single fresh segment
   built from the same documents (results checked identical);
4. merge time (50 segments -> 1) and store bytes per document;
5. the cost of the kernel's deletion mask and once-per-list posting check, against the version-1 kernel
   (git commit ``V1_COMMIT``) on the same segment.
"""

from __future__ import annotations

import argparse
import os
import gzip
import importlib.util
import json
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp

from sparseir.index import IndexWriter, MergePolicy, open_index, write_index
from sparseir.search import Searcher, numba_threads
from sparseir.search.kernels import Postings, Query, search_one

from .synth import SCIFACT, SPLADE_TINY, scifact_vectors

RESULTS = Path(__file__).resolve().parent / "results"
REALTEXT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realtext"
REALTEXT_VECTORS = Path("/work/cache/realtext-splade-tiny")
V1_COMMIT = "2925992"  # the last commit with the version-1 kernel (no deletion mask, no bounds check)
BATCH = 1000
K = 10


def records_of(path: Path, n: int) -> list[dict]:
    """The first ``n`` corpus records ``{"id", "title", "text"}`` (the cached vectors' order)."""
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if len(out) == n:
                break
            if line.strip():
                o = json.loads(line)
                out.append({"id": str(o["_id"]), "title": o.get("title") or "", "text": o.get("text") or ""})
    return out


class Doc:
    """A Document-shaped record for :meth:`IndexWriter.add`."""

    __slots__ = ("id", "text", "title", "fields")

    def __init__(self, r: dict) -> None:
        self.id, self.text, self.title, self.fields = r["id"], r["text"], r["title"], None


def latency(searcher: Searcher, queries: sp.csr_matrix, repeats: int = 3) -> dict:
    """Single-query ms (1 thread; per query the best of ``repeats`` after a warm-up) and batch QPS (2 threads)."""
    rows = [queries[i] for i in range(queries.shape[0])]
    with numba_threads(1):
        searcher.search_vectors(rows[0], K)
        best = np.full(len(rows), np.inf)
        for _ in range(repeats):
            for i, q in enumerate(rows):
                t = time.perf_counter()
                searcher.search_vectors(q, K)
                best[i] = min(best[i], time.perf_counter() - t)
    with numba_threads(2):
        searcher.search_vectors(queries, K)
        t = time.perf_counter()
        searcher.search_vectors(queries, K)
        qps = queries.shape[0] / (time.perf_counter() - t)
    return {"p50_ms": float(np.median(best) * 1e3), "mean_ms": float(best.mean() * 1e3), "qps_2t": qps}


def build_segments(path: Path, ids, x, records, n_segments: int, terms, scale: float) -> float:
    """``n_segments`` equal segments, one commit each, no merging; returns seconds."""
    start = time.perf_counter()
    bounds = np.linspace(0, len(ids), n_segments + 1).astype(int)
    for lo, hi in zip(bounds, bounds[1:]):
        with IndexWriter(path, terms=terms, merge_policy=None, max_buffered_docs=10**9, scale=scale) as w:
            w.add([Doc(r) for r in records[lo:hi]] if records else ids[lo:hi], x[lo:hi])
    return time.perf_counter() - start


def v1_kernel_cost(searcher: Searcher, queries: sp.csr_matrix) -> dict:
    """Mean single-query µs of the current kernel vs the version-1 kernel on the same one-segment index."""
    src = subprocess.run(["git", "show", f"{V1_COMMIT}:sparseir/search/kernels.py"], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    tmp = Path(tempfile.mkdtemp()) / "kernels_v1.py"
    tmp.write_text(src)
    spec = importlib.util.spec_from_file_location("kernels_v1", tmp)
    v1 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v1)
    seg = searcher.index.segments[0]
    post = Postings(seg.offsets, seg.docs, seg.impacts, np.zeros(seg.n_docs, np.uint8), seg.checked_dims)
    acc = np.zeros(min(seg.n_docs, 1 << 20), np.float32)
    ids, scores = np.zeros(K, np.int64), np.zeros(K, np.float32)
    qs = [(queries[i].indices, queries[i].data * np.float32(seg.scale)) for i in range(queries.shape[0])]
    runs = {"v1_us": lambda d, w: v1.search_one(seg.offsets, seg.docs, seg.impacts, d, w, acc, K, ids, scores),
            "v2_us": lambda d, w: search_one(post, Query(d, w), acc, K, ids, scores)}
    out = {}
    for name, fn in runs.items():
        fn(*qs[0])
    best = {name: np.full(len(qs), np.inf) for name in runs}
    for _ in range(5):  # interleaved, so machine noise hits both alike
        for name, fn in runs.items():
            for i, (d, w) in enumerate(qs):
                t = time.perf_counter()
                fn(d, w)
                best[name][i] = min(best[name][i], time.perf_counter() - t)
    for name in runs:
        out[name] = float(best[name].mean() * 1e6)
    out["overhead"] = out["v2_us"] / out["v1_us"] - 1
    return out


def run_dataset(name: str, ids: list[str], x: sp.csr_matrix, terms: list[str], queries: sp.csr_matrix,
                records: list[dict], work: Path) -> dict:
    res: dict = {"n_docs": len(ids), "n_queries": queries.shape[0], "nnz_per_doc": x.nnz / len(ids)}
    print(f"[{name}] {len(ids)} documents, {queries.shape[0]} queries", flush=True)
    fresh_path = work / f"{name}-fresh"
    t = time.perf_counter()
    scale = float(x.max()) / 255  # one uint8 scale for every variant, so all quantise alike
    write_index(fresh_path, ids, x, terms, scale=scale)
    res["fresh_build_s"] = time.perf_counter() - t
    fresh = Searcher(fresh_path)
    expected = fresh.batch_search(queries, k=K)
    res["fresh"] = latency(fresh, queries)
    res["kernel_v1_vs_v2"] = v1_kernel_cost(fresh, queries)

    # add throughput, excluding encoding: batches of BATCH documents with stored records, a commit every 10
    path = work / f"{name}-adds"
    t = time.perf_counter()
    commits = []
    with IndexWriter(path, terms=terms, merge_policy=None, max_buffered_docs=10 * BATCH, scale=scale) as w:
        for b, lo in enumerate(range(0, len(ids), BATCH)):
            w.add([Doc(r) for r in records[lo:lo + BATCH]], x[lo:lo + BATCH])
            if b % 10 == 9:
                c = time.perf_counter()
                w.commit()
                commits.append(time.perf_counter() - c)
    res["add"] = {"docs_per_s": len(ids) / (time.perf_counter() - t), "commit_s_mean": float(np.mean(commits)),
                  "segments": len(open_index(path).segments)}
    st = open_index(path).stats()
    res["store"] = {"bytes_per_doc": st["store_bytes_per_doc"], "index_bytes_per_doc": st["bytes"] / len(ids),
                    "raw_json_bytes_per_doc": float(np.mean([len(json.dumps(r, ensure_ascii=False).encode())
                                                             for r in records]))}
    shutil.rmtree(path)

    for n_seg in (1, 10, 50):
        path = work / f"{name}-{n_seg}"
        build = build_segments(path, ids, x, None, n_seg, terms, scale)
        s = Searcher(path)
        assert len(s.index.segments) == n_seg and s.batch_search(queries, k=K) == expected
        res[f"segments_{n_seg}"] = {**latency(s, queries), "build_s": build}
        if n_seg == 50:
            # deletes: 1% of the documents in one commit
            rng = np.random.default_rng(0)
            gone = [ids[i] for i in rng.choice(len(ids), len(ids) // 100, replace=False)]
            t = time.perf_counter()
            with IndexWriter(path, merge_policy=None) as w:
                w.delete(gone)
            res["delete"] = {"n": len(gone), "seconds": time.perf_counter() - t}
            res["delete"]["us_per_doc"] = res["delete"]["seconds"] / len(gone) * 1e6
            s.refresh()
            res["segments_50_deleted"] = latency(s, queries)
            t = time.perf_counter()
            with IndexWriter(path) as w:
                w.optimize()
            res["merge_50_to_1_s"] = time.perf_counter() - t
            s.refresh()
            live = set(ids) - set(gone)
            ref = write_index(work / f"{name}-ref", [i for i in ids if i in live],
                              x[[j for j, i in enumerate(ids) if i in live]], terms, scale=scale)
            assert s.batch_search(queries, k=K) == Searcher(ref).batch_search(queries, k=K)
            res["optimized"] = latency(s, queries)
            res["optimized_fresh"] = latency(Searcher(ref), queries)
            shutil.rmtree(ref)
        shutil.rmtree(path)

    # steady state under the default merge policy: batches of BATCH documents, one commit each
    path = work / f"{name}-policy"
    counts = []
    t = time.perf_counter()
    for lo in range(0, len(ids), BATCH):
        with IndexWriter(path, terms=terms, merge_policy=MergePolicy(), scale=scale) as w:
            w.add(ids[lo:lo + BATCH], x[lo:lo + BATCH])
        counts.append(len(open_index(path).segments))
    s = Searcher(path)
    assert s.batch_search(queries, k=K) == expected
    res["policy"] = {"segments_final": counts[-1], "segments_max": max(counts), "seconds": time.perf_counter() - t,
                     **latency(s, queries)}
    with IndexWriter(path) as w:
        w.optimize()
    s.refresh()
    res["policy"]["optimized"] = latency(s, queries)
    res["policy"]["ratio_mean"] = res["policy"]["mean_ms"] / res["policy"]["optimized"]["mean_ms"]
    shutil.rmtree(path)
    print(json.dumps(res, indent=1), flush=True)
    return res


def report(results: dict) -> str:
    lines = ["# Live index benchmark", "", f"Machine: {results['machine']}. Command: `python -m bench.live`; "
             f"load average when it started: {results.get('load_average', 'n/a')} (other jobs at nice 10 shared the "
             "2 cores; the ratios compare runs taken side by side). Single-query latency: 1 thread, per query the best of 3 passes after a warm-up, "
             "k = 10; QPS: the whole query set as one batch on 2 threads. Every multi-segment and merged index "
             "was checked to return exactly the fresh index's results.", ""]
    for name, r in results["datasets"].items():
        lines += [f"## {name}: {r['n_docs']:,} documents, {r['n_queries']} queries, {r['nnz_per_doc']:.0f} "
                  "postings per document", "",
                  "| index | mean ms | p50 ms | vs fresh (mean) | QPS 2T |", "| --- | ---: | ---: | ---: | ---: |"]
        base = r["fresh"]["mean_ms"]
        rows = [("single fresh segment", r["fresh"]), ("1 segment (IndexWriter)", r["segments_1"]),
                ("10 segments", r["segments_10"]), ("50 segments", r["segments_50"]),
                ("50 segments, 1% deleted", r["segments_50_deleted"]), ("after optimize", r["optimized"]),
                ("fresh from the same live docs", r["optimized_fresh"]),
                (f"merge policy steady state ({r['policy']['segments_final']} segments)", r["policy"]),
                ("the same, optimized", r["policy"]["optimized"])]
        for label, m in rows:
            lines.append(f"| {label} | {m['mean_ms']:.3f} | {m['p50_ms']:.3f} | {m['mean_ms'] / base:.2f}x | "
                         f"{m['qps_2t']:.0f} |")
        p, k = r["policy"], r["kernel_v1_vs_v2"]
        target = "met" if p["ratio_mean"] <= 1.3 else "NOT met"
        lines += ["", f"- **Merge-policy target** (steady state within 1.3x of one optimized segment): "
                  f"{p['ratio_mean']:.2f}x with {p['segments_final']} segments (at most {p['segments_max']} while "
                  f"adding {r['n_docs'] // BATCH} commits of {BATCH} documents; {p['seconds']:.1f} s in all): "
                  f"{target}.",
                  f"- **Add throughput** (no encoding; vectors plus stored records, {BATCH}-document adds, a commit "
                  f"every 10): {r['add']['docs_per_s']:,.0f} docs/s; " + (
                      f"a commit took {r['add']['commit_s_mean']:.3f} s on average." if r['add']['commit_s_mean'] == r[
                          'add']['commit_s_mean'] else "too few adds for a commit in between (only the final one)."),
                  f"- **Delete**: {r['delete']['n']:,} documents (1%) in one commit: {r['delete']['seconds']:.3f} s "
                  f"({r['delete']['us_per_doc']:.1f} µs per document, the writer's id map included).",
                  f"- **Merge** 50 segments (1% deleted) into 1: {r['merge_50_to_1_s']:.2f} s. Fresh single-segment "
                  f"build: {r['fresh_build_s']:.2f} s.",
                  f"- **Store**: {r['store']['bytes_per_doc']:.0f} bytes per document (zstd level 3, blocks of 64 "
                  f"records), against {r['store']['raw_json_bytes_per_doc']:.0f} bytes of raw JSON; the whole index "
                  f"with its store takes {r['store']['index_bytes_per_doc']:.0f} bytes per document.",
                  f"- **Kernel safety cost** (deletion mask + once-per-list posting check vs the version-1 kernel, same "
                  f"segment, mean µs/query, 1 thread, interleaved runs): {k['v1_us']:.1f} -> {k['v2_us']:.1f} "
                  f"({k['overhead'] * 100:+.1f}%).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--datasets", default="scifact,realtext",
                    help="comma-separated; datasets not run keep their figures from an existing live.json")
    ap.add_argument("--realtext-queries", type=int, default=500)
    args = ap.parse_args()
    json_path = args.out / "live.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {"datasets": {}}
    results["machine"] = (f"{platform.processor() or platform.machine()}, {numba.config.NUMBA_NUM_THREADS} cores, "
                          f"Python {platform.python_version()}, numba {numba.__version__}")
    results["load_average"] = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="sparseir-live-"))
    try:
        if "scifact" in args.datasets:
            ds = scifact_vectors()
            recs = records_of(SCIFACT / "corpus.jsonl", len(ds.doc_ids))
            assert [r["id"] for r in recs] == ds.doc_ids
            results["datasets"]["SciFact"] = run_dataset("scifact", ds.doc_ids, ds.docs, ds.terms, ds.queries, recs,
                                                         work)
        if "realtext" in args.datasets:
            from sparseir.encoders import MLMSparseEncoder

            from .vectors import load_vectors

            ids, x, terms = load_vectors(REALTEXT_VECTORS)
            complete = (REALTEXT_VECTORS / "COMPLETE").exists()
            recs = records_of(REALTEXT / "corpus.jsonl.gz", len(ids))
            assert [r["id"] for r in recs] == ids
            enc = MLMSparseEncoder(str(SPLADE_TINY), max_length=256, query_max_length=64)
            qtexts = [json.loads(line)["text"] for line in
                      (REALTEXT / "queries.jsonl").read_text(encoding="utf-8").splitlines()[:args.realtext_queries]]
            queries = enc.encode_query(qtexts)
            results["datasets"] = {k: v for k, v in results["datasets"].items() if not k.startswith("realtext")}
            name = f"realtext ({'all' if complete else 'the first'} {len(ids):,} of 366,372 documents)"
            results["datasets"][name] = run_dataset("realtext", ids, x, terms, queries, recs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2))
    (args.out / "live.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
