"""SPLADE fine-tuning (``sparseir train``) for MLM and LLM (LoRA) backbones on a slice of NFCorpus train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparseir.cli import main
from sparseir.encoders import MLMSparseEncoder
from sparseir.encoders.llm import LLMSparseEncoder
from sparseir.train import TrainError
from sparseir.train import splade as splade_module
from sparseir.train.checkpoint import checkpoint_path
from sparseir.train.data import load_pairs
from sparseir.train.splade import TRAIN_META, LLMBackbone, MLMBackbone, SpladeConfig, train
from conftest import SHARED, SMOLLM, SPLADE_TINY

NFCORPUS = SHARED / "data" / "beir" / "nfcorpus"


def make_train_slice(out: Path, n_queries: int = 6, docs_per_query: int = 2) -> Path:
    """A BEIR folder: the first ``n_queries`` NFCorpus train queries, a few positives each, their documents."""
    rows = (NFCORPUS / "qrels" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    kept: dict[str, list[str]] = {}
    for r in rows:
        q, d, _ = r.split("\t")
        if (q in kept or len(kept) < n_queries) and len(kept.setdefault(q, [])) < docs_per_query:
            kept[q].append(d)
    docs = {d for ds in kept.values() for d in ds}
    (out / "qrels").mkdir(parents=True)
    (out / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, ds in kept.items() for d in ds))
    with open(NFCORPUS / "corpus.jsonl", encoding="utf-8") as f:
        (out / "corpus.jsonl").write_text("".join(line for line in f if json.loads(line)["_id"] in docs))
    with open(NFCORPUS / "queries.jsonl", encoding="utf-8") as f:
        (out / "queries.jsonl").write_text("".join(line for line in f if json.loads(line)["_id"] in kept))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_train_slice(tmp_path_factory.mktemp("nf") / "nf")


TINY = dict(steps=4, batch_size=4, max_length=48, query_max_length=16, checkpoint_every=2)


def test_pairs_and_bad_training_sets(data, tmp_path):
    pairs, corpus = load_pairs(data)
    assert len({p.qid for p in pairs}) == 6 and all(p.doc_id in corpus and p.query for p in pairs)
    empty = tmp_path / "empty"
    (empty / "qrels").mkdir(parents=True)
    (empty / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n")
    for f in ("corpus.jsonl", "queries.jsonl"):
        (empty / f).write_text((data / f).read_text())
    with pytest.raises(TrainError, match="empty"):
        load_pairs(empty)
    (empty / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nNOPE-1\tMED-1\t1\n")
    with pytest.raises(TrainError, match="none of its 1 query ids"):
        load_pairs(empty)
    assert main(["train", str(SPLADE_TINY), "--data", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert main(["train", str(SPLADE_TINY), "--data", str(data), "--out", str(tmp_path / "o"),
                 "--batch-size", "1"]) == 2


def test_mlm_training_resumes_after_a_crash_and_loads(data, tmp_path, monkeypatch, one_torch_thread):
    pairs, corpus = load_pairs(data)
    out = tmp_path / "splade"
    config = SpladeConfig(**TINY)
    real = splade_module.make_step_batch

    def crash_at_step_3(by_query, step, *args):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return real(by_query, step, *args)

    monkeypatch.setattr(splade_module, "make_step_batch", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(MLMBackbone(str(SPLADE_TINY), config, "cpu"), pairs, corpus, out, config, show_progress_bar=False)
    assert not out.exists() and (checkpoint_path(out) / "state.json").exists()
    saved = json.loads((checkpoint_path(out) / "state.json").read_text())
    monkeypatch.setattr(splade_module, "make_step_batch", real)
    meta = train(MLMBackbone(str(SPLADE_TINY), config, "cpu"), pairs, corpus, out, config, show_progress_bar=False)
    history = json.loads((out / "loss.json").read_text())
    assert meta["steps"] == 4 and history[:2] == saved["history"] and not checkpoint_path(out).exists()
    assert all(h["loss"] > 0 and h["flops_d"] > 0 for h in history)
    enc = MLMSparseEncoder(str(out))
    assert enc.encode_document(["vitamin D and bone health"]).nnz > 0
    assert json.loads((out / TRAIN_META).read_text())["backbone"] == "mlm"


def test_wrong_backbone_kind_is_refused(data, tmp_path):
    with pytest.raises(TrainError, match="causal LM"):
        MLMBackbone(str(SMOLLM), SpladeConfig(**TINY), "cpu")
    assert main(["train", str(SMOLLM), "--backbone", "mlm", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert main(["train", str(SPLADE_TINY), "--backbone", "llm", "--data", str(data), "--out",
                 str(tmp_path / "o")]) == 2


def test_llm_lora_training_writes_an_adapter_the_encoder_loads(data, tmp_path):
    pairs, corpus = load_pairs(data)
    config = SpladeConfig(**{**TINY, "steps": 2, "batch_size": 2, "max_length": 24, "lora_r": 4, "lora_alpha": 8})
    out = tmp_path / "llm-splade"
    meta = train(LLMBackbone(str(SMOLLM), config, "cpu"), pairs, corpus, out, config, show_progress_bar=False)
    assert meta["backbone"] == "llm" and meta["steps"] == 2
    enc = LLMSparseEncoder(SMOLLM, adapter=str(out), max_length=24)
    assert enc.attention == "bidirectional" and enc.encode_query(["vitamin D"]).shape == (1, enc.dim)
