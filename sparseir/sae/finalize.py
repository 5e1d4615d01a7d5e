"""After training: scan the activations, label every feature, save diagnostics with the SAE."""

from __future__ import annotations

from pathlib import Path

import torch

from sparseir.sae.checkpoint import DIAGNOSTICS, FREQ_HIST, LABELS, TRAIN_STATE, save_sae
from sparseir.sae.diagnostics import freq_histogram_png, scan
from sparseir.sae.labels import embedding_labels, hidden_labels
from sparseir.sae.model import SparseAutoencoder
from sparseir.sae.store import ActivationStore


def finalize_sae(
    out: str | Path, model: SparseAutoencoder, info: dict, store: ActivationStore, *, progress: bool = True
) -> dict:
    """Write labels.json, diagnostics.json and freq_hist.png into the checkpoint ``out``.

    Returns the diagnostics (FVU and L0 on held-out rows, dead fraction, frequencies).
    """
    out = Path(out)
    res = scan(model, store, progress=progress)
    if store.kind == "hidden":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(store.meta["model"])
        labels, examples = hidden_labels(res, store, tokenizer)
        method = "top activating tokens (activation-weighted) among each feature's top rows"
    else:
        labels, examples = embedding_labels(res, store)
        method = "TF-IDF words of each feature's top activating texts"
    last = info["log"][-1] if info.get("log") else {}
    diagnostics = {
        **res.summary(),
        "train_dead_frac": last.get("dead_frac"),
        "train_dead_after": model.cfg.dead_after,
        "train_aux_loss": last.get("aux_loss"),
        "n_rows": store.n_rows,
        "freq": [float(f) for f in res.freq],
    }
    state_file = out / TRAIN_STATE
    train_state = torch.load(state_file, weights_only=False) if state_file.is_file() else None
    save_sae(
        out,
        model,
        info,
        train_state=train_state,
        extra_json={LABELS: {"method": method, "labels": labels, "examples": examples}, DIAGNOSTICS: diagnostics},
        extra_bytes={FREQ_HIST: freq_histogram_png(res.freq, store.n_rows)},
    )
    return diagnostics
