"""Quick exploration of embedding-SAE settings on a full BEIR set, scored exactly in NumPy (no index).

Each configuration is trained with the project's trainer on an embedding store written by
``bench/sae.py`` and scored with the store's own query and document embeddings. Printed as JSON
lines, nDCG@10 as a fraction of the dense model's:

* ``dot``, ``cos``: sparse codes of queries and documents, what an index serves;
* ``q2k_cos``: queries coded with ``2k`` active latents against the documents' ``k`` (cosine);
* ``recon_cos``: documents ranked by the dense cosine of their SAE reconstructions;
* ``asym_dot``, ``asym_topM``: the dense query projected on the decoder atoms (all of them, or its
  ``M`` largest) against the document codes;
* ``fvu_docs``: reconstruction FVU on the documents.

    python -m bench.sae_explore --dataset ../shared/data/beir/nfcorpus \\
        --emb-store data/cache/sae/nfcorpus-minilm-emb \\
        --configs '[{"n_latents": 512, "k": 64, "epochs": 30, "seed": 1}, {"doc_repeat": 5}]'

Configuration keys (defaults): ``n_latents`` (512), ``k`` (64), ``epochs`` (30), ``batch_size``
(256), ``seed`` (0), ``center`` (true), ``matryoshka`` (null), ``doc_repeat`` (1: each document
row appears this many times among the training rows, shuffled with the rest), ``sim_coef`` (0: see
:class:`~sparseir.sae.model.SAEConfig`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.sae import embedding_rows, rank_metrics, unit
from sparseir.corpus import CorpusError, load_qrels
from sparseir.sae.model import SAEConfig
from sparseir.sae.store import ACTS, META, ROW_TEXT, TEXTS, ActivationStore, StoreError
from sparseir.sae.train import TrainConfig, train_sae

DEFAULTS = {"n_latents": 512, "k": 64, "epochs": 30, "batch_size": 256, "seed": 0, "center": True,
            "matryoshka": None, "doc_repeat": 1, "sim_coef": 0.0}


def repeat_docs(store: ActivationStore, doc_rows: np.ndarray, times: int, out: Path) -> ActivationStore:
    """A copy of ``store`` with ``times - 1`` extra copies of the document rows appended."""
    out.mkdir(parents=True)
    extra = np.tile(doc_rows, times - 1)
    np.save(out / ACTS, np.concatenate([np.asarray(store.acts), np.asarray(store.acts[extra])]))
    row_text = np.asarray(store.row_text())
    np.save(out / ROW_TEXT, np.concatenate([row_text, row_text[extra]]))
    shutil.copy(store.path / TEXTS, out / TEXTS)
    (out / META).write_text(json.dumps({**store.meta, "n_rows": store.n_rows + len(extra)}))
    return ActivationStore(out)


def settings(c: dict, d_in: int) -> tuple[SAEConfig, TrainConfig]:
    """The SAE and training configuration of one ``--configs`` entry (defaults filled in)."""
    return (SAEConfig(d_in=d_in, n_latents=c["n_latents"], k=c["k"], dead_after=20_000,
                      matryoshka=tuple(c["matryoshka"]) if c["matryoshka"] else None,
                      sim_coef=c["sim_coef"]),
            TrainConfig(batch_size=c["batch_size"], epochs=c["epochs"], lr=1e-3, chunk_rows=1 << 22, seed=c["seed"],
                        center=c["center"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="BEIR folder (for the test qrels)")
    ap.add_argument("--emb-store", type=Path, required=True, help="embedding store from bench/sae.py")
    ap.add_argument("--configs", required=True, help="JSON list of configurations (keys in the module docstring)")
    args = ap.parse_args()
    try:
        configs = json.loads(args.configs)
    except json.JSONDecodeError as e:
        ap.error(f"--configs is not JSON: {e}")
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        ap.error("--configs must be a JSON list of objects")
    for c in configs:
        if set(c) - set(DEFAULTS):
            ap.error(f"--configs: unknown keys {sorted(set(c) - set(DEFAULTS))}; known: {sorted(DEFAULTS)}")
    torch.set_num_threads(1)
    try:
        store = ActivationStore(args.emb_store)
    except StoreError as e:
        ap.error(f"--emb-store: {e}")
    for c in configs:
        try:
            settings({**DEFAULTS, **c}, store.dim)
            if not isinstance(c.get("doc_repeat", 1), int) or c.get("doc_repeat", 1) < 1:
                raise ValueError(f"doc_repeat must be an integer >= 1, got {c['doc_repeat']!r}")
        except (TypeError, ValueError) as e:
            ap.error(f"--configs {json.dumps(c)}: {e}")
    try:
        qrels = load_qrels(args.dataset)
    except CorpusError as e:
        ap.error(f"--dataset: {e}")
    drows, qrows, doc_ids, qids = embedding_rows(store.texts())
    judged = [i for i, q in enumerate(qids) if q in qrels]
    qrows, qids = qrows[judged], [qids[i] for i in judged]
    docs, queries = (np.asarray(store.acts[r], dtype=np.float32) for r in (drows, qrows))

    def ndcg(scores: np.ndarray) -> float:
        return rank_metrics(scores, qids, doc_ids, qrels, ("nDCG@10",))["nDCG@10"]

    dense = ndcg(queries @ docs.T)
    print(json.dumps({"dense": round(dense, 4), "queries": len(qids), "docs": len(doc_ids)}), flush=True)
    for given in configs:
        c = {**DEFAULTS, **given}
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            train_store = store if c["doc_repeat"] == 1 else repeat_docs(store, drows, c["doc_repeat"],
                                                                         Path(tmp) / "store")
            model, _ = train_sae(train_store, Path(tmp) / "sae", *settings(c, store.dim))
        with torch.no_grad():
            zd, zq = (model.encode(torch.from_numpy(x)).numpy() for x in (docs, queries))
            zq2 = model.encode(torch.from_numpy(queries), 2 * c["k"]).numpy()
            recon = model.decode(torch.from_numpy(zd)).numpy()
            atoms = queries @ model.W_dec.numpy()  # the dense query on the decoder atoms
        res = {"dot": ndcg(zq @ zd.T), "cos": ndcg(unit(zq) @ unit(zd).T), "q2k_cos": ndcg(zq2 @ unit(zd).T),
               "recon_cos": ndcg(queries @ unit(recon).T),
               "asym_dot": ndcg(atoms @ zd.T)}
        for m in (32, 64, 128):
            top = np.where(atoms >= -np.sort(-atoms, axis=1)[:, m - 1:m], np.maximum(atoms, 0), 0)
            res[f"asym_top{m}"] = ndcg(top @ zd.T)
        fvu = float(((recon - docs) ** 2).sum() / ((docs - docs.mean(0)) ** 2).sum())
        print(json.dumps({**given, "fvu_docs": round(fvu, 3), "seconds": round(time.perf_counter() - t),
                          **{key: round(v / dense, 3) for key, v in res.items()}}), flush=True)


if __name__ == "__main__":
    main()
