"""The seeds' experiment: fox / canine / whale / car under SPLADE, each LLM mode and an SAE.

Encodes four sentences with every encoder family, prints each encoder's cosine matrix and the
top dimensions of every sentence side by side (the "SAE vs SPLADE" comparison: vocabulary terms
against learned features), and saves one heatmap per encoder to a PNG.

    python docs/examples/seeds_similarity.py --out docs/seeds-similarity.png

Without ``--sae DIR``, an embedding-source SAE over MiniLM is trained first on the sentences of
the first ``--sae-docs`` SciFact documents (a minute on a laptop CPU; the committed heatmap used
the default). Models come from ``../shared/models`` (``--models`` to change).

Reading the committed heatmap (docs/seeds-similarity.png): SPLADE, the LLM's prompt mode and the SAE
keep unrelated sentences apart (cosine <= 0.21; fox is nearest canine under SPLADE and the SAE), while
the LLM's plain and echo modes share their many function-word dimensions ("the", "a", "in"), so every
pair sits at 0.5-0.7. The SAE's feature labels come from the scientific abstracts it was trained on
(``f900:cafs/fox/vocal``), not from these sentences.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

SENTENCES = {
    "fox": "The quick brown fox jumps over the lazy dog.",
    "canine": "A wild canine hunts rabbits in the forest at night.",
    "whale": "A whale is a huge marine mammal that swims in the ocean.",
    "car": "The new electric car drives fast on the motorway.",
}
#: LLM variants: (label, keyword arguments of LLMSparseEncoder)
LLM_MODES = [("LLM plain", {"mode": "plain"}), ("LLM echo", {"mode": "echo"}), ("LLM prompt", {"mode": "prompt"}),
             ("LLM plain bidir.", {"mode": "plain", "attention": "bidirectional"})]


def cosine(m: sp.csr_matrix) -> np.ndarray:
    """Cosine similarities between the rows of a sparse matrix."""
    dense = m.toarray().astype(np.float64)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    dense = dense / np.where(norms == 0, 1, norms)
    return dense @ dense.T


def train_sae(models: Path, n_docs: int, work: Path) -> Path:
    """A 1024-latent, k = 16 TopK SAE on MiniLM embeddings of SciFact documents and their sentences."""
    from sparseir.sae.collect import EmbeddingSource, collect_embeddings, corpus_records
    from sparseir.sae.finalize import finalize_sae
    from sparseir.sae.model import SAEConfig
    from sparseir.sae.store import ActivationStore
    from sparseir.sae.train import TrainConfig, train_sae as train

    corpus = models.parent / "data" / "beir" / "scifact"
    records = corpus_records(str(corpus), sentences=True, limit=n_docs)
    store = ActivationStore(collect_embeddings(EmbeddingSource(str(models / "all-MiniLM-L6-v2")), records,
                                               work / "acts"))
    model, info = train(store, work / "sae", SAEConfig(d_in=store.dim, n_latents=1024, k=16, dead_after=2000),
                        TrainConfig(batch_size=128, epochs=30), progress=False)
    finalize_sae(work / "sae", model, info, store, progress=False)
    return work / "sae"


def encoders(models: Path, sae: Path):
    """``(label, encoder)`` for SPLADE, every LLM mode and the SAE."""
    from sparseir.encoders.llm import LLMSparseEncoder
    from sparseir.encoders.mlm import MLMSparseEncoder
    from sparseir.encoders.sae import SAESparseEncoder

    yield "SPLADE (splade-tiny)", MLMSparseEncoder(str(models / "splade-tiny"))
    for label, kw in LLM_MODES:
        yield label, LLMSparseEncoder(str(models / "smollm2-135m-instruct-gguf"), **kw)
    yield "SAE (MiniLM embedding)", SAESparseEncoder(sae)


def heatmap(results: dict[str, np.ndarray], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(SENTENCES)
    fig, axes = plt.subplots(2, (len(results) + 1) // 2, figsize=(3.2 * ((len(results) + 1) // 2), 6.4), dpi=100)
    for ax, (label, sim) in zip(axes.flat, results.items()):
        ax.imshow(sim, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(label, fontsize=9)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if sim[i, j] > 0.6 else "white")
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    fig.suptitle("Cosine similarity of sparse vectors: fox / canine / whale / car", fontsize=11)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/seeds-similarity.png"), help="heatmap PNG")
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "models")
    parser.add_argument("--sae", type=Path, help="an SAE folder (default: train one, see --sae-docs)")
    parser.add_argument("--sae-docs", type=int, default=300, help="SciFact documents the SAE is trained on")
    parser.add_argument("--top", type=int, default=5, help="top dimensions shown per sentence")
    args = parser.parse_args(argv)
    results: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as work:
        sae = args.sae or train_sae(args.models, args.sae_docs, Path(work))
        tops: dict[str, list[list[str]]] = {}
        for label, enc in encoders(args.models, sae):
            vectors = enc.encode_document(list(SENTENCES.values()))
            results[label] = cosine(vectors)
            tops[label] = [[t for t, _ in row] for row in enc.decode(vectors, top_k=args.top)]
    names = list(SENTENCES)
    for label, sim in results.items():
        print(f"\n{label}: cosine\n{'':>8}" + "".join(f"{n:>8}" for n in names))
        for n, row in zip(names, sim):
            print(f"{n:>8}" + "".join(f"{v:8.2f}" for v in row))
    width = 34
    for i, name in enumerate(names):
        print(f"\ntop {args.top} dimensions of {name!r}: {SENTENCES[name]}")
        print("".join(f"{label[:width - 2]:<{width}}" for label in tops))
        for r in range(args.top):
            print("".join(f"{(row[i][r] if r < len(row[i]) else '')[:width - 2]:<{width}}" for row in tops.values()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    heatmap(results, args.out)
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
