"""Query speed, side by side: sparseir exact and approximate, Seismic, BMP and Lucene impact search.

One command builds every engine on the same vectors, one engine at a time, and reports build
time, index bytes, single-thread latency (mean/p50/p99), single- and multi-thread QPS, recall@10
against exact search and nDCG@10 where qrels exist; it also plots latency against recall::

    python -m bench.speed                              # SciFact + 1M synthetic documents
    python -m bench.speed --corpora scifact 5000000    # other sizes

Vectors: SciFact encoded with splade-tiny (``bench.synth.scifact_vectors``) and corpora of N
documents resampled from it (``bench.synth.synthetic_corpus``), searched with the SciFact test
queries. Every engine indexes the same integer document impacts (sparseir's uint8 quantisation)
and searches the same integer query weights: each query is scaled so its largest weight is
``QUERY_LEVELS`` and rounded, because BMP rescales heavier queries to that many levels; so in
exact mode every engine computes the same integer scores. Recall@10 is tie-aware: a returned
document counts when its exact score reaches the exact 10th score.

Latency: each query's time is the minimum over ``--repeats`` passes, after one warm-up pass
(the machine is shared; the minimum removes time lost to other processes). One thread for every
engine. Multi-thread QPS uses each engine's batch API with ``--threads`` threads (BMP has none).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit
from tqdm.auto import tqdm

from bench.speed_engines import BMP, Engine, LuceneImpact, Seismic, SparseirApprox, SparseirExact, workdir
from bench.synth import ROOT, scifact_vectors, synthetic_corpus
from sparseir.evaluate import evaluate
from sparseir.index import SparseIndex, write_index
from sparseir.search.approx import ApproxParams
from sparseir.search.approx_kernels import forward_index
from sparseir.search.kernels import Postings, Query, accumulate, search_one, topk_dense
from sparseir.timing import single_thread

QUERY_LEVELS = 32  # BMP's MAX_TERM_WEIGHT
K = 10
ENGINES = ("sparseir-exact", "sparseir-approx", "seismic", "bmp", "lucene-impact")
APPROX_SWEEP = [  # the "full" source (the default) by query cut; then the Seismic-style "pruned" source
    {"query_cut": 4, "candidates": 100},
    {"query_cut": 6, "candidates": 200},
    {"query_cut": 8, "candidates": 300},
    {"query_cut": 10, "candidates": 300},
    {},
    {"query_cut": 16, "candidates": 500},
    {"source": "pruned"},
    {"source": "pruned", "query_cut": 16, "budget": 100_000, "candidates": 1000},
]
SEISMIC_BUILD = {"n_postings": 4000, "centroid_fraction": 0.1, "summary_energy": 0.4}
SEISMIC_SWEEP = [{"query_cut": qc, "heap_factor": hf} for qc in (5, 10, 20, 40) for hf in (0.7, 0.9, 1.0)]
BMP_SWEEP = [{"alpha": a, "beta": 1.0} for a in (1.0, 0.9, 0.7)]
BMP_BLOCK = 32


def quantize_queries(q: sp.csr_matrix, levels: int = QUERY_LEVELS) -> sp.csr_matrix:
    """Each row scaled so its largest weight is ``levels``, rounded to integers; zeros dropped."""
    q = sp.csr_matrix(q, dtype=np.float32, copy=True)
    peak = np.maximum.reduceat(q.data, q.indptr[:-1]) if q.nnz else np.zeros(0)
    rows = np.repeat(np.arange(q.shape[0]), np.diff(q.indptr))
    q.data = np.rint(q.data / peak[rows] * levels).astype(np.float32)
    q.eliminate_zeros()
    return q


def integer_docs(index: SparseIndex) -> sp.csr_matrix:
    """The index's stored impacts as a document-major CSR of integers (explicit zeros dropped)."""
    dims = np.empty(index.n_postings, dtype=np.int32)
    vals = np.empty(index.n_postings, dtype=index.impacts.dtype)
    indptr = forward_index(index.offsets, np.asarray(index.docs), np.asarray(index.impacts),
                           np.asarray(index.doc_nnz), dims, vals)
    docs = sp.csr_matrix((vals.astype(np.float32), dims, indptr), shape=(index.n_docs, index.n_dims))
    docs.eliminate_zeros()
    return docs


@njit(cache=True)
def _stream(a: np.ndarray) -> int:
    s = 0
    for i in range(a.shape[0]):
        s += a[i]
    return s


def memory_bandwidth(n_bytes: int = 1 << 30, repeats: int = 5) -> float:
    """Single-thread sequential read bandwidth in bytes/s (best of ``repeats`` sums over ``n_bytes``)."""
    a = np.ones(n_bytes // 8, dtype=np.int64)
    _stream(a[:1000])
    best = min(_timed(lambda: _stream(a)) for _ in range(repeats))
    return n_bytes / best


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def latencies(engine: Engine, prepared: list[Any], repeats: int, pass_budget_s: float) -> np.ndarray:
    """Per-query seconds: the minimum over up to ``repeats`` passes after a warm-up pass
    (fewer, at least one, when the passes would take more than ``pass_budget_s`` in all)."""
    warm = _timed(lambda: [engine.search(q, K) for q in prepared])
    best = np.full(len(prepared), np.inf)
    for _ in range(max(1, min(repeats, int(pass_budget_s / max(warm, 1e-9))))):
        for i, q in enumerate(prepared):
            start = time.perf_counter()
            engine.search(q, K)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def tie_aware_recall(results: list[np.ndarray], truth: list[np.ndarray], docs: sp.csr_matrix,
                     queries: sp.csr_matrix) -> float:
    """Mean over queries with a hit of |returned with exact score >= exact k-th| / |exact top-k|."""
    scores = []
    for i, (got, gold) in enumerate(zip(results, truth)):
        if len(gold) == 0:
            continue
        q = queries[i].T
        kth = (docs[gold] @ q).toarray().ravel().min()
        got = np.unique(np.asarray(got[:K], dtype=np.int64))
        s = (docs[got] @ q).toarray().ravel() if len(got) else np.zeros(0)
        scores.append(min(len(gold), int(((s >= kth) & (s > 0)).sum())) / len(gold))
    return float(np.mean(scores)) if scores else float("nan")


def ndcg(results: list[np.ndarray], query_ids: list[str], doc_ids: list[str],
         qrels: dict[str, dict[str, int]] | None) -> float | None:
    if qrels is None:
        return None
    run = {qid: {doc_ids[d]: float(K - r) for r, d in enumerate(res[:K])} for qid, res in zip(query_ids, results)}
    return evaluate(run, qrels, metrics=("nDCG@10",))["nDCG@10"]


def postings_touched(index: SparseIndex, queries: sp.csr_matrix) -> np.ndarray:
    lengths = np.diff(index.offsets)
    return np.array([lengths[queries[i].indices].sum() for i in range(queries.shape[0])], dtype=np.int64)


def exact_kernel_ablation(index: SparseIndex, queries: sp.csr_matrix, repeats: int) -> dict[str, float]:
    """Mean single-thread µs/query of the unblocked TAAT pass vs the cache-blocked kernel."""
    offsets, docs, impacts = index.offsets, np.asarray(index.docs), np.asarray(index.impacts)
    qs = [(queries[i].indices, queries[i].data * np.float32(index.scale)) for i in range(queries.shape[0])]
    acc = np.zeros(index.n_docs, dtype=np.float32)
    ids, scores = np.zeros(K, np.int64), np.zeros(K, np.float32)

    def unblocked(d, w):
        accumulate(offsets, docs, impacts, d, w, acc)
        topk_dense(acc, K, ids, scores)
        acc[:] = 0.0

    postings = Postings(offsets, docs, impacts, np.zeros(index.n_docs, np.uint8), np.zeros(len(offsets) - 1, np.uint8))

    def blocked(d, w):
        search_one(postings, Query(d, w), acc, K, ids, scores)

    out = {}
    for name, fn in (("unblocked_taat_us", unblocked), ("blocked_taat_us", blocked)):
        for d, w in qs[:3]:
            fn(d, w)
        best = np.full(len(qs), np.inf)
        for _ in range(repeats):
            for i, (d, w) in enumerate(qs):
                best[i] = min(best[i], _timed(lambda: fn(d, w)))
        out[name] = float(best.mean() * 1e6)
    return out


def measure(engine: Engine, corpus: dict[str, Any], truth: list[np.ndarray] | None, args) -> list[dict[str, Any]]:
    """Build ``engine``, then measure every operating point. Returns one record per point."""
    docs, queries = corpus["docs_int"], corpus["queries"]
    gc.collect()
    build_s = _timed(engine.build)
    records = []
    for point in engine.settings():
        prepared = [engine.prepare(i) for i in range(queries.shape[0])]
        with single_thread():
            lat = latencies(engine, prepared, args.repeats, args.pass_budget)
            results = [engine.search(q, K) for q in prepared]
        batch_s = None
        if engine.has_batch:
            engine.batch(K, args.threads)  # warm-up
            batch_s = min(_timed(lambda: engine.batch(K, args.threads)) for _ in range(2))
        rec = {
            "engine": engine.name, "corpus": corpus["name"], "point": point or {},
            "settings": getattr(engine, "point", {}) or point or {},
            "build_s": build_s, "bytes": engine.nbytes,
            "mean_us": float(lat.mean() * 1e6), "p50_us": float(np.percentile(lat, 50) * 1e6),
            "p99_us": float(np.percentile(lat, 99) * 1e6), "qps_1t": float(1.0 / lat.mean()),
            f"qps_{args.threads}t": (queries.shape[0] / batch_s) if batch_s else None,
            "recall@10": 1.0 if truth is None else tie_aware_recall(results, truth, docs, queries),
            "nDCG@10": ndcg(results, corpus["query_ids"], corpus["doc_ids"], corpus["qrels"]),
        }
        records.append(rec)
        tqdm.write(f"  {engine.name} {point or ''}: {rec['mean_us']:.0f} µs mean, recall {rec['recall@10']:.3f}")
        if truth is None:
            truth = results
            corpus["truth"] = truth
    engine.close()
    return records


def corpus_name(name: str) -> str:
    if name == "scifact":
        return name
    n = int(name)
    return f"synthetic-{n // 1000}k" if n < 1_000_000 else f"synthetic-{n / 1_000_000:g}M"


def sparseir_index(name: str, base, cache: Path) -> tuple[SparseIndex, float]:
    """The corpus's sparseir uint8 index, cached under ``cache`` (the vectors are deterministic);
    returns it with the writer's build seconds (from the manifest when cached)."""
    path = cache / corpus_name(name) / "sparseir"
    if not (path / "manifest.json").is_file():
        if name == "scifact":
            docs, ids = base.docs, list(base.doc_ids)
        else:
            docs = synthetic_corpus(base.docs, int(name), seed=0)
            ids = [str(i) for i in range(docs.shape[0])]
        write_index(path, ids, docs, base.terms, quantize="uint8", overwrite=True)
        del docs
        gc.collect()
    index = SparseIndex.load(path, verify=False)
    return index, float(index.manifest["build_seconds"])


def run_corpus(name: str, base, queries: sp.csr_matrix, args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    corpus = {"name": corpus_name(name), "qrels": base.qrels if name == "scifact" else None,
              "queries": queries, "query_ids": list(base.query_ids)}
    root = workdir(Path(args.workdir), corpus["name"])
    try:
        index, index_s = sparseir_index(name, base, Path(args.workdir))
        corpus["doc_ids"] = index.doc_ids.tolist()
        corpus["docs_int"] = integer_docs(index)
        touched = postings_touched(index, queries)
        info = {"corpus": corpus["name"], "n_docs": index.n_docs, "n_postings": index.n_postings,
                "postings_per_doc": index.n_postings / index.n_docs, "n_queries": queries.shape[0],
                "query_terms_mean": float(np.diff(queries.indptr).mean()),
                "postings_per_query_mean": float(touched.mean()), "sparseir_write_s": index_s}
        tqdm.write(f"{corpus['name']}: {json.dumps(info)}")
        engines: dict[str, Callable[[], Engine]] = {
            "sparseir-exact": lambda: SparseirExact(index, queries),
            "sparseir-approx": lambda: SparseirApprox(index, queries, ApproxParams(), APPROX_SWEEP),
            "seismic": lambda: Seismic(corpus["docs_int"], queries, root, SEISMIC_BUILD, SEISMIC_SWEEP, args.threads),
            "bmp": lambda: BMP(corpus["docs_int"], queries, root, BMP_BLOCK, BMP_SWEEP),
            "lucene-impact": lambda: LuceneImpact(corpus["docs_int"], queries, root, args.threads),
        }
        records = []
        for name_ in ENGINES:
            if name_ == "lucene-impact" and index.n_docs > args.lucene_max_docs:
                info["skipped"] = (f"lucene-impact: {index.n_docs:,} docs > --lucene-max-docs "
                                   f"{args.lucene_max_docs:,} (Anserini impact indexing is too slow here)")
                continue
            if name_ in args.engines:
                recs = measure(engines[name_](), corpus, corpus.get("truth"), args)
                if name_ == "sparseir-exact":
                    for r in recs:  # the writer's time from CSR is the exact index's build time
                        r["build_s"] += index_s
                if name_ == "sparseir-approx":
                    for r in recs:
                        r["build_s_extra"] = r["build_s"]
                        r["build_s"] += index_s
                records += recs
        with single_thread():
            info["exact_kernels"] = exact_kernel_ablation(index, queries, args.repeats)
        return records, info
    finally:
        shutil.rmtree(root, ignore_errors=True)


def best_at_recall(records: list[dict[str, Any]], engine: str, corpus: str, floor: float = 0.95):
    ok = [r for r in records if r["engine"] == engine and r["corpus"] == corpus and r["recall@10"] >= floor]
    return min(ok, key=lambda r: r["mean_us"]) if ok else None


def targets(records: list[dict[str, Any]], corpus: str) -> dict[str, Any]:
    """The issue's targets on one corpus, as ratios (> 1 means sparseir is faster)."""
    def one(engine, **point):
        for r in records:
            if r["engine"] == engine and r["corpus"] == corpus and all(r["point"].get(k) == v for k, v in point.items()):
                return r
        return None

    exact, bmp_exact, lucene = one("sparseir-exact"), one("bmp", alpha=1.0), one("lucene-impact")
    approx, seismic = best_at_recall(records, "sparseir-approx", corpus), best_at_recall(records, "seismic", corpus)
    out = {}
    if exact and bmp_exact:
        out["exact_vs_bmp_exact_speedup"] = bmp_exact["mean_us"] / exact["mean_us"]
    if exact and lucene:
        out["exact_vs_lucene_speedup"] = lucene["mean_us"] / exact["mean_us"]
    if approx and seismic:
        out["approx_vs_seismic_qps_ratio_at_recall_0.95"] = approx["qps_1t"] / seismic["qps_1t"]
    out["approx_best"] = approx and {k: approx[k] for k in ("point", "mean_us", "recall@10")}
    out["seismic_best"] = seismic and {k: seismic[k] for k in ("point", "mean_us", "recall@10")}
    return out


def markdown(records, infos, bandwidth, args) -> str:
    threads_col = f"qps_{args.threads}t"
    lines = ["# Query speed: sparseir vs Seismic, BMP, Lucene impact search", "",
             f"Generated by `python -m bench.speed {' '.join(args.argv)}` on {platform.processor() or platform.machine()}, "
             f"{numba.config.NUMBA_NUM_THREADS} cores. Single-thread latency = per-query minimum over "
             f"{args.repeats} passes. Measured sequential read bandwidth (1 thread): {bandwidth / 1e9:.1f} GB/s.", ""]
    for info in infos:
        c = info["corpus"]
        floor_us = info["postings_per_query_mean"] * 5 / bandwidth * 1e6
        lines += [f"## {c}: {info['n_docs']:,} docs, {info['n_postings']:,} postings "
                  f"({info['postings_per_doc']:.0f}/doc), {info['n_queries']} queries "
                  f"({info['query_terms_mean']:.1f} terms, {info['postings_per_query_mean']:,.0f} postings/query)", "",
                  f"Exact bandwidth floor: {info['postings_per_query_mean'] * 5 / 1e6:.2f} MB of postings per query "
                  f"(4-byte doc id + 1-byte impact) / {bandwidth / 1e9:.1f} GB/s = **{floor_us:.0f} µs**. "
                  f"Exact kernels (µs/query): unblocked TAAT {info['exact_kernels']['unblocked_taat_us']:.0f}, "
                  f"cache-blocked TAAT {info['exact_kernels']['blocked_taat_us']:.0f}.", "",
                  f"| engine | setting | build s | bytes | mean µs | p50 µs | p99 µs | QPS 1T | QPS {args.threads}T "
                  f"| recall@10 | nDCG@10 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in records:
            if r["corpus"] != c:
                continue
            mt = f"{r[threads_col]:.0f}" if r.get(threads_col) else "n/a"
            nd = f"{r['nDCG@10']:.4f}" if r["nDCG@10"] is not None else "n/a"
            setting = ", ".join(f"{k}={v}" for k, v in r["point"].items()) or "default"
            lines.append(f"| {r['engine']} | {setting} | {r['build_s']:.1f} | {r['bytes'] / 1e6:.1f} MB | "
                         f"{r['mean_us']:.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['qps_1t']:.0f} | {mt} | "
                         f"{r['recall@10']:.3f} | {nd} |")
        if info.get("skipped"):
            lines += ["", f"Not run: {info['skipped']}."]
        t = info["targets"]
        lines += ["", "Targets:"]
        if "exact_vs_bmp_exact_speedup" in t:
            lines.append(f"- sparseir exact vs BMP exact (alpha=beta=1): {t['exact_vs_bmp_exact_speedup']:.2f}x "
                         f"({'met' if t['exact_vs_bmp_exact_speedup'] > 1 else 'NOT met'})")
        if "exact_vs_lucene_speedup" in t:
            lines.append(f"- sparseir exact vs Lucene impact: {t['exact_vs_lucene_speedup']:.2f}x "
                         f"({'met' if t['exact_vs_lucene_speedup'] > 1 else 'NOT met'})")
        if "approx_vs_seismic_qps_ratio_at_recall_0.95" in t:
            ratio = t["approx_vs_seismic_qps_ratio_at_recall_0.95"]
            lines.append(f"- sparseir approx vs Seismic, best single-thread QPS at recall@10 >= 0.95: {ratio:.2f}x "
                         f"({'met' if ratio >= 1 else 'NOT met'}); sparseir {t['approx_best']}, "
                         f"Seismic {t['seismic_best']}")
        lines.append("")
    return "\n".join(lines)


def _series(record: dict[str, Any]) -> str:
    """Plot series: the engine, and the candidate source for sparseir's approximate mode."""
    source = record["settings"].get("source") if record["engine"] == "sparseir-approx" else None
    return f"{record['engine']} ({source})" if source else record["engine"]


def plot(records, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(dict.fromkeys(r["corpus"] for r in records))
    fig, axes = plt.subplots(1, len(corpora), figsize=(6 * len(corpora), 4.5), squeeze=False)
    for ax, c in zip(axes[0], corpora):
        for label in dict.fromkeys(_series(r) for r in records):
            rs = [r for r in records if r["corpus"] == c and _series(r) == label]
            if rs:
                ax.plot([r["recall@10"] for r in rs], [r["mean_us"] for r in rs], "o", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 vs exact")
        ax.set_ylabel("mean latency, 1 thread (µs)")
        ax.axvline(0.95, color="grey", lw=0.5, ls="--")
        ax.set_title(c)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpora", nargs="+", default=["scifact", "1000000"],
                   help="'scifact' and/or document counts of synthetic corpora")
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per operating point")
    p.add_argument("--threads", type=int, default=2, help="threads for the multi-thread QPS and builds")
    p.add_argument("--pass-budget", type=float, default=30.0,
                   help="seconds of timed passes per operating point before --repeats is cut (min 1 pass)")
    p.add_argument("--lucene-max-docs", type=int, default=100_000,
                   help="skip Lucene impact search on larger corpora (its indexing is the slowest build)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--workdir", default=str(ROOT / "data" / "cache" / "speed"),
                   help="sparseir indexes are cached here per corpus; peers are built in temporary folders")
    args = p.parse_args(argv)
    args.argv = argv if argv is not None else __import__("sys").argv[1:]
    if "sparseir-exact" not in args.engines:
        p.error("sparseir-exact is the reference for recall; keep it in --engines")
    started = time.perf_counter()
    base = scifact_vectors()
    queries = quantize_queries(base.queries)
    bandwidth = memory_bandwidth()
    records, infos = [], []
    for name in args.corpora:
        recs, info = run_corpus(name, base, queries, args)
        info["targets"] = targets(recs, info["corpus"])
        records += recs
        infos.append(info)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"argv": args.argv, "machine": {"cpu": platform.processor() or platform.machine(),
                                             "cores": numba.config.NUMBA_NUM_THREADS},
              "bandwidth_bytes_per_s": bandwidth, "query_levels": QUERY_LEVELS,
              "approx_defaults": asdict(ApproxParams()), "seismic_build": SEISMIC_BUILD, "bmp_block": BMP_BLOCK,
              "corpora": infos, "records": records, "seconds": time.perf_counter() - started}
    write_atomic(out / "speed.json", json.dumps(report, indent=2))
    write_atomic(out / "speed.md", markdown(records, infos, bandwidth, args))
    plot(records, out / "speed_latency_recall.png")
    print((out / "speed.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
