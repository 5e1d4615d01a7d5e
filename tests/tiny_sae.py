"""A tiny SAE over MiniLM (hidden-state or embedding source), trained in seconds on a few sentences."""

from __future__ import annotations

from pathlib import Path

from conftest import MINILM

SENTENCES = ["Vitamin D supplements and the risk of hip fractures in older women.",
             "A whale is a large marine mammal; the fox is a small canine.",
             "Broken bones heal slowly when calcium intake is low."]


def train_tiny_sae(root: Path, kind: str, n_latents: int = 64, k: int = 4) -> Path:
    """Collect ``kind`` activations of :data:`SENTENCES`, train and finalise an SAE in ``root/kind``."""
    from sparseir.sae.collect import EmbeddingSource, HiddenStateSource, collect_embeddings, collect_hidden
    from sparseir.sae.finalize import finalize_sae
    from sparseir.sae.model import SAEConfig
    from sparseir.sae.store import ActivationStore
    from sparseir.sae.train import TrainConfig, train_sae

    records = [{"id": f"s{i}", "text": t} for i, t in enumerate(SENTENCES)] * 4
    if kind == "hidden":
        store = collect_hidden(HiddenStateSource(str(MINILM), layer=4, max_length=64), records, root / "hidden-acts")
    else:
        store = collect_embeddings(EmbeddingSource(str(MINILM)), records, root / "embedding-acts")
    store = ActivationStore(store, val_every=5)
    model, info = train_sae(store, root / kind, SAEConfig(d_in=384, n_latents=n_latents, k=k),
                            TrainConfig(batch_size=16, epochs=3), progress=False)
    finalize_sae(root / kind, model, info, store, progress=False)
    return root / kind
