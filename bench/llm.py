"""Decoder-only LLM sparse encoder on SciFact: every mode and score, the vocabulary mask on and off,
next to BM25, dense (MiniLM) and splade-tiny on the same documents.

A causal LM on a shared CPU is slow, so the corpus may be a documented subset: every document
judged for the test queries (optionally a seeded sample of ``--n-queries`` of them) plus a seeded
random sample of the others, up to ``--n-docs`` (``--n-docs 0``: the whole corpus). Every system
indexes and searches exactly that subset with the same queries. Per system: nDCG@10, R@100, MRR@10
(:func:`sparseir.evaluate.evaluate`), encoding docs/s, index bytes (uint8 impacts) and postings per document.

The mask changes no forward pass: each LLM variant is encoded once with ``mask=False`` and the
masked row is the same matrix with the special/whitespace/punctuation columns zeroed, which is what
``mask=True`` computes (``tests/test_llm.py::test_mask_zeroes_special_whitespace_and_punctuation``);
both rows share one docs/s figure. Results are saved after every system, and ``--resume`` skips
systems already in the JSON (same settings).

    HF_HUB_OFFLINE=1 nice -n 5 .venv/bin/python bench/llm.py --n-queries 100 --n-docs 200 --max-length 48
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch

from sparseir.corpus import load_corpus, load_qrels, load_queries
from sparseir.encoders import MLMSparseEncoder, SparseEncoder
from sparseir.encoders.llm import LLMSparseEncoder
from sparseir.evaluate import evaluate, run_from_hits
from sparseir.index import SparseIndex, write_index
from sparseir.search import Searcher

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
METRICS = ("nDCG@10", "R@100", "RR@10")


def subset(doc_ids: list[str], qrels: dict[str, dict[str, int]], n_docs: int, seed: int) -> list[str]:
    """Documents judged for the ``qrels`` queries plus a seeded sample of the rest, ``n_docs`` in all, in
    corpus order."""
    if n_docs <= 0 or n_docs >= len(doc_ids):
        return list(doc_ids)
    judged = {d for docs in qrels.values() for d in docs} & set(doc_ids)
    others = [d for d in doc_ids if d not in judged]
    keep = judged | set(random.Random(seed).sample(others, max(0, n_docs - len(judged))))
    return [d for d in doc_ids if d in keep]


def sparse_row(docs: sp.csr_matrix, queries: sp.csr_matrix, ids: list[str], qids: list[str], terms: list[str],
               qrels: dict, docs_per_second: float) -> dict[str, Any]:
    """Index ``docs`` (uint8), search ``queries`` exactly, and score the run."""
    with tempfile.TemporaryDirectory(dir=ROOT / "data") as tmp:
        write_index(Path(tmp) / "idx", ids, docs, terms, quantize="uint8")
        index = SparseIndex.load(Path(tmp) / "idx")
        start = time.perf_counter()
        hits = Searcher(index).batch_search({q: queries[i] for i, q in enumerate(qids)}, k=100)
        search_s = time.perf_counter() - start
        nbytes = index.nbytes
    return {**evaluate(run_from_hits(hits), qrels, METRICS), "docs_per_second": round(docs_per_second, 3),
            "index_bytes": int(nbytes), "postings_per_doc": round(docs.nnz / docs.shape[0], 1),
            "query_terms": round(queries.nnz / max(queries.shape[0], 1), 1), "search_seconds": round(search_s, 3)}


def encode(encoder: SparseEncoder, texts: list[str], queries: list[str]) -> tuple[sp.csr_matrix, sp.csr_matrix, float]:
    docs = encoder.encode_document(texts, show_progress_bar=True)
    dps = encoder.last_docs_per_second
    return docs, encoder.encode_query(queries, show_progress_bar=True), dps


def zero_columns(m: sp.csr_matrix, cols: list[int]) -> sp.csr_matrix:
    keep = np.ones(m.shape[1], dtype=bool)
    keep[cols] = False
    out = m.multiply(keep[None, :]).tocsr()
    out.eliminate_zeros()
    return out.astype(np.float32)


def bm25_row(ids: list[str], texts: list[str], queries: dict[str, str], qrels: dict) -> dict[str, Any]:
    from sparseir.baselines.bm25 import BM25Searcher, build_bm25_index

    with tempfile.TemporaryDirectory(dir=ROOT / "data") as tmp:
        start = time.perf_counter()
        build_bm25_index(zip(ids, texts), Path(tmp) / "bm25", show_progress=False)
        dps = len(ids) / (time.perf_counter() - start)
        searcher = BM25Searcher(Path(tmp) / "bm25")
        run = searcher.batch_search(queries, k=100)
        nbytes = searcher.nbytes
    return {**evaluate(run, qrels, METRICS), "docs_per_second": round(dps, 3), "index_bytes": int(nbytes)}


def dense_row(ids: list[str], texts: list[str], queries: dict[str, str], qrels: dict) -> dict[str, Any]:
    from sparseir.baselines.dense import DenseIndex, DenseSearcher, load_model

    model = load_model(str(SHARED / "models" / "all-MiniLM-L6-v2"), max_seq_length=256)
    start = time.perf_counter()
    index = DenseIndex.build(ids, texts, model, batch_size=32)
    dps = len(ids) / (time.perf_counter() - start)
    run = DenseSearcher(index, model).batch_search(queries, k=100)
    return {**evaluate(run, qrels, METRICS), "docs_per_second": round(dps, 3), "index_bytes": index.nbytes}


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    docs = ("whole corpus" if s["n_docs"] == s["corpus_docs"]
            else f"every judged document plus a seeded random sample of the others, seed {s['seed']}")
    queries = ("all judged test queries" if s["n_queries"] == s["judged_queries"]
               else f"a seeded sample of the {s['judged_queries']} judged test queries")
    lines = [
        "# LLM sparse encoder (SmolLM2-135M-Instruct, GGUF Q4_1) on SciFact",
        "",
        f"Documents: {s['n_docs']} of {s['corpus_docs']} ({docs}); queries: {s['n_queries']} ({queries}). "
        f"LLM documents truncated at {s['max_length']} tokens "
        f"(each copy in echo mode), queries at {s['query_max_length']}; splade-tiny at 256/64; dense MiniLM at 256. "
        f"Index: uint8 impacts. Device: {s['device']}, torch threads {s['torch_threads']}; "
        f"machine shared with other jobs "
        f"(load average {s['loadavg_start']} at start, {s['loadavg_end']} at end), so docs/s are low and noisy.",
        "",
        "| system | mode | score | mask | nDCG@10 | R@100 | MRR@10 | docs/s | index MiB | postings/doc | query terms |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["systems"].items():
        cfg = r.get("config", {})
        lines.append(
            f"| {name} | {cfg.get('mode', '')} | {cfg.get('score', '')} | "
            f"{'' if 'mask' not in cfg else ('on' if cfg['mask'] else 'off')} | "
            f"{r['nDCG@10']:.4f} | {r['R@100']:.4f} | "
            f"{r['RR@10']:.4f} | {r['docs_per_second']:.2f} | {r['index_bytes'] / 2**20:.2f} | "
            f"{r.get('postings_per_doc', '')} | {r.get('query_terms', '')} |")
    llm = {k: v for k, v in results["systems"].items() if k.startswith("llm")}
    if llm:
        best = max(llm, key=lambda k: llm[k]["nDCG@10"])
        lines += ["", f"Best LLM variant by nDCG@10: **{best}** ({llm[best]['nDCG@10']:.4f})."]
    lines += ["", "Notes:", "",
              "- `score`: `logits` is the textbook `log(1+ReLU(logits))`; `logprob` uses `log p + log|V|` "
              "(how much likelier than uniform) in place of the logits. `prompt` keeps only the ids of the "
              "text's own words (PromptReps' filter, `restrict_to_input`).",
              "- The two mask rows of a variant share one encoding pass (the masked matrix is the unmasked one "
              "with the special/whitespace/punctuation columns zeroed, which equals `mask=True`), hence one docs/s.",
              "- Index MiB includes the term table (49,152 names for the LLM), so tiny subsets overstate it per "
              "document.",
              "", "Reproduce: `HF_HUB_OFFLINE=1 nice -n 5 .venv/bin/python bench/llm.py " + s["argv"] + "`", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default=str(SHARED / "data" / "beir" / "scifact"))
    p.add_argument("--model", default=str(SHARED / "models" / "smollm2-135m-instruct-gguf"))
    p.add_argument("--splade", default=str(SHARED / "models" / "splade-tiny"))
    p.add_argument("--n-docs", type=int, default=400, help="corpus subset size (0: whole corpus)")
    p.add_argument("--n-queries", type=int, default=0, help="seeded sample of the judged queries (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=64, help="LLM document token limit")
    p.add_argument("--query-max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--variants", default="echo:logprob,prompt:logprob,plain:logprob,echo:logits",
                   help="comma-separated MODE:SCORE LLM variants, run in this order")
    p.add_argument("--baselines", default="bm25,dense,splade-tiny", help="comma-separated; empty for none")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "llm"), help="writes OUT.json and OUT.md")
    p.add_argument("--resume", action="store_true", help="keep systems already in OUT.json (same settings)")
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (ROOT / "data").mkdir(exist_ok=True)

    corpus = {d.id: d.text for d in load_corpus(args.dataset)}
    qrels = load_qrels(args.dataset, "test")
    judged = len([q for q in load_queries(args.dataset) if q in qrels])
    queries = {q: t for q, t in load_queries(args.dataset).items() if q in qrels}
    if 0 < args.n_queries < len(queries):
        keep = set(random.Random(args.seed).sample(sorted(queries), args.n_queries))
        queries = {q: t for q, t in queries.items() if q in keep}
        qrels = {q: docs for q, docs in qrels.items() if q in keep}
    ids = subset(list(corpus), qrels, args.n_docs, args.seed)
    texts = [corpus[d] for d in ids]
    qids = list(queries)
    qtexts = [queries[q] for q in qids]
    settings = {"dataset": str(Path(args.dataset).name), "corpus_docs": len(corpus), "n_docs": len(ids),
                "n_queries": len(qids), "judged_queries": judged, "seed": args.seed, "max_length": args.max_length,
                "query_max_length": args.query_max_length, "batch_size": args.batch_size,
                "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads()}
    results: dict[str, Any] = {"settings": settings, "systems": {}}
    json_path = out.with_suffix(".json")
    if args.resume and json_path.exists():
        old = json.loads(json_path.read_text())
        same = all(old["settings"].get(k) == v for k, v in settings.items())
        results["systems"] = old["systems"] if same else {}
    settings["loadavg_start"] = results.get("settings", {}).get("loadavg_start") or round(os.getloadavg()[0], 1)
    settings["argv"] = " ".join(f"{a}" for a in os.sys.argv[1:])

    def save() -> None:
        settings["loadavg_end"] = round(os.getloadavg()[0], 1)
        write_atomic(json_path, json.dumps(results, indent=2) + "\n")
        write_atomic(out.with_suffix(".md"), markdown(results))

    def run(name: str, fn: Callable[[], dict[str, Any] | list[tuple[str, dict[str, Any]]]]) -> None:
        if name in results["systems"] or any(k.startswith(name + " ") for k in results["systems"]):
            return
        print(f"== {name}", flush=True)
        rows = fn()
        for key, row in (rows if isinstance(rows, list) else [(name, rows)]):
            results["systems"][key] = row
            print(f"   {key}: " + ", ".join(f"{m} {row[m]:.4f}" for m in METRICS) +
                  f", {row['docs_per_second']:.2f} docs/s", flush=True)
        save()

    def llm(mode: str, score: str) -> list[tuple[str, dict[str, Any]]]:
        enc = LLMSparseEncoder(args.model, mode=mode, score=score, mask=False, max_length=args.max_length,
                               query_max_length=args.query_max_length, batch_size=args.batch_size)
        docs, qs, dps = encode(enc, texts, qtexts)
        dropped = sorted(set(enc.special_ids) | set(enc.noise_ids))
        rows = []
        for mask in (False, True):
            d, q = (zero_columns(docs, dropped), zero_columns(qs, dropped)) if mask else (docs, qs)
            row = sparse_row(d, q, ids, qids, enc.terms, qrels, dps)
            rows.append((f"llm {mode}/{score}/mask-{'on' if mask else 'off'}",
                         {**row, "config": {**enc.config(), "mask": mask}}))
        return rows

    def splade() -> dict[str, Any]:
        enc = MLMSparseEncoder(args.splade, max_length=256, query_max_length=64)
        docs, qs, dps = encode(enc, texts, qtexts)
        return {**sparse_row(docs, qs, ids, qids, enc.terms, qrels, dps), "config": enc.config()}

    baselines = {"bm25": lambda: bm25_row(ids, texts, queries, qrels),
                 "dense": lambda: dense_row(ids, texts, queries, qrels), "splade-tiny": splade}
    for name in filter(None, args.baselines.split(",")):
        run(name, baselines[name])
    for variant in args.variants.split(","):
        mode, _, score = variant.partition(":")
        run(f"llm {mode}/{score or 'logprob'}", lambda m=mode, s=score or "logprob": llm(m, s))
    save()
    print(f"wrote {json_path} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
