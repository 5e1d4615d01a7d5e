"""Query speed against the peers' best configurations: sparseir exact and approximate, PISA,
Seismic, BMP and Lucene impact search, on real text.

Re-measure only the headline (after a change to sparseir's kernels; indexes and sweeps are cached,
roughly 20 minutes on realtext + realtext-1M, the first 1,000 queries)::

    flock /work/bench.lock python -m bench.speed headline
    flock /work/bench.lock python -m bench.speed headline --rebuild-sparseir   # after an index format change

Run the sweeps (every build and search setting of every engine; each built index and each
measured point is cached, so a re-run measures only what is missing), then the headline::

    flock /work/bench.lock python -m bench.speed sweep --corpora realtext realtext-1M scifact nfcorpus
    flock /work/bench.lock python -m bench.speed headline --corpora realtext realtext-1M scifact nfcorpus

``python -m bench.speed report`` rewrites ``bench/results/speed.{md,json}`` and the plots from the caches.

Corpora (``bench.speed_corpora``): realtext (366,372 real documents, 6,980 MS MARCO dev queries),
realtext-1M (mixed from the realtext vectors), SciFact and NFCorpus (BEIR test queries, nDCG@10).
Every engine indexes the same integer impacts (sparseir's uint8 quantisation) in one shared
document order per corpus (``--order bp``: sparseir's recursive graph bisection,
``sparseir.index.reorder.bp_order``, when it can be imported; else the corpus order; the report
says which), and searches the same integer query weights (each query scaled so its largest weight
is ``QUERY_LEVELS``, rounded), so exact engines compute identical integer scores. Engines return
positions in the shared order; ``order-bp.npy`` maps a position to the original row and ``ids.txt``
to the document id (as sparseir's index does).

Recall@10 is tie-aware, against sparseir exact on the same queries: a returned document counts
when its exact score reaches the exact 10th score. Latency: one thread; each query's time is the
minimum over ``--repeats`` passes after a warm-up pass. Builds run in a child process
(``bench.speed_build``): build seconds and its peak RSS (``getrusage``).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from bench.speed_build import built
from bench.speed_corpora import CACHE, Corpus, df_curve, load_corpus, near_duplicates, plot_df, save_csr
from bench.speed_engines import Engine, make
from bench.synth import ROOT
from sparseir.evaluate import evaluate
from sparseir.timing import single_thread

QUERY_LEVELS = 32  # BMP's MAX_TERM_WEIGHT
K = 10
RECALL_TARGETS = (0.90, 0.95, 0.99)
APPROX_RATIO_TARGET = 0.7
RESULTS = ROOT / "bench" / "results"
BASELINE = {"corpus": "scifact", "engine": "sparseir-exact", "mean_us": 94.0, "n_queries": 300,
            "source": "bench/results/speed.json at 8bf1d43 (2026-11-21), the SciFact test queries"}

# The sparseir approximate sweep: each point goes to ``ApproxSearcher.with_params(**point)``; the
# build knobs (``APPROX_BUILD``: n_postings, block_size; ``IMPACT_KEEP``: the "impact" source's keep
# fraction) make separate builds.
APPROX_BUILD = {}
APPROX_SWEEP = [{"source": "full", "query_cut": qc, "candidates": c} for qc, c in ((4, 100), (6, 200), (8, 300), (12, 200))]
APPROX_SWEEP += [{"source": "pruned"}, {"source": "pruned", "query_cut": 16, "budget": 100_000, "candidates": 1000}]
IMPACT_KEEP = (0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
IMPACT_SWEEP = [{"source": "impact", "query_cut": qc, "candidates": c} for qc in (8, 10, 12, 64)
                for c in (25, 50, 100, 200, 400)]
# Seismic: a build grid around its authors' guidance (docs/Guidelines.md: n_postings 3000-6000 for
# MS MARCO's 8.8M documents, here scaled down with the corpus; centroid_fraction 0.05-0.2;
# summary_energy 0.4-0.6), with and without the kNN graph. max_fraction stays at the Python
# default 1.5 (the guidelines suggest 6: not swept for lack of time).
SEISMIC_BUILDS = [
    {"n_postings": n, "centroid_fraction": cf, "summary_energy": se, "max_fraction": 1.5, "nknn": kn}
    for n, cf, se, kn in ((1000, 0.1, 0.4, 0), (2000, 0.1, 0.4, 0), (4000, 0.1, 0.4, 0), (2000, 0.2, 0.5, 0),
                          (1000, 0.2, 0.5, 0), (2000, 0.1, 0.4, 10))
]
SEISMIC_SWEEP = [{"query_cut": qc, "heap_factor": hf} for qc in (3, 5, 10, 20, 40)
                 for hf in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
SEISMIC_KNN_SWEEP = [{"query_cut": qc, "heap_factor": hf, "n_knn": nk}
                     for qc in (3, 5, 10, 20) for hf in (0.6, 0.7, 0.9) for nk in (5, 10)]
BMP_BLOCKS = (8, 16, 32, 64, 128)
BMP_SWEEP = [{"alpha": a, "beta": b} for a, b in ((1.0, 1.0), (0.95, 1.0), (0.9, 1.0), (0.8, 1.0), (0.7, 1.0),
                                                  (1.0, 0.9), (0.9, 0.8))]
LUCENE_MAX_DOCS = 1_100_000  # built at realtext size (~3 min) and at 1M; not beyond
# Above LARGE_DOCS, a reduced grid (builds take minutes each): Seismic's best realtext build
# (centroid_fraction 0.2, summary_energy 0.5, n_postings 2000) with n_postings scaled by the
# document count (1M / 366k), BMP's best blocks.
LARGE_DOCS = 500_000
SEISMIC_BUILDS_LARGE = [{"n_postings": 5000, "centroid_fraction": 0.2, "summary_energy": 0.5, "max_fraction": 1.5,
                         "nknn": 0}]
BMP_BLOCKS_LARGE = (8, 16)
SEISMIC_SWEEP_LARGE = [{"query_cut": qc, "heap_factor": hf} for qc in (5, 10, 20) for hf in (0.7, 0.8, 0.9)]


def sweep_engines(n_docs: int, engines: list[str]) -> list[Engine]:
    """Every engine configuration of the sweep phase (``engines`` filters by name)."""
    out: list[Engine] = [make("sparseir-exact"), make("sparseir-approx", APPROX_BUILD, APPROX_SWEEP)]
    out += [make("sparseir-approx", {"keep": keep}, IMPACT_SWEEP) for keep in IMPACT_KEEP]
    out.append(make("pisa"))
    large = n_docs > LARGE_DOCS
    out += [make("bmp", {"bsize": b}, BMP_SWEEP) for b in (BMP_BLOCKS_LARGE if large else BMP_BLOCKS)]
    out += [make("seismic", b, SEISMIC_KNN_SWEEP if b["nknn"] else SEISMIC_SWEEP_LARGE if large else SEISMIC_SWEEP)
            for b in (SEISMIC_BUILDS_LARGE if large else SEISMIC_BUILDS)]
    if n_docs <= LUCENE_MAX_DOCS:
        out.append(make("lucene-impact"))
    return [e for e in out if e.name in engines]


# ---------------------------------------------------------------------------------------------------
# Corpus preparation: shared order, sparseir index, integer impacts, integer queries.

def quantize_queries(q: sp.csr_matrix, levels: int = QUERY_LEVELS) -> sp.csr_matrix:
    """Each row scaled so its largest weight is ``levels``, rounded to integers; zeros dropped."""
    q = sp.csr_matrix(q, dtype=np.float32, copy=True)
    peak = np.maximum.reduceat(q.data, q.indptr[:-1]) if q.nnz else np.zeros(0)
    rows = np.repeat(np.arange(q.shape[0]), np.diff(q.indptr))
    q.data = np.rint(q.data / peak[rows] * levels).astype(np.float32)
    q.eliminate_zeros()
    return q


def integer_docs(index) -> sp.csr_matrix:
    """The index's stored impacts as a document-major CSR of integers (explicit zeros dropped)."""
    from sparseir.search.approx_kernels import forward_index

    dims = np.empty(index.n_postings, dtype=np.int32)
    vals = np.empty(index.n_postings, dtype=index.impacts.dtype)
    indptr = forward_index(index.offsets, np.asarray(index.docs), np.asarray(index.impacts),
                           np.asarray(index.doc_nnz), dims, vals)
    docs = sp.csr_matrix((vals.astype(np.float32), dims, indptr), shape=(index.n_docs, index.n_dims))
    docs.eliminate_zeros()
    return docs


def doc_order(docs: sp.csr_matrix, folder: Path, want: str) -> tuple[np.ndarray, str]:
    """The shared document order (new position -> original row) and its name, cached."""
    if want == "bp":
        try:
            from sparseir.index.reorder import bp_order
        except ImportError:
            tqdm.write("sparseir.index.reorder.bp_order is not available: corpus order")
            want = "corpus"
    if want == "corpus":
        return np.arange(docs.shape[0]), "corpus"
    path = folder / "order-bp.npy"
    if not path.is_file():
        start = time.perf_counter()
        perm = np.asarray(bp_order(sp.csr_matrix(docs), seed=0), dtype=np.int64)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(path, perm)
        (folder / "order-bp.json").write_text(json.dumps({"seconds": time.perf_counter() - start}), encoding="utf-8")
    return np.load(path), "bp"


def prepare(name: str, order: str, cache: Path, n_queries: int | None = None,
            rebuild_sparseir: bool = False) -> dict[str, Any]:
    """Everything the engines share for one corpus (the first ``n_queries`` queries, all when None);
    builds what is not cached (and sparseir's index again with ``rebuild_sparseir``)."""
    c: Corpus = load_corpus(name)
    perm, order = doc_order(c.docs, cache / name, order)
    cdir = cache / name / order
    cdir.mkdir(parents=True, exist_ok=True)
    if not (cdir / "docs-float.npz").is_file():
        (cdir / "terms.txt").write_text("\n".join(c.terms), encoding="utf-8")
        (cdir / "ids.txt").write_text("\n".join(c.doc_ids[i] for i in perm), encoding="utf-8")
        save_csr(cdir / "docs-float.npz", c.docs[perm])
    if rebuild_sparseir:
        shutil.rmtree(cdir / "sparseir", ignore_errors=True)
    sparseir_build = built("sparseir-index", {}, cdir, cdir / "sparseir")
    if not (cdir / "docs-int.npz").is_file():
        from sparseir.index import SparseIndex

        save_csr(cdir / "docs-int.npz", integer_docs(SparseIndex.load(cdir / "sparseir" / "index", verify=False)))
    from bench.speed_engines import load_int_docs

    docs = load_int_docs(cdir)
    queries = quantize_queries(c.queries[:n_queries] if n_queries else c.queries)
    lengths = np.bincount(docs.indices, minlength=docs.shape[1])
    touched = np.array([lengths[queries[i].indices].sum() for i in range(queries.shape[0])])
    info = {"corpus": name, "order": order, "n_docs": docs.shape[0], "n_postings": int(docs.nnz),
            "postings_per_doc": docs.nnz / docs.shape[0], "n_queries": queries.shape[0], "n_queries_available": c.queries.shape[0],
            "query_terms_mean": float(np.diff(queries.indptr).mean()),
            "postings_per_query_mean": float(touched.mean()), "note": c.note,
            "order_seconds": _json(cache / name / "order-bp.json").get("seconds") if order == "bp" else None}
    return {"corpus": c, "dir": cdir, "docs": docs, "queries": queries, "info": info,
            "sparseir_build": sparseir_build}


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------------
# Measurement.

def _timed_passes(engine: Engine, prepared: list[Any], point: dict, repeats: int, budget_s: float) -> np.ndarray:
    """Per-query seconds: the minimum over up to ``repeats`` passes after a warm-up pass
    (fewer, at least one, when the passes would take more than ``budget_s`` in all)."""
    start = time.perf_counter()
    for q in prepared:
        engine.search(q, K, point)
    warm = time.perf_counter() - start
    best = np.full(len(prepared), np.inf)
    for _ in range(max(1, min(repeats, int(budget_s / max(warm, 1e-9))))):
        for i, q in enumerate(prepared):
            t0 = time.perf_counter()
            engine.search(q, K, point)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


class Truth:
    """sparseir exact top-10 of every query, with its exact scores (the reference for recall)."""

    def __init__(self, results: list[np.ndarray], docs: sp.csr_matrix, queries: sp.csr_matrix) -> None:
        self.docs, self.queries = docs, queries
        self.top = [np.sort(s)[::-1] for s in self.scores(results)]

    def scores(self, results: list[np.ndarray]) -> list[np.ndarray]:
        """Each result's exact integer scores of its distinct documents (score > 0 only)."""
        out = []
        for i, r in enumerate(results):
            r = np.unique(np.asarray(r[:K], dtype=np.int64))
            s = (self.docs[r] @ self.queries[i].T).toarray().ravel() if len(r) else np.zeros(0)
            out.append(s[s > 0])
        return out

    def compare(self, results: list[np.ndarray]) -> tuple[float, float]:
        """Tie-aware recall@10 (mean over queries with a hit) and the share of queries whose top-10
        scores equal exact's (identical results, ties aside)."""
        recalls, same = [], []
        for got, top in zip(self.scores(results), self.top):
            same.append(np.array_equal(np.sort(got)[::-1], top))
            if len(top):
                recalls.append(min(len(top), int((got >= top[-1]).sum())) / len(top))
        return (float(np.mean(recalls)) if recalls else float("nan")), float(np.mean(same))


def ndcg(results: list[np.ndarray], query_ids: list[str], doc_ids: list[str],
         qrels: dict[str, dict[str, int]] | None) -> float | None:
    if qrels is None:
        return None
    run = {qid: {doc_ids[d]: float(K - r) for r, d in enumerate(res[:K])} for qid, res in zip(query_ids, results)}
    return evaluate(run, qrels, metrics=("nDCG@10",))["nDCG@10"]


def measure(engine: Engine, build: dict[str, Any], points: list[dict[str, Any]], data: dict[str, Any],
            truth: Truth | None, args) -> list[dict[str, Any]]:
    """Open ``engine``'s built index and measure ``points`` on every query. One record per point."""
    out = data["dir"] / ("sparseir" if engine.name.startswith("sparseir") else engine.key)
    gc.collect()
    engine.open(out)
    queries, c = data["queries"], data["corpus"]
    prepared = [engine.prepare(queries[i]) for i in range(queries.shape[0])]
    doc_ids = (data["dir"] / "ids.txt").read_text(encoding="utf-8").split("\n")
    records = []
    for point in points:
        with single_thread():
            lat = _timed_passes(engine, prepared, point, args.repeats, args.pass_budget)
            results = [engine.search(q, K, point) for q in prepared]
        recall, same = truth.compare(results) if truth is not None else (1.0, 1.0)
        rec = {"engine": engine.name, "corpus": c.name, "order": data["info"]["order"], "build": engine.build_config,
               "point": point, "settings": engine.settings(point) if hasattr(engine, "settings") else point,
               "build_s": build["build_s"] + getattr(engine, "open_s", 0.0), "peak_rss_bytes": build["peak_rss_bytes"],
               "bytes": engine.nbytes(out), "n_queries": len(prepared),
               "mean_us": float(lat.mean() * 1e6), "p50_us": float(np.percentile(lat, 50) * 1e6),
               "p99_us": float(np.percentile(lat, 99) * 1e6), "qps_1t": float(1.0 / lat.mean()),
               "recall@10": recall, "top10_identical": same,
               "nDCG@10": ndcg(results, c.query_ids, doc_ids, c.qrels), "sparseir_commit": args.commit,
               "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        if hasattr(engine, "open_s"):
            rec["open_s"] = engine.open_s
        records.append(rec)
        tqdm.write(f"  {c.name} {engine.key} {point}: {rec['mean_us']:.0f} µs, recall {recall:.4f}, "
                   f"identical {same:.3f}")
        if truth is None:
            truth = data["truth"] = Truth(results, data["docs"], queries)
    engine.close()
    return records


def _point_key(engine: Engine, point: dict[str, Any]) -> str:
    return json.dumps([engine.key, point], sort_keys=True)


def sweep(name: str, args) -> None:
    """Measure every configuration of every engine not measured yet (cached per point)."""
    data = prepare(name, args.order, args.cache, args.queries, args.rebuild_sparseir)
    path = data["dir"] / f"sweep-q{data['info']['n_queries']}.json"
    done = _json(path)
    engines = sweep_engines(data["info"]["n_docs"], args.engines)
    data["truth"] = None
    for engine in engines:
        todo = [p for p in engine.points if args.remeasure or _point_key(engine, p) not in done]
        if engine.name == "sparseir-exact":
            todo = engine.points  # the reference for recall, measured in every run
        if not todo:
            continue
        if engine.name.startswith("sparseir"):
            build = data["sparseir_build"]
        else:
            out = data["dir"] / engine.key
            tqdm.write(f"{name}: building {engine.key}" if not (out / "BUILT.json").is_file() else "")
            build = built(engine.name, engine.build_config, data["dir"], out)
        for rec in measure(engine, build, todo, data, data["truth"], args):
            done[_point_key(engine, rec["point"])] = rec
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(done, indent=1), encoding="utf-8")
        tmp.replace(path)
    (data["dir"] / "info.json").write_text(json.dumps(data["info"], indent=1), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# Headline: sparseir against each peer's best exact setting and Seismic's Pareto points, one process.

def pareto(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records no other record beats on both latency and recall, fastest first."""
    out, best = [], -1.0
    for r in sorted(records, key=lambda r: (r["mean_us"], -r["recall@10"])):
        if r["recall@10"] > best:
            out.append(r)
            best = r["recall@10"]
    return out


def fastest(records: list[dict[str, Any]], engine: str, floor: float = 0.0, exact: bool = False):
    ok = [r for r in records if r["engine"] == engine and r["recall@10"] >= floor
          and (not exact or r["top10_identical"] == 1.0)]
    return min(ok, key=lambda r: r["mean_us"]) if ok else None


def headline_plan(swept: list[dict[str, Any]]) -> list[tuple[str, dict, list[dict]]]:
    """(engine, build config, points) to re-measure: sparseir exact, PISA's and BMP's fastest exact
    settings, Lucene, and sparseir approx's, Seismic's and BMP's fastest settings reaching each
    recall target."""
    picks: list[dict[str, Any]] = []
    for engine in ("pisa", "bmp", "lucene-impact"):
        picks.append(fastest(swept, engine, exact=True))
    for engine in ("sparseir-approx", "seismic", "bmp"):
        picks += [fastest(swept, engine, t) for t in RECALL_TARGETS]
    plan: dict[str, tuple[str, dict, list[dict]]] = {}
    for r in filter(None, picks):
        key = json.dumps([r["engine"], r["build"]], sort_keys=True)
        _, _, points = plan.setdefault(key, (r["engine"], r["build"], []))
        if r["point"] not in points:
            points.append(r["point"])
    return [("sparseir-exact", {}, [{}])] + list(plan.values())


def headline(name: str, args) -> None:
    data = prepare(name, args.order, args.cache, args.queries, args.rebuild_sparseir)
    n = data["info"]["n_queries"]
    swept = list(_json(data["dir"] / f"sweep-q{args.sweep_queries or n}.json").values())
    data["truth"], records = None, []
    for engine_name, build_config, points in headline_plan(swept):
        engine = make(engine_name, build_config, points)
        build = data["sparseir_build"] if engine_name.startswith("sparseir") else \
            built(engine_name, build_config, data["dir"], data["dir"] / engine.key)
        records += measure(engine, build, points, data, data["truth"], args)
    (data["dir"] / f"headline-q{n}.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    (data["dir"] / "info.json").write_text(json.dumps(data["info"], indent=1), encoding="utf-8")


def targets(records: list[dict[str, Any]], corpus: str) -> dict[str, Any]:
    """The issue's targets on one corpus's headline records (ratios: sparseir / peer latency)."""
    rs = [r for r in records if r["corpus"] == corpus]
    exact = fastest(rs, "sparseir-exact")
    out: dict[str, Any] = {}
    if exact is None:
        return out
    for peer in ("pisa", "lucene-impact", "bmp"):
        p = fastest(rs, peer, exact=True)
        if p:
            out[f"exact_vs_{peer}"] = {"ratio": exact["mean_us"] / p["mean_us"], "sparseir_us": exact["mean_us"],
                                       "peer_us": p["mean_us"], "peer_point": p["point"], "peer_build": p["build"],
                                       "identical_sparseir": exact["top10_identical"],
                                       "identical_peer": p["top10_identical"],
                                       "met": exact["mean_us"] < p["mean_us"] and p["top10_identical"] == 1.0}
    measured = {r["engine"] for r in rs}
    for t in RECALL_TARGETS if {"sparseir-approx", "seismic"} <= measured else ():
        a, s = fastest(rs, "sparseir-approx", t), fastest(rs, "seismic", t)
        out[f"approx_vs_seismic@{t:.2f}"] = {
            "ratio": a["mean_us"] / s["mean_us"] if a and s else None,
            "sparseir": a and {k: a[k] for k in ("point", "mean_us", "recall@10")},
            "seismic": s and {k: s[k] for k in ("build", "point", "mean_us", "recall@10")},
            "met": bool(a and s and a["mean_us"] <= APPROX_RATIO_TARGET * s["mean_us"])}
    if corpus == BASELINE["corpus"]:
        out["scifact_exact_vs_committed"] = {"now_us": exact["mean_us"], "committed": BASELINE,
                                             "ratio": exact["mean_us"] / BASELINE["mean_us"],
                                             "met": exact["mean_us"] <= BASELINE["mean_us"] * 1.05}
    return out


# ---------------------------------------------------------------------------------------------------
# Report.

HOW_PEERS_RAN = """\
## How each engine was run

All engines index the same integer impacts (sparseir's uint8 quantisation of the splade-tiny
vectors) in one shared document order per corpus (column *order*: `bp` = sparseir's recursive graph
bisection, `corpus` = the corpus's own order), and search the same integer queries (each scaled so
its largest weight is 32, rounded), one query at a time on one thread. Builds run in a child process
(`bench/speed_build.py`): *build s* is its wall time from the cached input files, *peak RSS* its
`getrusage` maximum (Python and the input matrix included); *bytes* are the index files on disk
(sparseir approx: the exact index plus its in-memory structures, built when the index is opened and
timed there, added to *build s*; its *peak RSS* is the exact index's build).

- **sparseir exact**: `sparseir.search.Searcher.search_vectors`, one query per call.
- **sparseir approx**: `ApproxSearcher.with_params(**point)` for each point of `APPROX_SWEEP` (sources
  "full" and "pruned") and, for each `keep` in `IMPACT_KEEP` (a build knob), of `IMPACT_SWEEP` (source
  "impact", the default).
- **PISA** (the build bundled in `pyterrier-pisa` 0.4.9): `PisaIndex(path, stemmer='none')`, `toks_indexer(scale=1)`
  on the integer impacts, `quantized` scorer, `query_weighted` (pyterrier-pisa repeats a query term
  `weight` times, so the score is weight x impact), `block_simdbp` encoding, 64-posting blocks; each
  query goes to `_pisathon.retrieve` directly (what `PisaRetrieve.transform` calls, without its
  DataFrame work). Every algorithm (maxscore, block_max_maxscore, block_max_wand, wand, ranked_or) is
  timed; the best exact one is in the headline. pyterrier-pisa does not expose PISA's document
  reordering (`_pisathon.cpp` includes `reorder_docids.hpp` but binds no function to it), so PISA
  indexes the shared order.
- **Seismic** (`pyseismic-lsr` 0.5.4): `SeismicIndex.build_from_dataset` over a grid of `n_postings`,
  `centroid_fraction`, `summary_energy` (around its guidelines for MS MARCO, scaled to the corpus),
  with and without the kNN graph (`nknn` at build, `n_knn` at search); search knobs `query_cut`,
  `heap_factor` (`sorted=True`, its default). Index saved and loaded with `save`/`load` (and
  `save_knn`/`load_knn`).
- **BMP** (`bmp` 0.2.8): `Indexer(bsize=..., compress_range=False)` on the shared order (its README
  prescribes reordered ids: here BP when available), block sizes 16-128; `alpha = beta = 1` is exact.
- **Lucene impact** (Anserini through Pyserini): `IndexCollection -impact -pretokenized -optimize`,
  one indexing thread, `SimpleImpactSearcher.search`; realtext size and below only.

Caveats:
- BMP's `alpha = beta = 1` is not always exact: on SciFact it misses documents whose exact score is
  above 65,535 (every miss checked had one; consistent with 16-bit score accumulators, with 8-bit
  impacts times 32-level queries). On realtext its exact setting returned the exact top-10.
- The peers' settings in the headline are chosen on the sweep (same queries), then re-measured;
  the shared machine makes single runs vary by 10-30%, which is why the headline runs side by side.
- Above 500k documents the grid is reduced (one Seismic build, two BMP block sizes); Lucene is built
  up to 1.1M documents (about 3 min at 366k). realtext-3M (218M postings) was run with
  ``--engines sparseir-exact pisa`` only: BMP's 1M builds peaked at 9.3 GB RSS, so 3M does not fit
  in 24 GB, and Seismic's and Lucene's builds did not fit the session.
"""


def _fmt_point(r: dict[str, Any]) -> str:
    b = ", ".join(f"{k}={v}" for k, v in r["build"].items())
    p = ", ".join(f"{k}={v}" for k, v in r["point"].items()) or "default"
    return f"{b} / {p}" if b else p


def _table(records: list[dict[str, Any]]) -> list[str]:
    lines = ["| engine | build / search setting | build s | peak RSS | bytes | mean µs | p50 µs | p99 µs | QPS 1T "
             "| recall@10 | identical top-10 | nDCG@10 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        nd = f"{r['nDCG@10']:.4f}" if r.get("nDCG@10") is not None else "n/a"
        lines.append(f"| {r['engine']} | {_fmt_point(r)} | {r['build_s']:.1f} | {r['peak_rss_bytes'] / 2**20:.0f} MiB | "
                     f"{r['bytes'] / 1e6:.1f} MB | {r['mean_us']:.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | "
                     f"{r['qps_1t']:.0f} | {r['recall@10']:.4f} | {r['top10_identical']:.3f} | {nd} |")
    return lines


def _target_lines(t: dict[str, Any]) -> list[str]:
    lines = []
    for peer in ("pisa", "lucene-impact", "bmp"):
        x = t.get(f"exact_vs_{peer}")
        if x:
            lines.append(f"- exact, sparseir / {peer} ({_fmt_point({'build': x['peer_build'], 'point': x['peer_point']})})"
                         f": {x['sparseir_us']:.0f} / {x['peer_us']:.0f} µs = **{x['ratio']:.2f}x**, sparseir {1 / x['ratio']:.2f}x as fast "
                         f"({'met' if x['met'] else 'NOT met'}; identical top-10: sparseir {x['identical_sparseir']:.3f}, "
                         f"{peer} {x['identical_peer']:.3f})")
    for thr in RECALL_TARGETS:
        x = t.get(f"approx_vs_seismic@{thr:.2f}")
        if not x:
            continue
        if x["ratio"] is None:
            missing = " and ".join(n for n, v in (("sparseir", x["sparseir"]), ("Seismic", x["seismic"])) if v is None)
            lines.append(f"- approx at recall@10 >= {thr:.2f}: no setting of {missing} reaches it")
            continue
        a, s = x["sparseir"], x["seismic"]
        lines.append(f"- approx at recall@10 >= {thr:.2f}, sparseir / Seismic: {a['mean_us']:.0f} µs "
                     f"({a['recall@10']:.3f}, {a['point'] or 'default'}) / {s['mean_us']:.0f} µs ({s['recall@10']:.3f}, "
                     f"{_fmt_point(s)}) = **{x['ratio']:.2f}x** (target <= {APPROX_RATIO_TARGET}: "
                     f"{'met' if x['met'] else 'NOT met'})")
    x = t.get("scifact_exact_vs_committed")
    if x:
        lines.append(f"- SciFact exact now {x['now_us']:.0f} µs vs committed {x['committed']['mean_us']:.0f} µs "
                     f"({x['committed']['source']}): {x['ratio']:.2f}x ({'no regression' if x['met'] else 'REGRESSION'})")
    return lines


def plot(corpus: str, swept: list[dict[str, Any]], head: list[dict[str, Any]], path: Path) -> None:
    """Latency against recall@10: every sweep point, each engine's Pareto frontier, the headline."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, engine in enumerate(dict.fromkeys(r["engine"] for r in swept + head)):
        color = f"C{i}"
        rs = [r for r in swept if r["engine"] == engine]
        if rs:
            ax.plot([r["recall@10"] for r in rs], [r["mean_us"] for r in rs], ".", color=color, alpha=0.3)
            front = pareto(rs)
            ax.plot([r["recall@10"] for r in front], [r["mean_us"] for r in front], "-", color=color, lw=1)
        hs = [r for r in head if r["engine"] == engine]
        if hs:
            ax.plot([r["recall@10"] for r in hs], [r["mean_us"] for r in hs], "o", color=color, label=engine)
        elif rs:
            ax.plot([], [], "-", color=color, label=f"{engine} (sweep)")
    ax.set_yscale("log")
    ax.set_xlabel("recall@10 vs exact (tie-aware)")
    ax.set_ylabel("mean latency, 1 thread (µs)")
    for t in RECALL_TARGETS:
        ax.axvline(t, color="grey", lw=0.5, ls="--")
    ax.set_title(f"{corpus}: dots = sweep, lines = Pareto frontiers, circles = headline")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


REPORT_ORDER = ("realtext", "realtext-1M", "scifact", "nfcorpus")


def report(args) -> None:
    """``bench/results/speed.{md,json}`` and ``speed_<corpus>_<order>.png`` from every cached sweep and
    headline under ``args.cache``."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Query speed on real text: sparseir vs PISA, Seismic, BMP, Lucene impact search", "",
             f"Generated by `python -m bench.speed` (see its docstring) on {platform.processor() or platform.machine()}, "
             "2 cores shared with other work, one thread per query. Each corpus section names the sparseir "
             "commits it measured (`speed.json` has it per record, `sparseir_commit`).", ""]
    summary = ["## Targets", "", "A target is missing below where its engine or corpus has not been measured yet (no "
               "rows in the cache: see the sections further down).", ""]
    report_json: dict[str, Any] = {"query_levels": QUERY_LEVELS, "recall_targets": RECALL_TARGETS,
                                   "approx_sweep": APPROX_SWEEP, "seismic_builds": SEISMIC_BUILDS,
                                   "bmp_blocks": BMP_BLOCKS, "baseline": BASELINE, "corpora": {}}
    names = sorted({p.parent.parent.name for p in args.cache.glob("*/*/info.json")},
                   key=lambda n: (REPORT_ORDER.index(n) if n in REPORT_ORDER else len(REPORT_ORDER), n))
    body = []
    for name, order in [(n, o) for n in names for o in ("bp", "corpus") if (args.cache / n / o / "info.json").is_file()]:
        cdir = args.cache / name / order
        info = _json(cdir / "info.json")
        sweep_file, head_file = _largest(cdir, "sweep"), _largest(cdir, "headline")
        swept = list(_json(sweep_file).values()) if sweep_file else []
        head = json.loads(head_file.read_text(encoding="utf-8")) if head_file else []
        n = head[0]["n_queries"] if head else swept[0]["n_queries"] if swept else 0
        t = targets(head or swept, name)
        commits = sorted({r["sparseir_commit"] for r in swept + head})
        report_json["corpora"][f"{name}/{order}"] = {"info": info, "targets": t, "headline": head, "sweep": swept}
        body += [f"## {name}: {info['n_docs']:,} docs, {info['n_postings']:,} postings ({info['postings_per_doc']:.0f}/doc), "
                  f"order: {info['order']}", "",
                  f"Queries: the first {n:,} of {info['n_queries_available']:,} (file order) in the headline"
                  + (f", {swept[0]['n_queries']:,} in the sweep" if swept else "") + f"; with "
                  f"{info['n_queries']:,} queries: {info['query_terms_mean']:.1f} terms and "
                  f"{info['postings_per_query_mean']:,.0f} postings per query.", ""]
        if info.get("note"):
            body += [f"Corpus: {info['note']}.", ""]
        body += [f"sparseir commits measured: {', '.join(commits)}.", ""]
        if head:
            body += ["### Headline (re-measured side by side in one process)", "", *_table(head), "",
                     "Targets:", *_target_lines(t), ""]
            summary += [f"**{name}** ({order} order, {n:,} queries):", *_target_lines(t), ""]
        else:
            body += ["No headline run yet: the targets below come from the sweep (each engine measured in its own "
                     "process run, not side by side).", "", "Targets (sweep):", *_target_lines(t), ""]
            summary += [f"**{name}** ({order} order, {n:,} queries; from the sweep, no headline yet):",
                        *_target_lines(t), ""]
        if swept:
            body += ["### Sweep: Pareto frontier of each engine, and every exact setting", ""]
            keep = []
            for engine in dict.fromkeys(r["engine"] for r in swept):
                rs = [r for r in swept if r["engine"] == engine]
                keep += [r for r in rs if r["top10_identical"] == 1.0 and r not in pareto(rs)] + pareto(rs)
            body += [*_table(keep), "", f"All {len(swept)} sweep points are in `speed.json`.", ""]
            png = f"speed_{name}_{order}.png"
            plot(f"{name} ({order} order)", swept, head, out / png)
            body += [f"![latency vs recall, {name}, {order} order]({png})", ""]
    lines += summary + [HOW_PEERS_RAN] + body
    if (out / "speed_df.png").is_file():
        lines += ["## Term document-frequency curves", "", _json(out / "speed_df.json").get("text", ""), "",
                  "![df curves](speed_df.png)", ""]
    tmp = out / ".speed.md.tmp"
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(out / "speed.md")
    tmp = out / ".speed.json.tmp"
    tmp.write_text(json.dumps(report_json, indent=1), encoding="utf-8")
    tmp.replace(out / "speed.json")


def _largest(folder: Path, phase: str) -> Path | None:
    """``<phase>-q<N>.json`` with the largest N in ``folder``, if any."""
    files = sorted(folder.glob(f"{phase}-q*.json"), key=lambda p: int(p.stem.split("-q")[-1]))
    return files[-1] if files else None


def df_check(base: str, resampled: list[str], args) -> None:
    """Plot the term document-frequency curves of ``resampled`` against ``base``'s and measure
    near-duplicates (``speed_df.{png,json}``)."""
    curves, dup = {}, {}
    for name in [base, *resampled]:
        docs = load_corpus(name).docs
        curves[name] = df_curve(docs)
        dup[name] = near_duplicates(docs)
        del docs
        gc.collect()
    out = Path(args.out)
    plot_df(curves, out / "speed_df.png")
    text = ("Mixing takes each parent term with probability 1/3 and keeps the larger weight of a repeated "
            "term, so a term in a fraction p of realtext's documents is in about 1-(1-p/3)^3 of the mixed "
            "ones: p for rare terms, less for the few most common. ") + "; ".join(f"{n}: {len(c):,} terms occur, top-term df {c[0]:.3f}, median nearest-neighbour cosine of "
                     f"{dup[n]['sample']} sampled docs {dup[n]['median_nn_cosine']:.3f}, share above 0.9 "
                     f"{dup[n]['share_nn_cosine_above_0.9']:.3f}" for n, c in curves.items())
    (out / "speed_df.json").write_text(json.dumps({"near_duplicates": dup, "text": text}, indent=1), encoding="utf-8")


def sparseir_commit() -> str:
    """The last commit that changed ``sparseir/``, with ``+dirty`` when its working copy differs."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()

    commit = git("log", "-1", "--format=%h", "--", "sparseir") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "sparseir") else "")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("phase", choices=("sweep", "headline", "report", "df"))
    p.add_argument("--corpora", nargs="+", default=["realtext", "realtext-1M"],
                   help="realtext, realtext-<N>[k|M] (resampled), scifact, nfcorpus")
    p.add_argument("--engines", nargs="+", default=["sparseir-exact", "sparseir-approx", "pisa", "bmp", "seismic",
                                                    "lucene-impact"], help="sweep: engines to measure")
    p.add_argument("--order", choices=("bp", "corpus"), default="bp",
                   help="shared document order (bp falls back to corpus when bp_order is not importable)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per point (minimum per query)")
    p.add_argument("--pass-budget", type=float, default=20.0,
                   help="seconds of timed passes per point before --repeats is cut (at least one pass)")
    p.add_argument("--queries", type=int, default=1000,
                   help="use the first N queries of each corpus, in file order (recall is against exact on the "
                        "same queries; default 1000: the sweep is too long with realtext's 6,980)")
    p.add_argument("--sweep-queries", type=int, default=None,
                   help="headline: pick the peers' settings from the sweep run with this many queries "
                        "(default: the same as --queries)")
    p.add_argument("--rebuild-sparseir", action="store_true",
                   help="write sparseir's index again with the current code (after a format or writer change; the "
                        "peers' cached indexes stay valid while the uint8 impacts are unchanged)")
    p.add_argument("--remeasure", action="store_true", help="sweep: measure cached points again")
    p.add_argument("--cache", type=Path, default=CACHE / "speed", help="built indexes and measurements")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.repeats < 1 or args.pass_budget <= 0 or (args.queries is not None and args.queries < 1):
        p.error("--repeats and --queries must be >= 1 and --pass-budget > 0")
    if args.phase == "sweep" and "sparseir-exact" not in args.engines:
        p.error("sparseir-exact is the reference for recall; keep it in --engines")
    args.commit = sparseir_commit()
    if args.phase == "df":
        df_check("realtext", [c for c in args.corpora if c.startswith("realtext-")], args)
    for name in args.corpora if args.phase in ("sweep", "headline") else []:
        (sweep if args.phase == "sweep" else headline)(name, args)
    report(args)
    print((Path(args.out) / "speed.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
