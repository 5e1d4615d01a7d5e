"""Decoder-only LLM sparse encoder (SmolLM2-135M): zero-shot modes, bidirectional attention, MNTP and
SPLADE fine-tuning, next to BM25 and splade-tiny; plus the seeds' fox/canine/whale/car table per variant.

A causal LM on a shared 2-core CPU encodes about one document per second, so retrieval runs on a
documented subset (every document judged for a seeded sample of ``--n-queries`` test queries plus a
seeded sample of the others, ``--n-docs`` in all); every system indexes and searches exactly that
subset. The JSON records each variant's docs/s and the time a full-corpus run would take at that
rate. ``--mlm-trained DIR`` adds splade-tiny before and after ``sparseir train`` on a whole dataset
(``--mlm-dataset``, default the full NFCorpus test set), which the CPU can afford.

The LLM variants take keyword arguments (attention, adapter, score, word_start) that the generic
harness's ``sparseir`` system (an encoder spec string) cannot express, hence this script; it reuses
the harness's pieces (corpus readers, :func:`sparseir.evaluate.evaluate`, the index and searcher).

    flock /work/bench.lock nice -n 5 .venv/bin/python bench/llm.py --n-queries 30 --n-docs 100 \
        --mntp data/llm-bench/mntp --finetuned data/llm-bench/splade-llm --mlm-trained data/llm-bench/splade-mlm
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
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from sparseir._fs import atomic_write
from sparseir.corpus import load_corpus, load_qrels, load_queries
from sparseir.encoders import MLMSparseEncoder, SparseEncoder
from sparseir.encoders.llm import LLMSparseEncoder
from sparseir.evaluate import evaluate
from sparseir.index import SparseIndex, write_index
from sparseir.search import Searcher, to_run

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
METRICS = ("nDCG@10", "R@100", "RR@10")
FOX = "The swift brown fox jumps over the lazy dog."
OTHERS = ["A quick, tan fox leaps over a lethargic canine.", "The large blue whale swims in the ocean.",
          "A car was parked in the garage"]
#: Full-corpus sizes (documents + judged test queries) used for the time estimates.
FULL = {"scifact": 5183 + 300, "nfcorpus": 3633 + 323}


def variants(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """LLM encoder settings per variant, in run order (adapters only when given)."""
    out = {"prompt (default: pmi, word-start)": {"mode": "prompt"},
           "prompt (before: logprob)": {"mode": "prompt", "score": "logprob", "word_start": False},
           "echo": {"mode": "echo"},
           "plain": {"mode": "plain"},
           "bidirectional, no adaptation": {"attention": "bidirectional"}}
    for name, adapter in (("bidirectional + MNTP", args.mntp), ("bidirectional + MNTP + SPLADE", args.finetuned)):
        if adapter and not Path(adapter).is_dir():
            print(f"skipping {name}: no adapter at {adapter}", flush=True)
        elif adapter:
            out[name] = {"adapter": adapter}
    return out


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
    return {**evaluate(to_run(hits), qrels, METRICS), "docs_per_second": round(docs_per_second, 3),
            "index_bytes": int(nbytes), "postings_per_doc": round(docs.nnz / docs.shape[0], 1),
            "query_terms": round(queries.nnz / max(queries.shape[0], 1), 1), "search_seconds": round(search_s, 3)}


def encode(encoder: SparseEncoder, texts: list[str], queries: list[str]) -> tuple[sp.csr_matrix, sp.csr_matrix, float]:
    docs = encoder.encode_document(texts, show_progress_bar=True)
    dps = encoder.last_docs_per_second
    return docs, encoder.encode_query(queries, show_progress_bar=True), dps


def bm25_row(ids: list[str], texts: list[str], queries: dict[str, str], qrels: dict) -> dict[str, Any]:
    from sparseir.baselines.bm25 import BM25Searcher, build_bm25_index

    with tempfile.TemporaryDirectory(dir=ROOT / "data") as tmp:
        start = time.perf_counter()
        build_bm25_index(zip(ids, texts), Path(tmp) / "bm25", show_progress=False)
        dps = len(ids) / (time.perf_counter() - start)
        searcher = BM25Searcher(Path(tmp) / "bm25")
        run = to_run(searcher.batch_search(queries, k=100))
        nbytes = searcher.nbytes
    return {**evaluate(run, qrels, METRICS), "docs_per_second": round(dps, 3), "index_bytes": int(nbytes)}



def fox_row(encoder: SparseEncoder) -> dict[str, Any]:
    """The seeds' check: cosine of the fox sentence with a paraphrase, a whale and a car, and its top terms."""
    m = encoder.encode_document([FOX] + OTHERS).toarray()
    cos = [float(m[0] @ v / (np.linalg.norm(m[0]) * np.linalg.norm(v) or 1)) for v in m[1:]]
    top = [t for t, _ in encoder.decode(m[0], top_k=6)]
    return {"canine": round(cos[0], 3), "whale": round(cos[1], 3), "car": round(cos[2], 3),
            "passes": cos[0] > cos[1] and cos[0] > cos[2], "top_terms": top}


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = ["# LLM sparse encoder (SmolLM2-135M-Instruct, GGUF Q4_1): zero-shot, bidirectional, MNTP, fine-tuned",
             "", "## The seeds' experiment (cosine of the fox sentence with each other sentence)", "",
             "| variant | cos(fox, canine) | cos(fox, whale) | cos(fox, car) | passes | top terms of the fox sentence "
             "|",
             "|---|---:|---:|---:|---|---|"]
    for name, r in results["fox"].items():
        lines.append(f"| {name} | {r['canine']:.3f} | {r['whale']:.3f} | {r['car']:.3f} | "
                     f"{'yes' if r['passes'] else 'no'} | {', '.join(f'`{t}`' for t in r['top_terms'])} |")
    if not results["systems"]:
        lines += ["", "No retrieval run in this report (`--fox-only`)."]
    else:
        lines += ["", f"## Retrieval on a SciFact subset (NOT the full corpus): {s['n_docs']} of {s['corpus_docs']} "
                  f"documents, {s['n_queries']} of {s['judged_queries']} test queries", "",
                  f"Documents: every document judged for {s['n_queries']} test queries sampled with seed "
                  f"{s['seed']}, plus a seeded sample of the others. LLM documents truncated at {s['max_length']} tokens, queries at "
                  f"{s['query_max_length']}; splade-tiny at 256/64. uint8 impacts, exact search. A subset this "
                  "small with every judged document inside overstates nDCG for every system alike; compare systems, not with "
                  "published figures.", "",
                  "| system | nDCG@10 | R@100 | MRR@10 | docs/s | postings/doc | query terms | full SciFact (est.) | "
                  "full NFCorpus (est.) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in results["systems"].items():
            est = r.get("full_run_hours", {})
            hours = [f"{est[k]:.1f} h" if k in est else "" for k in ("scifact", "nfcorpus")]
            lines.append(f"| {name} | {r['nDCG@10']:.4f} | {r['R@100']:.4f} | {r['RR@10']:.4f} | "
                         f"{r['docs_per_second']:.2f} | {r.get('postings_per_doc', '')} | {r.get('query_terms', '')} | "
                         f"{hours[0]} | {hours[1]} |")
    if results.get("mlm"):
        m = results["mlm"]
        lines += ["", f"## splade-tiny before and after `sparseir train`, full {m['dataset']} test set "
                  f"({m['n_docs']} documents, {m['n_queries']} queries)", "",
                  "| system | nDCG@10 | R@100 | MRR@10 | docs/s | postings/doc | query terms |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in m["systems"].items():
            lines.append(f"| {name} | {r['nDCG@10']:.4f} | {r['R@100']:.4f} | {r['RR@10']:.4f} | "
                         f"{r['docs_per_second']:.2f} | {r.get('postings_per_doc', '')} | {r.get('query_terms', '')} |")
    if results.get("training"):
        lines += ["", "## Training runs (CPU)", "",
                  "| run | objective | steps | batch | max tokens | lr | steps/s | seconds | first loss | last loss |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, t in results["training"].items():
            c = t["config"]
            lines.append(f"| {name} | {t['objective']} | {t['steps']} | {c['batch_size']} | {c['max_length']} | "
                         f"{c['lr']:g} | {t['steps_per_second']} | {t['seconds']} | {t['loss_first']:.3f} | "
                         f"{t['loss_last']:.3f} |")
    lines += ["", f"Device: {s['device']}, torch threads {s['torch_threads']}, machine shared with other jobs "
              f"(load average {s['loadavg_start']} at start, {s['loadavg_end']} at end), so docs/s are low and noisy.",
              "", "Reproduce: `flock /work/bench.lock nice -n 5 .venv/bin/python bench/llm.py " + s["argv"] + "`", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default=str(SHARED / "data" / "beir" / "scifact"))
    p.add_argument("--model", default=str(SHARED / "models" / "smollm2-135m-instruct-gguf"))
    p.add_argument("--splade", default=str(SHARED / "models" / "splade-tiny"))
    p.add_argument("--mntp", help="adapter folder from `sparseir llm adapt`")
    p.add_argument("--finetuned", help="adapter folder from `sparseir train --backbone llm`")
    p.add_argument("--mlm-trained", help="model folder from `sparseir train --backbone mlm`")
    p.add_argument("--mlm-dataset", default=str(SHARED / "data" / "beir" / "nfcorpus"))
    p.add_argument("--n-docs", type=int, default=100, help="corpus subset size (0: whole corpus)")
    p.add_argument("--n-queries", type=int, default=30, help="seeded sample of the judged queries (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=48, help="LLM document token limit")
    p.add_argument("--query-max-length", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "llm"), help="writes OUT.json and OUT.md")
    p.add_argument("--fox-only", action="store_true", help="only the fox table (no retrieval, no timings)")
    args = p.parse_args()
    out = Path(args.out)
    (ROOT / "data").mkdir(exist_ok=True)

    corpus = {d.id: d.text for d in load_corpus(args.dataset)}
    qrels = load_qrels(args.dataset, "test")
    queries = {q: t for q, t in load_queries(args.dataset).items() if q in qrels}
    judged = len(queries)
    if 0 < args.n_queries < len(queries):
        keep = set(random.Random(args.seed).sample(sorted(queries), args.n_queries))
        queries = {q: t for q, t in queries.items() if q in keep}
        qrels = {q: docs for q, docs in qrels.items() if q in keep}
    ids = subset(list(corpus), qrels, args.n_docs, args.seed)
    texts = [corpus[d] for d in ids]
    qids = list(queries)
    qtexts = [queries[q] for q in qids]
    settings = {"dataset": Path(args.dataset).name, "corpus_docs": len(corpus), "n_docs": len(ids),
                "n_queries": len(qids), "judged_queries": judged, "seed": args.seed, "max_length": args.max_length,
                "query_max_length": args.query_max_length, "batch_size": args.batch_size,
                "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads(),
                "loadavg_start": round(os.getloadavg()[0], 1), "argv": " ".join(os.sys.argv[1:])}
    results: dict[str, Any] = {"settings": settings, "fox": {}, "systems": {}, "mlm": None, "training": {}}
    for name, folder, meta in (("MNTP (llm adapt)", args.mntp, "sparseir_adapter.json"),
                               ("SPLADE, LLM LoRA (train)", args.finetuned, "sparseir_train.json"),
                               ("SPLADE, splade-tiny (train)", args.mlm_trained, "sparseir_train.json")):
        if folder and (Path(folder) / meta).is_file():
            results["training"][name] = json.loads((Path(folder) / meta).read_text())

    def save() -> None:
        settings["loadavg_end"] = round(os.getloadavg()[0], 1)
        atomic_write(out.with_suffix(".json"), (json.dumps(results, indent=2) + "\n").encode())
        atomic_write(out.with_suffix(".md"), markdown(results).encode())

    def add(name: str, encoder: SparseEncoder) -> None:
        print(f"== {name}", flush=True)
        docs, qs, dps = encode(encoder, texts, qtexts)
        row = {**sparse_row(docs, qs, ids, qids, encoder.terms, qrels, dps), "config": encoder.config()}
        if isinstance(encoder, LLMSparseEncoder):
            row["full_run_hours"] = {k: round(n / dps / 3600, 2) for k, n in FULL.items()}
        results["systems"][name] = row
        print(f"   {row['nDCG@10']:.4f} nDCG@10, {dps:.2f} docs/s", flush=True)
        save()

    # The fox table first (seconds per variant), then retrieval (minutes per variant); saved as it goes.
    llms = {f"llm {name}": dict(max_length=args.max_length, query_max_length=args.query_max_length,
                                batch_size=args.batch_size, **kwargs) for name, kwargs in variants(args).items()}
    results["fox"]["splade-tiny"] = fox_row(MLMSparseEncoder(args.splade, max_length=256, query_max_length=64))
    for name, kwargs in llms.items():
        results["fox"][name] = fox_row(LLMSparseEncoder(args.model, **kwargs))
        print(f"== fox {name}: {results['fox'][name]}", flush=True)
        save()
    if args.fox_only:
        return
    results["systems"]["bm25"] = bm25_row(ids, texts, queries, qrels)
    add("splade-tiny", MLMSparseEncoder(args.splade, max_length=256, query_max_length=64))
    for name, kwargs in llms.items():
        add(name, LLMSparseEncoder(args.model, **kwargs))
    if args.mlm_trained and Path(args.mlm_trained).is_dir():
        full = {d.id: d.text for d in load_corpus(args.mlm_dataset)}
        fq = {q: t for q, t in load_queries(args.mlm_dataset).items() if q in load_qrels(args.mlm_dataset, "test")}
        fqrels = load_qrels(args.mlm_dataset, "test")
        fids, fqids = list(full), list(fq)
        mlm = {"dataset": Path(args.mlm_dataset).name, "n_docs": len(fids), "n_queries": len(fqids), "systems": {}}
        for name, path in (("splade-tiny", args.splade), ("splade-tiny + sparseir train", args.mlm_trained)):
            enc = MLMSparseEncoder(path, max_length=256, query_max_length=64)
            docs, qs, dps = encode(enc, [full[d] for d in fids], [fq[q] for q in fqids])
            mlm["systems"][name] = sparse_row(docs, qs, fids, fqids, enc.terms, fqrels, dps)
            print(f"   {name}: {mlm['systems'][name]['nDCG@10']:.4f}", flush=True)
        results["mlm"] = mlm
    save()
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
