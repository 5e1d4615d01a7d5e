"""The decoder-only LLM encoder on the real SmolLM2-135M-Instruct GGUF checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp


from sparseir.cli import main
from sparseir.encoders import EncoderError, load_encoder
from sparseir.encoders.llm import MODES, LLMSparseEncoder, find_gguf, naive_encode
from sparseir.index import SparseIndex
from sparseir.indexing import build_index
from sparseir.search import Searcher
from conftest import SMOLLM

GGUF_DIR = SMOLLM
DOCS = ["Bone density falls with age in women after menopause.",
        "The mitochondria is the powerhouse of the cell.",
        "Vaccines train the immune system to recognise a virus.",
        "Stocks fell sharply on Monday."]
FOX = "The swift brown fox jumps over the lazy dog."
OTHERS = ["A quick, tan fox leaps over a lethargic canine.", "The large blue whale swims in the ocean.",
          "A car was parked in the garage"]


@pytest.fixture(scope="module")
def encoders() -> dict[str, LLMSparseEncoder]:
    """One encoder per mode; they share a single copy of the weights."""
    return {mode: LLMSparseEncoder(GGUF_DIR, mode=mode, max_length=32, query_max_length=16) for mode in MODES}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_load_encoder_finds_the_gguf_file(encoders):
    for spec in (f"llm:{GGUF_DIR}", str(GGUF_DIR)):
        enc = load_encoder(spec, max_length=32)
        assert isinstance(enc, LLMSparseEncoder) and enc.name == "llm"
        assert enc.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and enc.dim == 49152
        assert enc.model is encoders["echo"].model  # cached weights
    rebuilt = load_encoder(json.loads(json.dumps(encoders["prompt"].config())))
    assert rebuilt.config() == encoders["prompt"].config()
    assert rebuilt.fingerprint == encoders["prompt"].fingerprint


def test_find_gguf(tmp_path):
    (tmp_path / "a.gguf").touch()
    assert find_gguf(str(tmp_path), None) == (str(tmp_path), "a.gguf")
    assert find_gguf(str(tmp_path / "a.gguf"), None) == (str(tmp_path), "a.gguf")
    (tmp_path / "b.gguf").touch()
    with pytest.raises(EncoderError, match="several"):
        find_gguf(str(tmp_path), None)
    assert find_gguf(str(tmp_path), "b.gguf") == (str(tmp_path), "b.gguf")


def test_bad_settings_raise():
    with pytest.raises(EncoderError, match="mode"):
        LLMSparseEncoder(GGUF_DIR, mode="mean")
    with pytest.raises(EncoderError, match="twice"):
        LLMSparseEncoder(GGUF_DIR, mode="echo", doc_template="{text}")
    with pytest.raises(EncoderError, match="exactly once"):
        LLMSparseEncoder(GGUF_DIR, mode="prompt", query_template="no placeholder")
    with pytest.raises(EncoderError, match="score"):
        LLMSparseEncoder(GGUF_DIR, score="softmax")


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_encodes_documents_and_queries(encoders, mode):
    enc = encoders[mode]
    docs = enc.encode_document(DOCS + ["", "   "])
    queries = enc.encode_query(["bone loss", "cell energy"])
    for m, n in ((docs, len(DOCS) + 2), (queries, 2)):
        assert sp.isspmatrix_csr(m) and m.dtype == np.float32 and m.shape == (n, enc.dim)
        assert (m.data > 0).all()
    assert (docs.getnnz(axis=1)[: len(DOCS)] > 0).all() and docs.getnnz(axis=1)[len(DOCS):].sum() == 0
    assert enc.last_docs_per_second > 0
    top = [t for t, _ in enc.decode(docs[0], top_k=30)[0]]
    assert {"bone", "density", "menopause", "women", "age"} & set(top), top


@pytest.mark.parametrize("mode", MODES)
def test_batched_equals_one_at_a_time(encoders, mode):
    enc = encoders[mode]
    batched = enc.encode_document(DOCS, batch_size=4).toarray()
    single = np.vstack([enc.encode_document([d]).toarray() for d in DOCS])
    np.testing.assert_allclose(batched, single, atol=2e-4)


@pytest.mark.parametrize(("mode", "score"), [(m, "logprob") for m in MODES] + [("echo", "logits")])
def test_bounded_pooling_equals_naive_full_logits(encoders, mode, score):
    # Three rows per head chunk, so chunks cut across documents.
    enc = LLMSparseEncoder(GGUF_DIR, mode=mode, score=score, max_length=32, max_chunk_elements=3 * 49152)
    pooled = enc.encode_document(DOCS[:3], batch_size=3).toarray()
    naive = naive_encode(enc, DOCS[:3]).numpy()
    np.testing.assert_allclose(pooled, naive, atol=1e-4)


def test_pooled_positions(encoders):
    text = "Bone density"
    ids = encoders["plain"].tokenizer(text, add_special_tokens=False)["input_ids"]
    for mode in ("plain", "echo"):
        input_ids, attention, pool = encoders[mode].build_inputs([text, text + " falls with age"], False)
        assert input_ids[0][pool[0]].tolist() == ids
        assert attention[0].sum() < attention[1].sum() and not pool[0][attention[0] == 0].any()
    input_ids, attention, pool = encoders["echo"].build_inputs([text], False)
    assert (input_ids[0].tolist().count(ids[0])) == 2  # the text really is there twice
    _, attention, pool = encoders["prompt"].build_inputs([text, text + " falls with age"], True)
    assert pool.sum(1).tolist() == [1, 1]
    assert [int(pool[i].nonzero()) for i in range(2)] == [int(attention[i].sum()) - 1 for i in range(2)]


def test_vocabulary_names_are_readable_and_unique(encoders):
    enc = encoders["echo"]
    tok = enc.tokenizer
    assert len(set(enc.terms)) == enc.dim
    bone, inner = tok.convert_tokens_to_ids(["Ġbone", "bone"])
    assert enc.terms[bone] == "bone" and enc.terms[inner] == "##bone"
    assert not any("Ġ" in t or "Ċ" in t for t in enc.terms if not t.startswith("<"))
    assert enc.terms[tok.convert_tokens_to_ids("Ã")] == "<0xC3>"
    (decoded,) = enc.decode(enc.encode_document(DOCS[:1]), top_k=50)
    assert all(t.strip() == t and t for t, _ in decoded)


def test_mask_zeroes_special_whitespace_and_punctuation():
    masked = LLMSparseEncoder(GGUF_DIR, mode="plain", max_length=32)
    raw = LLMSparseEncoder(GGUF_DIR, mode="plain", max_length=32, mask=False)
    tok = masked.tokenizer
    noise = set(masked.noise_ids)
    assert {tok.convert_tokens_to_ids(t) for t in ("Ġ", ".", "),", "ĊĊ", "Ġ(")} <= noise
    assert tok.convert_tokens_to_ids("Ġbone") not in noise
    assert set(tok.all_special_ids) <= set(masked.special_ids)
    a = masked.encode_document(DOCS).toarray()
    b = raw.encode_document(DOCS).toarray()
    dropped = sorted(noise | set(masked.special_ids))
    assert b[:, dropped].any() and not a[:, dropped].any()
    b[:, dropped] = 0
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_prompt_keeps_only_the_texts_words(encoders):
    enc = encoders["prompt"]
    vec = enc.encode_document(DOCS[:2])
    allowed = enc.input_vocabulary(DOCS[:2]).cpu().numpy()
    for i in range(2):
        assert allowed[i, vec[i].indices].all()
    assert {"bone", "density"} & {t for t, _ in enc.decode(vec[0])[0]}


def test_max_active_dims():
    enc = LLMSparseEncoder(GGUF_DIR, mode="echo", max_length=32, max_active_dims=20)
    assert enc.encode_document(DOCS).getnnz(axis=1).max() <= 20


@pytest.mark.parametrize("mode", [None, "echo", "plain"])
def test_fox_experiment(mode):
    """The seeds' check, with each mode's default score (prompt: PMI against the prompt's prior; echo,
    plain: log-probability; raw logits fail it, every cosine is ~0.997). ``None`` is the default mode."""
    enc = LLMSparseEncoder(GGUF_DIR, mode=mode)
    vecs = enc.encode_document([FOX] + OTHERS).toarray()
    paraphrase, whale, car = (_cos(vecs[0], v) for v in vecs[1:])
    assert paraphrase > whale and paraphrase > car, (paraphrase, whale, car)


def test_prompt_default_keeps_content_words_on_top():
    """PMI cancels what the prompt predicts for any text ("The", "the"); the word-start mask drops
    pieces that start no word ("##j", "##sw"). Without them, prompt mode fails the fox check."""
    enc = LLMSparseEncoder(GGUF_DIR)
    assert (enc.mode, enc.score, enc.word_start) == ("prompt", "pmi", True)
    top = [t for t, _ in enc.decode(enc.encode_document([FOX]).toarray()[0], top_k=5)]
    assert not any(t.startswith("##") for t in top) and not {"the", "The", "over"} & set(top), top
    assert {"fox", "swift", "lazy"} <= set(top), top
    old = LLMSparseEncoder(GGUF_DIR, score="logprob", word_start=False)
    vecs = old.encode_document([FOX] + OTHERS).toarray()
    assert _cos(vecs[0], vecs[1]) < _cos(vecs[0], vecs[2])  # the failure this default fixes
    assert old.decode(old.encode_document([FOX]).toarray()[0], top_k=1)[0][0] == "##The"


def test_index_search_and_cli(tmp_path, encoders, capsys):
    enc = encoders["echo"]
    index = build_index([(f"d{i}", t) for i, t in enumerate(DOCS)], enc, tmp_path / "idx", quantize="float32",
                        show_progress_bar=False)
    assert list(index.terms) == enc.terms
    searcher = Searcher(tmp_path / "idx")  # rebuilds the encoder from the manifest
    hits = searcher.search("osteoporosis and bone density in older women", k=2)
    assert hits[0].doc_id == "d0"
    assert searcher.explain("bone density", "d0")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(DOCS)))
    assert main(["index", str(corpus), "--encoder", f"llm:{GGUF_DIR}", "--mode", "prompt", "--no-mask",
                 "--max-length", "32", "--out", str(tmp_path / "cli")]) == 0
    assert "indexed 4 documents" in capsys.readouterr().out
    config = SparseIndex.load(tmp_path / "cli").manifest["encoder"]["config"]
    assert config["mode"] == "prompt" and config["mask"] is False and config["max_length"] == 32
