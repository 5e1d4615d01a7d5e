"""Core engine benchmark: quality, encoding speed, search latency, index size.

    python -m bench.core                      # writes bench/results/core.md and core.json
    python -m bench.core --n-synthetic 200000 # a smaller large-corpus run

1. Full SciFact with splade-tiny (docs at 256 tokens, queries at 64): nDCG@10 and R@100 through
   the index (float32 and uint8) and through brute-force scipy on the float vectors.
2. Encoding docs/s of MLMSparseEncoder against the naive full-logits formula, same texts, same run.
3. Exact single-query latency p50/p99 (1 thread) and batch QPS against scipy ``q @ D.T`` on the same
   dequantised vectors, at SciFact size and on a synthetic corpus resampled from SciFact.
4. Index bytes per posting and build time.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp
import torch

from sparseir.corpus import load_corpus
from sparseir.encoders import MLMSparseEncoder
from sparseir.encoders.mlm import naive_encode
from sparseir.evaluate import evaluate
from sparseir.index import SparseIndex, write_index
from sparseir.search import Searcher, numba_threads
from sparseir.search.searcher import SPLIT_MIN_DOCS

from .synth import SCIFACT, SPLADE_TINY, scifact_vectors, synthetic_corpus

RESULTS = Path(__file__).resolve().parent / "results"


def topk_run(scores: np.ndarray, doc_ids: list[str], query_ids: list[str], k: int) -> dict:
    run = {}
    for q, row in zip(query_ids, scores):
        top = np.argsort(-row, kind="stable")[:k]
        run[q] = {doc_ids[d]: float(row[d]) for d in top if row[d] > 0}
    return run


def index_run(searcher: Searcher, queries: sp.csr_matrix, query_ids: list[str], k: int) -> dict:
    ids, scores, counts = searcher.search_vectors(queries, k)
    return {q: {searcher.index.doc_ids[int(d)]: float(s) for d, s in zip(ids[i, :counts[i]], scores[i, :counts[i]])}
            for i, q in enumerate(query_ids)}


def quality(ds, workdir: Path) -> dict:
    out = {}
    brute = (ds.queries @ ds.docs.T).toarray()
    out["brute_force_scipy"] = evaluate(topk_run(brute, ds.doc_ids, ds.query_ids, 100), ds.qrels)
    for quant in ("float32", "uint8"):
        start = time.perf_counter()
        path = write_index(workdir / f"scifact-{quant}", ds.doc_ids, ds.docs, ds.terms, quantize=quant)
        build = time.perf_counter() - start
        index = SparseIndex.load(path)
        metrics = evaluate(index_run(Searcher(index), ds.queries, ds.query_ids, 100), ds.qrels)
        out[f"index_{quant}"] = {**metrics, "build_seconds": build, "bytes": index.nbytes,
                                 "bytes_per_posting": index.nbytes / index.n_postings,
                                 "postings_bytes_per_posting": (index.docs.nbytes + index.impacts.nbytes)
                                 / index.n_postings}
    return out


def encoding_speed(n_docs: int, batch_size: int) -> dict:
    texts = [d.text for _, d in zip(range(n_docs), load_corpus(SCIFACT))]
    encoder = MLMSparseEncoder(str(SPLADE_TINY), batch_size=batch_size)
    encoder.encode_document(texts[:batch_size])  # warm-up
    naive_encode(encoder, texts[:batch_size])

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return n_docs / (time.perf_counter() - start)

    ours = timed(lambda: encoder.encode_document(texts, show_progress_bar=False))
    batches = [texts[i:i + batch_size] for i in range(0, n_docs, batch_size)]
    naive = timed(lambda: [naive_encode(encoder, b) for b in batches])
    by_len = sorted(texts, key=len, reverse=True)
    sorted_batches = [by_len[i:i + batch_size] for i in range(0, n_docs, batch_size)]
    naive_sorted = timed(lambda: [naive_encode(encoder, b) for b in sorted_batches])
    return {"docs": n_docs, "batch_size": batch_size, "device": str(encoder.device),
            "torch_threads": torch.get_num_threads(), "sparseir_docs_per_s": ours,
            "naive_docs_per_s": naive, "naive_length_sorted_docs_per_s": naive_sorted,
            "speedup_vs_naive": ours / naive, "speedup_vs_naive_length_sorted": ours / naive_sorted}


def scipy_topk(dt: sp.csr_matrix, q: sp.csr_matrix, k: int) -> np.ndarray:
    """Top-k doc ids of ``q @ D.T`` with D.T precomputed as CSR (scipy's best case)."""
    s = (q @ dt).tocsr()
    if s.nnz <= k:
        return s.indices[np.argsort(-s.data)]
    top = np.argpartition(-s.data, k)[:k]
    return s.indices[top[np.argsort(-s.data[top])]]


def latency(index: SparseIndex, queries: sp.csr_matrix, k: int = 10, repeats: int = 1) -> dict:
    searcher = Searcher(index)
    dt = index.to_csr().T.tocsr()
    rows = [queries[i] for i in range(queries.shape[0])]
    with numba_threads(1):
        searcher.search_vectors(rows[0], k)  # compile / warm caches
        ours, theirs = [], []
        for _ in range(repeats):
            for q in rows:  # interleaved, so both see the same machine state
                t = time.perf_counter()
                searcher.search_vectors(q, k)
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                scipy_topk(dt, q, k)
                theirs.append(time.perf_counter() - t)
    split = []  # one query at a time, all cores on it (document range split across threads)
    searcher.search_vectors(rows[0], k)
    for _ in range(repeats):
        for q in rows:
            t = time.perf_counter()
            searcher.search_vectors(q, k)
            split.append(time.perf_counter() - t)
    t = time.perf_counter()
    searcher.search_vectors(queries, k)
    ours_batch = queries.shape[0] / (time.perf_counter() - t)
    t = time.perf_counter()
    for q in rows:
        scipy_topk(dt, q, k)
    scipy_batch = queries.shape[0] / (time.perf_counter() - t)
    ms = lambda xs, p: float(np.percentile(xs, p) * 1e3)  # noqa: E731
    res = {"n_docs": index.n_docs, "n_postings": index.n_postings, "queries": len(rows) * repeats,
           "sparseir_p50_ms": ms(ours, 50), "sparseir_p99_ms": ms(ours, 99),
           "scipy_p50_ms": ms(theirs, 50), "scipy_p99_ms": ms(theirs, 99),
           "sparseir_all_threads_p50_ms": ms(split, 50), "sparseir_all_threads_p99_ms": ms(split, 99),
           "sparseir_batch_qps": ours_batch, "scipy_qps": scipy_batch, "batch_threads": numba.get_num_threads()}
    res["speedup_p50"] = res["scipy_p50_ms"] / res["sparseir_p50_ms"]
    res["speedup_p50_all_threads"] = res["scipy_p50_ms"] / res["sparseir_all_threads_p50_ms"]
    res["speedup_batch"] = ours_batch / scipy_batch
    return res


def report(results: dict) -> str:
    q, e, lat = results["quality"], results["encoding"], results["latency"]
    lines = [
        "# Core engine benchmark", "",
        f"Machine: {results['machine']}. Generated by `python -m bench.core`; raw figures in `core.json`.", "",
        "## Quality: full SciFact, splade-tiny (docs 256 tokens, queries 64)", "",
        "| scoring | nDCG@10 | R@100 | MRR@10 |", "| --- | --- | --- | --- |",
    ]
    for name, m in q.items():
        lines.append(f"| {name} | {m['nDCG@10']:.4f} | {m['R@100']:.4f} | {m['RR@10']:.4f} |")
    bf = q["brute_force_scipy"]
    for quant in ("float32", "uint8"):
        d = max(abs(q[f"index_{quant}"][m] - bf[m]) for m in ("nDCG@10", "R@100"))
        lines.append(f"\nindex_{quant} vs brute force: largest difference {d:.5f} "
                     f"({'within' if d <= 0.001 else 'NOT within'} the 0.001 target).")
    lines += ["", "## Index size and build time (SciFact vectors)", "",
              "| quantization | bytes/posting (all files) | bytes/posting (postings) | build s |",
              "| --- | --- | --- | --- |"]
    for quant in ("float32", "uint8"):
        m = q[f"index_{quant}"]
        lines.append(f"| {quant} | {m['bytes_per_posting']:.2f} | {m['postings_bytes_per_posting']:.2f} "
                     f"| {m['build_seconds']:.2f} |")
    lines += ["", f"## Encoding speed ({e['docs']} SciFact docs, batch {e['batch_size']}, {e['device']}, "
              f"{e['torch_threads']} torch threads)", "",
              "| implementation | docs/s | sparseir speed-up |", "| --- | --- | --- |",
              f"| sparseir MLMSparseEncoder | {e['sparseir_docs_per_s']:.1f} | |",
              f"| naive full logits, input order | {e['naive_docs_per_s']:.1f} | {e['speedup_vs_naive']:.2f}x |",
              f"| naive full logits, length-sorted batches | {e['naive_length_sorted_docs_per_s']:.1f} "
              f"| {e['speedup_vs_naive_length_sorted']:.2f}x |", "",
              f"Target >= 5x against the naive implementation: "
              f"{'met' if e['speedup_vs_naive'] >= 5 else 'NOT met'} ({e['speedup_vs_naive']:.2f}x).", "",
              "## Exact search against scipy `q @ D.T` (same dequantised uint8 vectors, top-10, 300 SciFact queries)",
              "", "| corpus | docs | postings | sparseir p50 / p99 ms (1 thread) | sparseir p50 / p99 ms (query split "
              "over all threads) | scipy p50 / p99 ms | p50 speed-up (1 thread / all) | sparseir batch QPS | scipy QPS "
              "| batch speed-up |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in lat.items():
        lines.append(f"| {name} | {r['n_docs']:,} | {r['n_postings']:,} | {r['sparseir_p50_ms']:.3f} / "
                     f"{r['sparseir_p99_ms']:.3f} | {r['sparseir_all_threads_p50_ms']:.3f} / "
                     f"{r['sparseir_all_threads_p99_ms']:.3f} | {r['scipy_p50_ms']:.3f} / {r['scipy_p99_ms']:.3f} | "
                     f"{r['speedup_p50']:.1f}x / {r['speedup_p50_all_threads']:.1f}x | "
                     f"{r['sparseir_batch_qps']:.0f} ({r['batch_threads']} threads) | "
                     f"{r['scipy_qps']:.0f} | {r['speedup_batch']:.1f}x |")
    big = lat[max(lat, key=lambda n: lat[n]["n_docs"])]
    lines += ["", f"Target: faster than scipy at both sizes, >= 5x at the largest. At {big['n_docs']:,} documents: "
              f"single-query p50 {big['speedup_p50']:.1f}x on one thread "
              f"({'met' if big['speedup_p50'] >= 5 else 'NOT met'}), {big['speedup_p50_all_threads']:.1f}x with the "
              f"query split over {big['batch_threads']} threads "
              f"({'met' if big['speedup_p50_all_threads'] >= 5 else 'NOT met'}); batch "
              f"{big['speedup_batch']:.1f}x ({'met' if big['speedup_batch'] >= 5 else 'NOT met'}). scipy has no "
              "multi-threaded sparse product, so its figures are single-threaded throughout. Indexes under "
              f"{SPLIT_MIN_DOCS:,} documents never split a query (SciFact's two sparseir columns differ only by noise)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-synthetic", type=int, default=1_000_000)
    ap.add_argument("--encode-docs", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--parts", default="quality,encoding,latency",
                    help="comma-separated subset to (re)run; other parts are kept from an existing core.json")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    ds = scifact_vectors()
    json_path = args.out / "core.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    results["machine"] = (f"{platform.processor() or platform.machine()}, {numba.config.NUMBA_NUM_THREADS} cores, "
                          f"Python {platform.python_version()}, torch {torch.__version__}, numba {numba.__version__}")
    workdir = Path(tempfile.mkdtemp(prefix="sparseir-bench-"))
    try:
        if "quality" in parts:
            results["quality"] = quality(ds, workdir)
        if "encoding" in parts:
            results["encoding"] = encoding_speed(args.encode_docs, args.batch_size)
        if "latency" in parts:
            results["latency"] = {}
            for name, docs in (("scifact", ds.docs), (f"synthetic-{args.n_synthetic // 1000}k", None)):
                if docs is None:
                    docs = synthetic_corpus(ds.docs, args.n_synthetic, seed=0)
                start = time.perf_counter()
                path = write_index(workdir / name, [str(i) for i in range(docs.shape[0])], docs, ds.terms)
                build = time.perf_counter() - start
                del docs
                gc.collect()
                results["latency"][name] = {**latency(SparseIndex.load(path, verify=False), ds.queries),
                                            "build_seconds": build}
                shutil.rmtree(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2))
    (args.out / "core.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
