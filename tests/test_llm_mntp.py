"""MNTP adaptation with LoRA (``sparseir llm adapt``) and adapter loading, on the real SmolLM2-135M GGUF."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sparseir.cli import main
from sparseir.encoders import EncoderError, load_encoder
from sparseir.encoders.llm import ADAPTER_META, LLMSparseEncoder
from sparseir.indexing import build_index
from sparseir.train import TrainError
from sparseir.train.checkpoint import checkpoint_path, load_checkpoint
from sparseir.train.mntp import MNTPConfig, adapt, make_batch
from conftest import ROOT, SMOLLM, SPLADE_TINY

TEXTS = ["Bone density falls with age in women after menopause.",
         "The mitochondria is the powerhouse of the cell.",
         "Vaccines train the immune system to recognise a virus.",
         "Stocks fell sharply on Monday after the report."]
TINY = dict(steps=3, batch_size=2, max_length=24, checkpoint_every=2, lora_r=4, lora_alpha=8)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    out = tmp_path_factory.mktemp("mntp") / "adapter"
    meta = adapt(str(SMOLLM), TEXTS, out, MNTPConfig(**TINY), show_progress_bar=False)
    return out, meta


def test_adapter_is_published_with_metadata_and_loss_curve(adapter):
    out, meta = adapter
    assert {"adapter_config.json", "adapter_model.safetensors", ADAPTER_META, "loss.json", "loss.png"} <= \
        {p.name for p in out.iterdir()}
    saved = json.loads((out / ADAPTER_META).read_text())
    assert saved["steps"] == 3 and saved["attention"] == "bidirectional" and saved["objective"] == "mntp"
    assert len(json.loads((out / "loss.json").read_text())["loss"]) == 3
    assert all(0 < x < 20 for x in json.loads((out / "loss.json").read_text())["loss"])
    assert not checkpoint_path(out).exists()  # removed once the adapter is published
    assert meta["base_fingerprint"] == saved["base_fingerprint"]


def test_encoder_loads_the_adapter(adapter):
    out, _ = adapter
    base = LLMSparseEncoder(SMOLLM, attention="bidirectional", max_length=24)
    enc = LLMSparseEncoder(SMOLLM, adapter=str(out), max_length=24)
    assert enc.attention == "bidirectional" and enc.mode == "plain"  # the adapter's attention by default
    assert enc.config()["adapter"] == str(out.resolve()) and enc.model is not base.model
    assert enc.fingerprint != base.fingerprint  # the manifest's fingerprint records the adapter
    a, b = enc.encode_document(TEXTS[:2]).toarray(), base.encode_document(TEXTS[:2]).toarray()
    assert a.shape == b.shape and abs(a - b).max() > 0
    base_again = LLMSparseEncoder(SMOLLM, attention="bidirectional", max_length=24)
    assert base_again.fingerprint == base.fingerprint  # the shared base weights were not touched


def test_index_manifest_records_the_adapter(adapter, tmp_path):
    out, _ = adapter
    enc = LLMSparseEncoder(SMOLLM, adapter=str(out), max_length=24)
    index = build_index([(f"d{i}", t) for i, t in enumerate(TEXTS)], enc, tmp_path / "idx", show_progress_bar=False)
    recorded = index.manifest["encoder"]
    assert recorded["config"]["adapter"] == str(out.resolve()) and recorded["fingerprint"] == enc.fingerprint
    rebuilt = load_encoder(recorded["config"])  # what a Searcher does with the manifest
    assert rebuilt.fingerprint == enc.fingerprint and rebuilt.attention == "bidirectional"


def test_batches_are_a_function_of_seed_and_step():
    config = MNTPConfig(**TINY)
    rows = [[1, 5, 6, 7, 8, 9, 10], [1, 11, 12, 13], [1, 20, 21, 22, 23, 24]]
    a = make_batch(rows, 7, config, mask_id=4, vocab=100, pad_id=0, n_start=1)
    b = make_batch(rows, 7, config, mask_id=4, vocab=100, pad_id=0, n_start=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    input_ids, attention, targets, positions = a
    assert (positions[:, 1] >= 1).all()  # the BOS is never masked; position i - 1 exists
    assert len(set(positions[:, 0].tolist())) == config.batch_size  # every text has a masked token


def test_bad_input(tmp_path, adapter):
    out, _ = adapter
    with pytest.raises(TrainError, match="no non-empty text"):
        adapt(str(SMOLLM), ["", "  "], tmp_path / "a")
    with pytest.raises(EncoderError, match="masked LM"):
        adapt(str(SPLADE_TINY), TEXTS, tmp_path / "a", MNTPConfig(**TINY))
    with pytest.raises(EncoderError, match="does not exist"):
        LLMSparseEncoder(SMOLLM, adapter=str(tmp_path / "missing"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in out.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "adapter_model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(EncoderError, match="cannot load adapter"):
        LLMSparseEncoder(SMOLLM, adapter=str(broken))
    meta = json.loads((out / ADAPTER_META).read_text())
    (broken / ADAPTER_META).write_text(json.dumps({**meta, "base_fingerprint": "0" * 16}))
    with pytest.raises(EncoderError, match="another base model"):
        LLMSparseEncoder(SMOLLM, adapter=str(broken))
    (broken / ADAPTER_META).write_text("{not json")
    with pytest.raises(EncoderError, match="corrupt"):
        LLMSparseEncoder(SMOLLM, adapter=str(broken))
    (broken / "adapter_config.json").unlink()
    with pytest.raises(EncoderError, match="adapter_config.json is missing"):
        LLMSparseEncoder(SMOLLM, adapter=str(broken))
    for option in (["--mask-ratio", "1.5"], ["--steps", "0"], ["--lr", "-1"], ["--max-length", "2"]):
        assert main(["llm", "adapt", str(SMOLLM), "--corpus", str(tmp_path), "--out", str(tmp_path / "x"),
                     *option]) == 2


def test_killed_run_resumes_and_never_publishes_a_partial_adapter(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "text": t}) + "\n" for i, t in enumerate(TEXTS * 3)))
    out = tmp_path / "adapter"
    cmd = [sys.executable, "-m", "sparseir.cli", "llm", "adapt", str(SMOLLM), "--corpus", str(corpus),
           "--out", str(out), "--steps", "6", "--checkpoint-every", "2", "--batch-size", "2", "--max-length", "24",
           "--lora-r", "4", "--lora-alpha", "8"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = checkpoint_path(out) / "state.json"
    deadline = time.time() + 600
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists(), "no checkpoint before the deadline"
    assert not out.exists()  # killed before the end: nothing under the final name
    saved = json.loads(state.read_text())
    assert saved["step"] in (2, 4) and len(saved["losses"]) == saved["step"]
    config = MNTPConfig(steps=6, checkpoint_every=2, batch_size=2, max_length=24, lora_r=4, lora_alpha=8)
    meta = adapt(str(SMOLLM), TEXTS * 3, out, config, show_progress_bar=False)
    losses = json.loads((out / "loss.json").read_text())["loss"]
    assert meta["steps"] == 6 and len(losses) == 6 and losses[:saved["step"]] == saved["losses"]
    checkpoint_path(out).mkdir()
    (checkpoint_path(out) / "state.json").write_text(json.dumps({"config": {"steps": 1}}))
    with pytest.raises(TrainError, match="other settings"):  # a foreign checkpoint is not mixed in
        load_checkpoint(out, {"steps": 2})
    (checkpoint_path(out) / "state.json").write_text(json.dumps({"config": {"steps": 2}}))
    with pytest.raises(TrainError, match="unreadable"):
        load_checkpoint(out, {"steps": 2})
