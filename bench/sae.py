"""SAE dictionary encoder benchmark on SciFact: nDCG@10 of SAE features against the dense model they were
trained on, FVU / L0 / dead %, index size and query latency against dense exact search.

Both sources are run with MiniLM as the base model:

* embedding: SAEs on sentence embeddings of documents, their sentences and the queries
  (``sparseir sae collect --source embedding --sentences --queries``);
* hidden: SAEs on last-layer token hidden states of the documents, max-pooled per document.

Activations are collected once (``--emb-store``, ``--hidden-store``) and reused: document and query
embeddings for the dense baseline and the embedding SAEs are the store's rows, and hidden-source
document vectors are max-pooled SAE codes of the store's token rows, exactly what
``SAESparseEncoder`` computes (checked on a sample, ``encoder_check`` in the JSON). Hidden-source
queries are encoded live with ``SAESparseEncoder``.

    HF_HUB_OFFLINE=1 nice -n 5 .venv/bin/python bench/sae.py --emb-store data/cache/sae/scifact-minilm-emb \\
        --hidden-store data/cache/sae/scifact-minilm-hidden

Full corpora (``sae_full_{scifact,nfcorpus}.json``): collect the stores once, then train and evaluate
(the hidden-state run is separate because it uses a larger batch)::

    D=nfcorpus  # or scifact
    python bench/sae.py --dataset ../shared/data/beir/$D --collect-docs 0 \\
        --hidden-store data/cache/sae/$D-minilm-hidden --build-emb-store 1000000 \\
        --emb-store data/cache/sae/$D-minilm-emb --collect-only
    python bench/sae.py --dataset ../shared/data/beir/$D --emb-store data/cache/sae/$D-minilm-emb \\
        --work data/cache/sae/full-$D --n-latents 512 --emb-epochs 30 --batch-size 256 --variants topk,topk+sim \\
        --ks 32,64,128 --out bench/results/sae_full_$D.json
    # the retrieval recipe (k = 64 only: 4,096 latents with the distillation term)
    python bench/sae.py --dataset ../shared/data/beir/$D --emb-store data/cache/sae/$D-minilm-emb \\
        --work data/cache/sae/full-$D --n-latents 4096 --emb-epochs 30 --batch-size 256 --variants topk+sim \\
        --ks 64 --no-auxk-ablation --no-center-ablation --out bench/results/sae_full_$D.json
    python bench/sae.py --dataset ../shared/data/beir/scifact --hidden-store data/cache/sae/scifact-minilm-hidden \\
        --work data/cache/sae/full-scifact --hidden-latents 2048 --hidden-epochs 5 --batch-size 1024 \\
        --ks 16,32 --out bench/results/sae_full_scifact.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # single-threaded latency for both dense and sparse search
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from sparseir.corpus import load_qrels
from sparseir.evaluate import evaluate
from sparseir.index import SparseIndex, write_index
from sparseir.sae.checkpoint import DIAGNOSTICS, LABELS, load_sae, read_json
from sparseir.sae.finalize import finalize_sae
from sparseir.sae.model import SAEConfig, SparseAutoencoder
from sparseir.sae.store import ActivationStore
from sparseir.sae.train import TrainConfig, train_sae
from sparseir.search import Searcher

METRICS = ("nDCG@10", "R@100")
EMB_VARIANTS = {
    "topk": {},
    "matryoshka": {"matryoshka": (128, 256, 512)},
    "topk+sim": {"sim_coef": 1.0},
}


def describe(cfg: dict) -> str:
    """Short name of an SAE configuration for the tables."""
    name = cfg["activation"]
    if cfg.get("matryoshka"):
        name += f" matryoshka{tuple(cfg['matryoshka'][:-1])}"
    if cfg.get("sim_coef"):
        name += f" +sim {cfg['sim_coef']:g}"
    if not cfg.get("aux_coef"):
        name += " no-AuxK"
    return f"{name}, {cfg['n_latents']} latents"


def run_dict(ids: np.ndarray, scores: np.ndarray, qids: list[str], doc_ids: list[str]) -> dict:
    return {q: {doc_ids[d]: float(s) for d, s in zip(i, sc)} for q, i, sc in zip(qids, ids, scores)}


def rank_metrics(scores: np.ndarray, qids: list[str], doc_ids: list[str], qrels: dict,
                 metrics: tuple[str, ...] = METRICS) -> dict:
    """``metrics`` of the top 100 documents of each row of a query x document score matrix."""
    idx = np.argsort(-scores, axis=1)[:, :100]
    return evaluate(run_dict(idx, np.take_along_axis(scores, idx, 1), qids, doc_ids), qrels, metrics)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def embedding_rows(texts: list[dict]) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Rows of an embedding store's documents and queries, and their ids (queries without ``q:``)."""
    kinds = np.array([t.get("kind", "doc") for t in texts])
    drows, qrows = np.nonzero(kinds == "doc")[0], np.nonzero(kinds == "query")[0]
    return drows, qrows, [texts[i]["id"] for i in drows], [texts[i]["id"].removeprefix("q:") for i in qrows]


def dense_eval(docs: np.ndarray, queries: np.ndarray, doc_ids: list[str], qids: list[str], qrels: dict) -> dict:
    """Exact cosine search (embeddings are unit norm), quality and single-query latency."""
    metrics = rank_metrics(queries @ docs.T, qids, doc_ids, qrels)
    lat = []
    for q in queries:
        t = time.perf_counter()
        s = docs @ q
        top = np.argpartition(-s, 10)[:10]
        top = top[np.argsort(-s[top])]
        lat.append(time.perf_counter() - t)
    return {**metrics, "index_bytes": int(docs.astype(np.float32).nbytes), **latency_stats(lat)}


def latency_stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"latency_ms_mean": float(ms.mean()), "latency_ms_p50": float(np.median(ms)),
            "latency_ms_p99": float(np.percentile(ms, 99))}


@torch.no_grad()
def codes(model: SparseAutoencoder, x: np.ndarray, k: int, normalize: bool, batch: int = 4096) -> sp.csr_matrix:
    """Sparse codes of raw activations ``x`` as CSR (optionally L2-normalised rows)."""
    out = []
    for s in range(0, len(x), batch):
        z = model.encode(torch.from_numpy(np.asarray(x[s:s + batch], dtype=np.float32)), k)
        if normalize:
            z = torch.nn.functional.normalize(z, dim=-1)
        out.append(sp.csr_matrix(z.numpy()))
    return sp.vstack(out, format="csr", dtype=np.float32)


@torch.no_grad()
def pooled_codes(model: SparseAutoencoder, store: ActivationStore, k: int, n_texts: int) -> sp.csr_matrix:
    """Max-pool per text of the token codes of a hidden-state store (what SAESparseEncoder does)."""
    pooled = torch.zeros(n_texts, model.cfg.n_latents)
    row_text = np.asarray(store.row_text())
    for rows, x in store.chunks(65536):
        z = model.encode(torch.from_numpy(x), k)
        t = torch.from_numpy(row_text[rows].astype(np.int64))
        pooled.scatter_reduce_(0, t[:, None].expand_as(z), z, reduce="amax")
    return sp.csr_matrix(pooled.numpy())


def prune_rows(m: sp.csr_matrix, top: int) -> sp.csr_matrix:
    """Keep the ``top`` largest entries of every row."""
    d = torch.from_numpy(m.toarray())
    v, i = d.topk(min(top, d.shape[1]), dim=1)
    return sp.csr_matrix(torch.zeros_like(d).scatter_(1, i, v).numpy())


def sparse_eval(doc_csr: sp.csr_matrix, q_csr: sp.csr_matrix, doc_ids: list[str], qids: list[str], terms: list[str],
                qrels: dict, out: Path, quantize: str) -> dict:
    """Index the document vectors, search every query, time single queries."""
    write_index(out, doc_ids, doc_csr, terms, quantize=quantize, overwrite=True)
    index = SparseIndex.load(out)
    searcher = Searcher(index)
    ids, scores, counts = searcher.search_vectors(q_csr, k=100, threads=1)
    run = {q: {index.doc_ids[int(d)]: float(s) for d, s in zip(i[:c], sc[:c])}
           for q, i, sc, c in zip(qids, ids, scores, counts)}
    metrics = evaluate(run, qrels, METRICS)
    lat = []
    for r in range(q_csr.shape[0]):
        row = q_csr[r]
        t = time.perf_counter()
        searcher.search_vectors(row, k=10)
        lat.append(time.perf_counter() - t)
    return {**metrics, "index_bytes": int(index.nbytes), "n_postings": int(index.n_postings),
            "doc_nnz_mean": float(doc_csr.getnnz(1).mean()), "query_nnz_mean": float(q_csr.getnnz(1).mean()),
            **latency_stats(lat)}


def train_or_load(store: ActivationStore, out: Path, cfg: SAEConfig, tcfg: TrainConfig, max_steps: int | None) -> dict:
    """Train (or resume) and finalise an SAE unless ``out`` already holds a finished one."""
    done = read_json(out, DIAGNOSTICS) is not None and read_json(out, LABELS) is not None
    if not done:
        t = time.perf_counter()
        model, info = train_sae(store, out, cfg, tcfg, max_steps=max_steps)
        info["train"]["seconds_this_call"] = round(time.perf_counter() - t, 1)
        finalize_sae(out, model, info, store)
    return read_json(out, DIAGNOSTICS)


def diag_summary(path: Path) -> dict:
    d = read_json(path, DIAGNOSTICS)
    cfg = json.loads((path / "sae_config.json").read_text())
    keep = ("fvu", "l0", "dead_frac", "n_dead", "n_latents", "dense_frac", "train_dead_frac")
    return {**{k: d[k] for k in keep}, "steps": cfg["step"], "total_steps": cfg["train"]["total_steps"],
            "train_rows": cfg["source"]["n_rows"]}


def build_embedding_store(hidden: ActivationStore, dataset: str, out: Path, n_sentences: int, seed: int = 0) -> None:
    """Embedding-source training data: the documents' MiniLM embeddings (the hidden store's mean-pooled
    last layer, identical to SentenceTransformer.encode), ``n_sentences`` random document sentences and
    the queries, embedded with the same model."""
    from sparseir.corpus import load_queries
    from sparseir.sae.collect import EmbeddingSource, split_sentences
    from sparseir.sae.store import StoreWriter

    if hidden.meta["layer"] != hidden.meta["n_layers"]:
        raise ValueError("the hidden store must hold the last layer")
    docs = [{**t, "kind": "doc"} for t in hidden.texts()]
    sents = [{"id": f"{d['id']}#{j}", "text": s, "kind": "sentence"}
             for d in docs for j, s in enumerate(split_sentences(d["text"]))]
    pick = np.sort(np.random.default_rng(seed).choice(len(sents), min(n_sentences, len(sents)), replace=False))
    new = [sents[i] for i in pick] + [{"id": f"q:{q}", "text": t, "kind": "query"}
                                      for q, t in load_queries(dataset).items()]
    src = EmbeddingSource(hidden.meta["model"])
    emb = src.embed([r["text"] for r in new], batch_size=64, progress=True).cpu().numpy()
    meta = {**src.meta(), "corpus": hidden.meta.get("corpus", dataset),
            "texts": "docs (mean-pooled last layer) + sentences + queries",
            "n_sentences_available": len(sents)}
    rows = np.concatenate([hidden.mean_pooled(), emb])
    with StoreWriter(out, len(rows), rows.shape[1], meta, dtype="float32") as w:
        w.acts[:] = rows
        w.row_text[:] = np.arange(len(rows))
        w.texts = docs + new


def make_slice(dataset: str, n_docs: int, out: Path, seed: int = 0) -> Path:
    """A corpus of every document judged relevant to a test query plus random others, ``n_docs`` in all."""
    from sparseir.corpus import load_corpus

    relevant = {d for docs in load_qrels(dataset).values() for d, g in docs.items() if g > 0}
    docs = list(load_corpus(dataset))
    others = [i for i, d in enumerate(docs) if d.id not in relevant]
    rng = np.random.default_rng(seed)
    keep = set(rng.choice(others, max(0, n_docs - len(relevant)), replace=False).tolist())
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            if d.id in relevant or i in keep:
                f.write(json.dumps({"_id": d.id, "title": "", "text": d.text}, ensure_ascii=False) + "\n")
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def plot_fvu_curves(results: dict, png: Path) -> None:
    """Training FVU against step for each hidden-source SAE (nothing when none carries a curve)."""
    curves = {name: e["fvu_curve"] for name, e in results.get("hidden", {}).items() if e.get("fvu_curve")}
    if not curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, c in curves.items():
        steps, fvu = zip(*c)
        ax.plot(steps, fvu, lw=1.2, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training FVU")
    ax.set_title(f"Hidden-state SAEs on {Path(results['dataset']).name}: training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_markdown(results: dict, path: Path) -> None:
    """Tables of ``results`` (the JSON this script writes) as Markdown."""
    dense = results.get("dense", {})
    base = dense.get("nDCG@10")
    lines = [f"# SAE dictionary encoder on {Path(results['dataset']).name} (MiniLM base)", "",
             f"Generated by `bench/sae.py` from `{path.with_suffix('.json').name}`; see the Findings section for the "
             "reading.", ""]
    if "setup" in results:
        lines += ["## Setup", ""] + [f"- {k}: {v}" for k, v in results["setup"].items()] + [""]
    if dense:
        lines += ["## Dense baseline (exact cosine, float32)", "",
                  "| nDCG@10 | R@100 | index | p50 latency |", "|---|---|---|---|",
                  f"| {base:.4f} | {dense['R@100']:.4f} | {dense['index_bytes'] / 2**20:.2f} MiB | "
                  f"{dense['latency_ms_p50']:.3f} ms |", ""]
    head = ("| SAE | k | scoring | nDCG@10 | % of dense | R@100 | FVU | L0 | dead | doc nnz | index | "
            "p50 latency |")
    sep = "|---|---|---|---|---|---|---|---|---|---|---|---|"

    def row(name: str, k: int, scoring: str, e: dict, d: dict) -> str:
        rel = e["nDCG@10"] / base if base else float("nan")
        return (f"| {name} | {k} | {scoring} | {e['nDCG@10']:.4f} | {100 * rel:.1f}% | {e['R@100']:.4f} | "
                f"{d['fvu']:.3f} | {d['l0']:.1f} | {_pct(d['dead_frac'])} | {e['doc_nnz_mean']:.0f} | "
                f"{e['index_bytes'] / 2**20:.2f} MiB | {e['latency_ms_p50']:.3f} ms |")

    if results.get("embedding"):
        lines += ["## Embedding source (one MiniLM embedding per text)", "", head, sep]
        for name, e in results["embedding"].items():
            k = e["config"]["k"]
            for scoring in ("dot", "cosine"):
                lines.append(row(f"{describe(e['config'])}, {e['sae']['steps']} steps", k, scoring, e[scoring],
                                 e["sae"]))
        lines.append("")
    if "auxk_ablation" in results:
        a = results["auxk_ablation"]
        lines += ["## AuxK ablation", "", f"{a['variant']}, k={a['k']}, same data and steps:", "",
                  "| run | dead (never fires on the training data) | dead during training | FVU |", "|---|---|---|---|",
                  f"| with AuxK | {_pct(a['with_auxk']['dead_frac'])} | {_pct(a['with_auxk']['train_dead_frac'])} | "
                  f"{a['with_auxk']['fvu']:.3f} |",
                  f"| without AuxK | {_pct(a['without_auxk']['dead_frac'])} | "
                  f"{_pct(a['without_auxk']['train_dead_frac'])} | {a['without_auxk']['fvu']:.3f} |", ""]
    if "center_ablation" in results:
        a = results["center_ablation"]
        runs = (("mean-centred, then scaled to unit RMS norm", results["embedding"][a["centred"]]),
                ("scaled only (`--no-center`)", a["not_centred"]))
        lines += ["## Input centring ablation", "", f"{a['variant']}, k={a['k']}, same data, steps and seed. For "
                  "reference, the dense model scored by cosine on mean-centred embeddings (the geometry a centred SAE "
                  f"approximates) reaches nDCG@10 {a['dense_on_centred']['nDCG@10']:.4f} "
                  f"({_pct(a['dense_on_centred']['nDCG@10'] / base)} of dense).", "",
                  "| inputs | FVU | nDCG@10 dot | % of dense | nDCG@10 cosine | % of dense |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {label} | {e['sae']['fvu']:.3f} | {e['dot']['nDCG@10']:.4f} | "
                  f"{_pct(e['dot']['nDCG@10'] / base)} | {e['cosine']['nDCG@10']:.4f} | "
                  f"{_pct(e['cosine']['nDCG@10'] / base)} |" for label, e in runs]
        lines.append("")
    if results.get("hidden"):
        lines += ["## Hidden-state source (last-layer tokens, features max-pooled per document)", "",
                  "k is the number of active features per token; documents hold the union.", "", head, sep]
        for name, e in results["hidden"].items():
            for scoring in [key for key in e if key.startswith("dot")]:
                lines.append(row(f"{describe(e['config'])}, {e['sae']['steps']} steps", e["config"]["k"], scoring,
                                 e[scoring], e["sae"]))
        lines.append("")
        curves = {name: e["fvu_curve"] for name, e in results["hidden"].items() if e.get("fvu_curve")}
        if curves:
            lines += ["Training FVU (mean over each 25-step window of training batches; plot: "
                      f"`{path.stem}_hidden_fvu.png`):", "",
                      "| SAE | 10% | 25% | 50% | 75% | end | last quarter |", "|---|---|---|---|---|---|---|"]
            for name, c in curves.items():
                f = [c[min(len(c) - 1, int(q * len(c)))][1] for q in (0.1, 0.25, 0.5, 0.75)] + [c[-1][1]]
                lines.append(f"| {name}, {c[-1][0]} steps | " + " | ".join(f"{v:.3f}" for v in f) +
                             f" | {100 * (f[3] - f[4]) / f[3]:.1f}% lower |")
            lines.append("")
    if "encoder_check" in results:
        c = results["encoder_check"]
        lines += ["## Cached vectors against the live encoder", "",
                  f"`SAESparseEncoder` on {c['docs']} documents against codes of the cached embeddings: max |diff| "
                  f"{c['max_abs_diff']:.2e}, identical support on {_pct(c['same_support_frac'])} of documents.", ""]
    if results.get("exploration"):
        x = results["exploration"]
        lines += ["## Exploration (k = 64, embedding source)", "", x["note"], "",
                  "| latents | epochs | variant | nDCG@10 dot | cosine | decoded (dense on reconstructions) | "
                  "train FVU | dead |", "|---|---|---|---|---|---|---|---|"]
        for r in x["runs"]:
            variant = ("matryoshka" + str(tuple(r["matryoshka"]))) if r.get("matryoshka") else "topk"
            variant += f" +sim {r['sim']:g}" if r["sim"] else ""
            lines.append(f"| {r['nl']} | {r['epochs']:g} | {variant} | {r['dot']:.4f} | {r['cos']:.4f} | "
                         f"{r['recon_dense']:.4f} | {r['fvu']:.3f} | {_pct(r['dead'])} |")
        lines.append("")
    if results.get("findings"):
        lines += ["## Findings", ""] + results["findings"] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="../shared/data/beir/scifact")
    ap.add_argument("--emb-store", type=Path)
    ap.add_argument("--hidden-store", type=Path)
    ap.add_argument("--work", type=Path, default=Path("data/cache/sae/bench"))
    ap.add_argument("--ks", default="16,32,64")
    ap.add_argument("--variants", default=",".join(EMB_VARIANTS))
    ap.add_argument("--n-latents", type=int, default=4096)
    ap.add_argument("--emb-epochs", type=float, default=10)
    ap.add_argument("--hidden-epochs", type=float, default=1)
    ap.add_argument("--hidden-max-steps", type=int, help="time box per hidden-source SAE")
    ap.add_argument("--hidden-latents", type=int, default=4096)
    ap.add_argument("--hidden-doc-cap", type=int, default=256, help="also index documents pruned to this many features")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--quantize", default="uint8", choices=("uint8", "float32"))
    ap.add_argument("--no-auxk-ablation", action="store_true")
    ap.add_argument("--no-center-ablation", action="store_true",
                    help="skip the embedding SAE (k = 64, or the middle of --ks) trained on inputs that are "
                    "scaled but not mean-centred")
    ap.add_argument("--out", type=Path, default=Path("bench/results/sae.json"))
    ap.add_argument("--build-emb-store", type=int, metavar="N_SENTENCES",
                    help="first write --emb-store from --hidden-store's documents, N sentences and the queries")
    ap.add_argument("--collect-docs", type=int, metavar="N",
                    help="first write --hidden-store (last layer of --model) for a slice of N documents "
                         "(every relevant one plus random others; 0 = the whole corpus)")
    ap.add_argument("--model", default="../shared/models/all-MiniLM-L6-v2")
    ap.add_argument("--collect-only", action="store_true", help="stop after building the stores")
    ap.add_argument("--report-only", action="store_true", help="rewrite the Markdown from the JSON and stop")
    args = ap.parse_args()
    if args.collect_docs is not None:
        from sparseir.sae.collect import HiddenStateSource, collect_hidden, corpus_records

        corpus = args.dataset if args.collect_docs == 0 else make_slice(
            args.dataset, args.collect_docs, args.work / f"scifact-slice-{args.collect_docs}.jsonl")
        src = HiddenStateSource(args.model, layer=-1, max_length=256)
        collect_hidden(src, corpus_records(str(corpus)), args.hidden_store, batch_size=16,
                       extra_meta={"corpus": str(corpus)})
    if args.build_emb_store is not None:
        build_embedding_store(ActivationStore(args.hidden_store), args.dataset, args.emb_store, args.build_emb_store)
    if args.collect_only:
        return
    torch.set_num_threads(1)  # a busy shared machine: one thread is faster than two fighting
    ks = [int(k) for k in args.ks.split(",")]
    qrels = load_qrels(args.dataset)
    results: dict = {"dataset": args.dataset, "quantize": args.quantize, "ks": ks, "device": "cpu"
                     if not torch.cuda.is_available() else "cuda", "embedding": {}, "hidden": {}}

    def save() -> None:
        """Merge this run's entries into the JSON on disk (another run may have added others) and rewrite both."""
        args.out.parent.mkdir(parents=True, exist_ok=True)
        on_disk = json.loads(args.out.read_text()) if args.out.is_file() else {}
        for key in ("embedding", "hidden", "setup"):
            results[key] = {**on_disk.get(key, {}), **results.get(key, {})}
        for key, value in on_disk.items():
            results.setdefault(key, value)
        tmp = args.out.with_suffix(f".json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, args.out)
        write_markdown(results, args.out.with_suffix(".md"))
        plot_fvu_curves(results, args.out.with_name(args.out.stem + "_hidden_fvu.png"))

    if args.report_only:
        on_disk = json.loads(args.out.read_text())
        write_markdown(on_disk, args.out.with_suffix(".md"))
        plot_fvu_curves(on_disk, args.out.with_name(args.out.stem + "_hidden_fvu.png"))
        return
    results["setup"] = {
        "machine": f"CPU only ({os.cpu_count()} cores shared with other jobs; no GPU lent), torch {torch.__version__}",
        "queries": f"the {len(qrels)} judged test queries of {Path(args.dataset).name}; nDCG@10 and R@100 by "
                   "ir-measures",
        "latency": "one query at a time, one thread, search only (query encoding excluded, it is the same "
                   "MiniLM forward pass for dense and embedding-SAE)",
        "quantize": args.quantize,
    }
    if args.emb_store:
        results["setup"]["embedding SAEs"] = (f"{args.n_latents} latents, {args.emb_epochs} epochs, batch "
                                              f"{args.batch_size}, Adam lr 1e-3, AuxK (aux_k = d_in / 2, coef 1/32)")
    if args.hidden_store and not args.build_emb_store:
        results["setup"]["hidden SAEs"] = (f"{args.hidden_latents} latents, batch {args.batch_size}, lr 1e-3, "
                                           f"{args.hidden_epochs:g} epochs" + (f", at most {args.hidden_max_steps} "
                                           "steps" if args.hidden_max_steps else ""))

    qids_all: list[str] = []
    if args.emb_store:
        store = ActivationStore(args.emb_store)
        texts = store.texts()
        drows, qrows, doc_ids, qids_all = embedding_rows(texts)
        docs = np.asarray(store.acts[drows], dtype=np.float32)
        queries = np.asarray(store.acts[qrows], dtype=np.float32)
        results["dense"] = dense_eval(docs, queries, doc_ids, qids_all, qrels)
        results["embedding_data"] = {k: sum(t.get("kind", "doc") == k for t in texts)
                                     for k in ("doc", "sentence", "query")}
        full = store.meta.get("limit") is None and Path(store.meta.get("corpus", "")) == Path(args.dataset)
        results["setup"]["corpus"] = (f"{len(doc_ids)} documents ({store.meta.get('corpus')}): " + (
            "the full corpus" if full else "every document judged relevant to a test query plus random others"))
        results["setup"]["embedding training rows"] = (
            f"{store.n_rows - store.n_rows // store.val_every} ({results['embedding_data']}; every "
            f"{store.val_every}th row held out for FVU/L0)")
        print("dense", results["dense"], flush=True)
        save()

        def emb_cfg(variant: str, k: int, **kw) -> SAEConfig:
            """The embedding SAEs' configuration (``kw`` for ablations)."""
            return SAEConfig(d_in=store.dim, n_latents=args.n_latents, k=k, dead_after=20_000,
                             **EMB_VARIANTS[variant], **kw)

        def emb_run(name: str, cfg: SAEConfig, center: bool = True) -> dict:
            """Train (or load) an embedding SAE and score its codes by dot product and by cosine."""
            path = args.work / f"emb-{name}"
            train_or_load(store, path, cfg, TrainConfig(batch_size=args.batch_size, epochs=args.emb_epochs, lr=1e-3,
                                                        center=center), None)
            model, _ = load_sae(path)
            terms = read_json(path, LABELS)["labels"]
            entry = {"sae": diag_summary(path), "config": cfg.to_dict()}
            for norm in (False, True):
                entry["cosine" if norm else "dot"] = sparse_eval(
                    codes(model, docs, cfg.k, norm), codes(model, queries, cfg.k, norm), doc_ids, qids_all, terms,
                    qrels, args.work / "ix" / f"emb-{name}-{int(norm)}", args.quantize)
            print(name, json.dumps(entry), flush=True)
            return entry

        variant = args.variants.split(",")[0]
        for k in ks:
            for v in args.variants.split(","):
                name = f"{v}-n{args.n_latents}-k{k}"
                results["embedding"][name] = emb_run(name, emb_cfg(v, k))
                save()
        if not args.no_auxk_ablation:
            k = 32
            path = args.work / f"emb-{variant}-n{args.n_latents}-k{k}-noauxk"
            train_or_load(store, path, emb_cfg(variant, k, aux_coef=0.0),
                          TrainConfig(batch_size=args.batch_size, epochs=args.emb_epochs, lr=1e-3), None)
            results["auxk_ablation"] = {"variant": variant, "k": k, "without_auxk": diag_summary(path),
                                        "with_auxk": results["embedding"][f"{variant}-n{args.n_latents}-k{k}"]["sae"]}
            save()
        if not args.no_center_ablation:
            k = 64 if 64 in ks else ks[len(ks) // 2]
            name = f"{variant}-n{args.n_latents}-k{k}"
            mean = load_sae(args.work / f"emb-{name}")[0].norm_mean.numpy()
            results["center_ablation"] = {
                "variant": variant, "k": k, "centred": name,
                "not_centred": emb_run(f"{name}-nocenter", emb_cfg(variant, k), False),
                "dense_on_centred": dense_eval(unit(docs - mean), unit(queries - mean), doc_ids, qids_all, qrels)}
            save()
        check_encoder(args.work / f"emb-{variant}-n{args.n_latents}-k{ks[0]}", docs[:20],
                      [texts[i]["text"] for i in drows[:20]], ks[0], results)
        save()

    if args.hidden_store:
        from sparseir.corpus import load_queries
        from sparseir.encoders.sae import SAESparseEncoder

        store = ActivationStore(args.hidden_store)
        texts = store.texts()
        doc_ids = [t["id"] for t in texts]
        queries = load_queries(args.dataset)
        qids = [q for q in queries if q in qrels]
        for k in ks:
            name = f"topk-k{k}"
            cfg = SAEConfig(d_in=store.dim, n_latents=args.hidden_latents, k=k, dead_after=100_000)
            path = args.work / f"hidden-{name}"
            train_or_load(store, path, cfg, TrainConfig(batch_size=args.batch_size, epochs=args.hidden_epochs,
                                                        lr=1e-3), args.hidden_max_steps)
            model, _ = load_sae(path)
            enc = SAESparseEncoder(path, batch_size=64)
            t = time.perf_counter()
            q_csr = enc.encode_query([queries[q] for q in qids])
            q_enc_ms = (time.perf_counter() - t) / len(qids) * 1000
            doc_csr = pooled_codes(model, store, k, len(texts))
            log = json.loads((path / "sae_config.json").read_text())["log"]
            entry = {"sae": diag_summary(path), "config": cfg.to_dict(), "query_encode_ms": q_enc_ms,
                     "fvu_curve": [[r["step"], round(r["fvu"], 4)] for r in log],
                     "dot": sparse_eval(doc_csr, q_csr, doc_ids, qids, enc.terms, qrels,
                                        args.work / "ix" / f"hidden-{name}", args.quantize),
                     f"dot-docs-top{args.hidden_doc_cap}": sparse_eval(
                         prune_rows(doc_csr, args.hidden_doc_cap), q_csr, doc_ids, qids, enc.terms, qrels,
                         args.work / "ix" / f"hidden-{name}-cap", args.quantize)}
            results["hidden"][name] = entry
            print(name, json.dumps(entry), flush=True)
            save()


def check_encoder(path: Path, cached: np.ndarray, texts: list[str], k: int, results: dict) -> None:
    """Compare cached-embedding codes with SAESparseEncoder run live on the same documents."""
    from sparseir.encoders.sae import SAESparseEncoder

    enc = SAESparseEncoder(path, k=k)
    t = time.perf_counter()
    live = enc.encode_document(texts).toarray()
    model, _ = load_sae(path)
    ref = codes(model, cached, k, False).toarray()
    results["encoder_check"] = {"sae": str(path), "docs": len(texts), "max_abs_diff": float(np.abs(live - ref).max()),
                                "same_support_frac": float(((live > 0) == (ref > 0)).all(1).mean()),
                                "docs_per_second": len(texts) / (time.perf_counter() - t)}


if __name__ == "__main__":
    main()
