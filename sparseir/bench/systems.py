"""Run one benchmark system on one dataset: build (cached), time, search, evaluate.

Every base system returns the same result record (see :func:`run_base_system`);
fusion systems are computed from their components' cached results in
:func:`run_fusion`. Latency is measured per query, end to end (query text in,
ranked ids out, query encoding included), with one thread; batch QPS searches
all judged queries at once with ``threads`` threads.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sparseir import fusion
from sparseir._fs import dir_bytes
from sparseir.bench.cache import Cache, digest, read_json, write_json
from sparseir.bench.config import SystemSpec
from sparseir.corpus import load_corpus, load_qrels, load_queries
from sparseir.evaluate import evaluate
from sparseir.search.results import Hit, Run, to_run
from sparseir.timing import latency, peak_rss_bytes, single_thread, summarize_ms, throughput

METRICS = ("nDCG@10", "R@100", "RR@10")
CROSSCHECK_DEPTH = 10


@dataclass(frozen=True)
class Dataset:
    """A dataset as the harness sees it (plain values, so it crosses process boundaries)."""

    spec: str
    name: str
    fingerprint: str
    split: str = "test"

    def corpus(self):
        return load_corpus(self.spec)

    def qrels(self) -> dict[str, dict[str, int]]:
        return load_qrels(self.spec, self.split)

    def queries(self) -> dict[str, str]:
        """Judged queries only (those with a relevant document), in file order."""
        judged = {q for q, docs in self.qrels().items() if any(g > 0 for g in docs.values())}
        return {q: t for q, t in load_queries(self.spec).items() if q in judged}


@dataclass(frozen=True)
class Settings:
    """Run-wide settings a system needs."""

    cache_dir: str
    k: int
    latency_queries: int
    threads: int
    show_progress: bool


def _log(dataset: Dataset, system: str, msg: str) -> None:
    print(f"[{dataset.name}] {system}: {msg}", file=sys.stderr, flush=True)


def _device_name(device: str) -> str:
    """``cpu (<model>)`` or ``cuda (<GPU name>)``."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    from sparseir.bench.machine import cpu_model

    return f"{device} ({cpu_model()})"


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# --- cached artefacts ---------------------------------------------------------------------------

def _docs(dataset: Dataset) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    for doc in dataset.corpus():
        ids.append(doc.id)
        texts.append(doc.text)
    return ids, texts


def encoded_docs(dataset: Dataset, encoder, cache: Cache, show_progress: bool) -> tuple[list[str], sp.csr_matrix,
                                                                                       dict[str, Any], str]:
    """Document vectors for ``encoder``: ``(ids, csr, meta, key)``, encoded once and cached."""
    key = digest("sparse-vectors", dataset.fingerprint, encoder.fingerprint, encoder.config())
    if not cache.has("vectors", key):
        ids, texts = _docs(dataset)
        vectors, seconds = _timed(lambda: encoder.encode_document(texts, show_progress_bar=show_progress))
        with cache.create("vectors", key) as tmp:
            sp.save_npz(tmp / "vectors.npz", sp.csr_matrix(vectors, dtype=np.float32))
            (tmp / "ids.json").write_text(json.dumps(ids), encoding="utf-8")
            write_json(tmp / "meta.json", {"encode_seconds": seconds, "docs_per_second": len(ids) / seconds,
                                           "device": _device_name(str(encoder.device)), "n_docs": len(ids)})
    path = cache.path("vectors", key)
    return (json.loads((path / "ids.json").read_text(encoding="utf-8")), sp.load_npz(path / "vectors.npz").tocsr(),
            read_json(path / "meta.json"), key)


def _cached_build(cache: Cache, kind: str, key: str, build: Callable[[Path], None]) -> tuple[Path, dict[str, Any]]:
    """Build an index folder ``<entry>/index`` once; returns its path and ``{"index_seconds"}``."""
    if not cache.has(kind, key):
        with cache.create(kind, key) as tmp:
            _, seconds = _timed(lambda: build(tmp / "index"))
            write_json(tmp / "meta.json", {"index_seconds": seconds})
    path = cache.path(kind, key)
    return path / "index", read_json(path / "meta.json")


# --- systems -------------------------------------------------------------------------------------

@dataclass
class Prepared:
    """A searchable system: single-query and batch entry points plus its build facts.

    Systems that encode queries also give ``encode`` (texts -> one representation
    each) and ``search_encoded`` (one representation -> hits), so search time can be
    measured apart from query encoding.
    """

    search: Callable[[str], Any]  # query text -> hits, end to end
    batch: Callable[[dict[str, str]], dict[str, list[Hit]]]
    build: dict[str, Any]
    encode: Callable[[list[str]], list[Any]] | None = None
    search_encoded: Callable[[Any], Any] | None = None
    close: Callable[[], None] = lambda: None


def _prepare_bm25(spec: SystemSpec, ds: Dataset, s: Settings, cache: Cache) -> Prepared:
    from sparseir.baselines.bm25 import BM25Searcher, build_bm25_index

    corpus = ds.corpus()
    path, meta = _cached_build(cache, "bm25", digest("bm25-index", ds.fingerprint), lambda out: build_bm25_index(
        corpus, out, threads=s.threads, show_progress=s.show_progress, total=len(corpus)))
    searcher = BM25Searcher(path, k1=spec.params["k1"], b=spec.params["b"])
    return Prepared(lambda text: searcher.search(text, s.k),
                    lambda queries: searcher.batch_search(queries, k=s.k, threads=s.threads),
                    {**meta, "index_bytes": dir_bytes(path), "docs_per_second": None, "device": None})


def _prepare_dense(spec: SystemSpec, ds: Dataset, s: Settings, cache: Cache) -> Prepared:
    from sparseir.baselines.dense import DenseIndex, DenseSearcher, load_model
    from sparseir.bench.cache import model_fingerprint

    p = spec.params
    model = load_model(p["model"], max_seq_length=p["max_seq_length"])
    key = digest("dense", ds.fingerprint, model_fingerprint(p["model"]), model.max_seq_length)
    if not cache.has("dense", key):
        ids, texts = _docs(ds)
        index, seconds = _timed(lambda: DenseIndex.build(ids, texts, model, batch_size=p["batch_size"],
                                                         show_progress=s.show_progress))
        with cache.create("dense", key) as tmp:
            _, save_seconds = _timed(lambda: index.save(tmp / "index"))
            write_json(tmp / "meta.json", {"encode_seconds": seconds, "docs_per_second": len(ids) / seconds,
                                           "index_seconds": save_seconds, "device": _device_name(str(model.device))})
    path = cache.path("dense", key)
    searcher = DenseSearcher(DenseIndex.load(path / "index"), model)
    return Prepared(lambda text: searcher.search(text, s.k),
                    lambda queries: searcher.batch_search(queries, k=s.k),
                    {**read_json(path / "meta.json"), "index_bytes": dir_bytes(path / "index")},
                    encode=lambda texts: list(searcher.encode(texts)),
                    search_encoded=lambda vec: searcher.index.search_vectors(vec, s.k)[0])


def _encoder(params: dict[str, Any]):
    from sparseir.encoders import load_encoder

    kwargs = {n: params[n] for n in ("batch_size", "max_active_dims") if params.get(n) is not None}
    return load_encoder(params["encoder"], **kwargs)


def _prepare_sparseir(spec: SystemSpec, ds: Dataset, s: Settings, cache: Cache) -> Prepared:
    from sparseir.index import write_index
    from sparseir.search import Searcher

    encoder = _encoder(spec.params)
    ids, vectors, meta, vkey = encoded_docs(ds, encoder, cache, s.show_progress)
    quantize = spec.params["quantize"]
    path, imeta = _cached_build(cache, "sparseir", digest("sparseir-index", vkey, quantize), lambda out: write_index(
        out, ids, vectors, encoder.terms, quantize=quantize, encoder=encoder))
    searcher = Searcher(path, encoder)

    return Prepared(lambda text: searcher.search(text, s.k),
                    lambda queries: searcher.batch_search(queries, k=s.k, threads=s.threads), {**meta, **imeta, "index_bytes": dir_bytes(path)},
                    encode=lambda texts: list(encoder.encode_query(texts)),
                    search_encoded=lambda vec: searcher.search(vec, s.k))


def _prepare_lucene_impact(spec: SystemSpec, ds: Dataset, s: Settings, cache: Cache,
                           base: SystemSpec) -> tuple[Prepared, Callable[[Run], dict[str, Any]]]:
    """Lucene impact search on ``base``'s vectors, and the cross-check against sparseir on the same integers."""
    from sparseir.baselines.lucene_impact import ImpactSearcher, build_impact_index

    scale = float(spec.params["scale"])
    encoder = _encoder(base.params)
    ids, vectors, meta, vkey = encoded_docs(ds, encoder, cache, s.show_progress)
    path, imeta = _cached_build(cache, "lucene-impact", digest("lucene-impact", vkey, scale), lambda out:
                                build_impact_index(ids, vectors, out, scale=scale, show_progress=s.show_progress))
    searcher = ImpactSearcher(path, scale=scale)

    def batch(queries: dict[str, str]) -> dict[str, list[Hit]]:
        return searcher.batch_search(encoder.encode_query(list(queries.values())), list(queries), k=s.k,
                                     threads=s.threads)

    def crosscheck(lucene_run: Run) -> dict[str, Any]:
        return _crosscheck(ds, s, cache, encoder, ids, vectors, vkey, scale, lucene_run)

    prepared = Prepared(lambda text: searcher.search(encoder.encode_query([text]), s.k), batch,
                        {**meta, **imeta, "index_bytes": dir_bytes(path)},
                        encode=lambda texts: list(encoder.encode_query(texts)),
                        search_encoded=lambda vec: searcher.search(vec, s.k), close=searcher.close)
    return prepared, crosscheck


def _same_up_to_ties(a: dict[str, float], b: dict[str, float]) -> bool:
    """Same score at every rank, and the same documents at each score level, except the level cut by the depth."""
    if list(a.values()) != list(b.values()):
        return False
    if not a:
        return True
    cut = min(a.values())
    return {(d, s) for d, s in a.items() if s > cut} == {(d, s) for d, s in b.items() if s > cut}


def _crosscheck(ds: Dataset, s: Settings, cache: Cache, encoder, ids: list[str], vectors: sp.csr_matrix,
                vkey: str, scale: float, lucene_run: Run) -> dict[str, Any]:
    """sparseir on the integer-quantised vectors Lucene indexed, compared on the top ``CROSSCHECK_DEPTH``."""
    from sparseir.baselines.lucene_impact import quantize
    from sparseir.index import write_index
    from sparseir.search import Searcher

    path, _ = _cached_build(cache, "sparseir-int", digest("sparseir-int", vkey, scale), lambda out: write_index(
        out, ids, quantize(vectors, scale), encoder.terms, quantize="float32"))
    queries = ds.queries()
    qids = list(queries)
    qvec = quantize(encoder.encode_query([queries[q] for q in qids]), scale)
    hits = Searcher(path).batch_search(qvec, qids, k=CROSSCHECK_DEPTH, threads=s.threads)
    ours = to_run(hits)
    theirs = {q: dict(list(lucene_run.get(q, {}).items())[:CROSSCHECK_DEPTH]) for q in qids}
    same_order = sum(list(ours[q]) == list(theirs[q]) for q in qids)
    same_scores = sum(list(ours[q].values()) == list(theirs[q].values()) for q in qids)
    same_up_to_ties = sum(_same_up_to_ties(ours[q], theirs[q]) for q in qids)
    qrels = ds.qrels()
    n_ours = evaluate(ours, qrels, ["nDCG@10"])["nDCG@10"]
    n_theirs = evaluate(theirs, qrels, ["nDCG@10"])["nDCG@10"]
    return {"depth": CROSSCHECK_DEPTH, "scale": scale, "queries": len(qids),
            "identical_ranking": same_order, "identical_scores": same_scores, "identical_up_to_ties": same_up_to_ties,
            "ndcg10_sparseir": n_ours, "ndcg10_lucene": n_theirs, "ndcg10_delta": abs(n_ours - n_theirs)}


# --- measuring -----------------------------------------------------------------------------------

def _measure(prepared: Prepared, ds: Dataset, s: Settings) -> dict[str, Any]:
    queries = ds.queries()
    sample = list(queries.values())[: s.latency_queries]
    with single_thread():
        lat, per_query = latency(prepared.search, sample, show_progress=s.show_progress)
        if prepared.encode is not None:
            search_lat, search_per_query = latency(prepared.search_encoded, prepared.encode(sample),
                                                   show_progress=s.show_progress)
        else:  # no separate query encoding: the whole search is "search"
            search_lat, search_per_query = lat, per_query
    results, batch = throughput(lambda: prepared.batch(queries), len(queries))
    run = to_run(results)
    return {"run": run, "latency": lat, "latency_ms": per_query.tolist(),
            "search_latency": search_lat, "search_latency_ms": search_per_query.tolist(),
            "batch": {**batch, "threads": s.threads, "queries": len(queries)},
            "metrics": evaluate(run, ds.qrels(), METRICS)}


def run_base_system(spec: SystemSpec, ds: Dataset, s: Settings, base: SystemSpec | None,
                    isolated: bool) -> dict[str, Any]:
    """Build (or reuse), time and evaluate one non-fusion system; the result record (run included)."""
    cache = Cache(s.cache_dir)
    _log(ds, spec.name, f"{spec.kind} {json.dumps(spec.params)}")
    check = None
    if spec.kind == "bm25":
        prepared = _prepare_bm25(spec, ds, s, cache)
    elif spec.kind == "dense":
        prepared = _prepare_dense(spec, ds, s, cache)
    elif spec.kind == "sparseir":
        prepared = _prepare_sparseir(spec, ds, s, cache)
    elif spec.kind == "lucene-impact":
        prepared, check = _prepare_lucene_impact(spec, ds, s, cache, base)
    else:
        raise ValueError(f"not a base system kind: {spec.kind}")
    result = {"system": spec.name, "kind": spec.kind, "params": spec.params, "build": prepared.build,
              **_measure(prepared, ds, s)}
    if check is not None:
        result["crosscheck"] = check(result["run"])
    prepared.close()
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["isolated"] = isolated
    _log(ds, spec.name, " ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items()))
    return result


def run_fusion(spec: SystemSpec, ds: Dataset, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Fuse the components' runs; costs are the components' summed (run one after another) plus fusion's own."""
    p = spec.params
    runs = [part["run"] for part in parts]

    def fuse(rs: list[Run]) -> Run:
        if p["method"] == "rrf":
            return fusion.rrf(rs, k=p["k"], weights=p["weights"])
        return fusion.convex(rs, p["weights"], norm=p["norm"])

    run, fuse_batch = throughput(lambda: fuse(runs), len(set().union(*runs)))
    sample = list(ds.queries())[: len(parts[0]["latency_ms"])]
    own = []
    for qid in sample:
        start = time.perf_counter()
        fuse([{qid: r.get(qid, {})} for r in runs])
        own.append((time.perf_counter() - start) * 1e3)
    per_query = np.sum([part["latency_ms"] for part in parts], axis=0) + np.asarray(own)
    search_per_query = np.sum([part["search_latency_ms"] for part in parts], axis=0) + np.asarray(own)
    seconds = sum(part["batch"]["seconds"] for part in parts) + fuse_batch["seconds"]
    n = parts[0]["batch"]["queries"]
    builds = [part["build"] for part in parts]
    return {"system": spec.name, "kind": "fusion", "params": p, "run": run,
            "metrics": evaluate(run, ds.qrels(), METRICS),
            "build": {"index_seconds": sum(b.get("index_seconds") or 0 for b in builds),
                      "index_bytes": sum(b.get("index_bytes") or 0 for b in builds),
                      "docs_per_second": None, "device": None},
            "latency": summarize_ms(per_query),
            "latency_ms": per_query.tolist(),
            "search_latency": summarize_ms(search_per_query), "search_latency_ms": search_per_query.tolist(),
            "batch": {"seconds": seconds, "qps": n / seconds, "threads": parts[0]["batch"]["threads"], "queries": n},
            "peak_rss_bytes": max(part["peak_rss_bytes"] for part in parts),
            "isolated": all(part["isolated"] for part in parts)}

