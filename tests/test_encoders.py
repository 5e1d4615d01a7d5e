import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sparseir.corpus import load_corpus
from sparseir.encoders import EncoderError, MLMSparseEncoder, load_encoder
from sparseir.encoders.mlm import _pool_full, naive_encode, pooled_mlm_weights
from sparseir.encoders.pooling import SCREENS
from conftest import SCIFACT, SPLADE_TINY


@pytest.fixture(scope="module")
def texts():
    docs = load_corpus(SCIFACT)
    return [d.text for _, d in zip(range(24), docs)]


def test_csr_output_and_decode(splade_tiny, texts):
    x = splade_tiny.encode_document(texts[:4])
    assert sp.isspmatrix_csr(x) and x.dtype == np.float32 and x.shape == (4, 30522)
    assert (x.data > 0).all()
    (top,) = splade_tiny.decode(x[0], top_k=5)  # a matrix (even one row) gives a list per row
    assert len(top) == 5 and all(isinstance(t, str) for t, _ in top)
    assert [w for _, w in top] == sorted((w for _, w in top), reverse=True)
    assert "white" in {t for t, _ in splade_tiny.decode(x.toarray()[0], top_k=20)}  # "cerebral white matter"
    assert len(splade_tiny.decode(x)) == 4


def test_special_tokens_never_appear(splade_tiny, texts):
    x = splade_tiny.encode_document(texts[:8])
    special = set(splade_tiny.tokenizer.all_special_ids)
    assert special and not special & set(x.indices.tolist())


def test_bounded_pooling_equals_naive_formula(splade_tiny, texts):
    """Packed, chunked head + max over raw logits == log1p(relu(full logits)) max-pooled."""
    batch = splade_tiny.tokenizer(texts[:12], padding=True, truncation=True, max_length=256, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    model, head, chunk = splade_tiny.model, splade_tiny._heads[id(splade_tiny.model)], splade_tiny.max_chunk_elements
    with torch.inference_mode():
        naive = _pool_full(model, ids, mask, "max")
        assert torch.equal(pooled_mlm_weights(model, ids, mask, "max", chunk, head), naive)  # bit-identical
        # int8 or bf16 screen + float32 recompute of the candidates: the same support, the same values up
        # to float32 summation order.
        for screen in SCREENS:
            screened = pooled_mlm_weights(model, ids, mask, "max", chunk, head, screen=screen)
            torch.testing.assert_close(screened, naive, rtol=1e-6, atol=1e-6)
            assert torch.equal(screened > 0, naive > 0)
        # Smaller chunks change only the GEMM's blocking, hence the last float bits.
        tiny = pooled_mlm_weights(model, ids, mask, "max", 1 << 16, head)
        torch.testing.assert_close(tiny, naive, rtol=1e-5, atol=1e-5)
        summed = pooled_mlm_weights(model, ids, mask, "sum", 1 << 18, head)
        torch.testing.assert_close(summed, _pool_full(model, ids, mask, "sum"), rtol=1e-5, atol=1e-4)
        unknown_head = pooled_mlm_weights(model, ids, mask, "max", 1 << 22, None)  # whole model, few docs at a time
        torch.testing.assert_close(unknown_head, naive, rtol=1e-5, atol=1e-5)


def test_encoder_matches_naive_and_is_order_independent(splade_tiny, texts):
    fast = splade_tiny.encode_document(texts).toarray()
    naive = naive_encode(splade_tiny, texts).numpy()
    np.testing.assert_allclose(fast, naive, rtol=1e-5, atol=1e-5)
    one = splade_tiny.encode_document(texts[5:6]).toarray()
    np.testing.assert_allclose(one[0], fast[5], rtol=1e-5, atol=1e-5)


def test_empty_and_huge_documents(splade_tiny, texts):
    huge = texts[0] + " filler" * 2_000_000  # ~14 MB
    x = splade_tiny.encode_document(["", "   ", texts[0], huge])
    assert x.getrow(0).nnz == 0 and x.getrow(1).nnz == 0
    np.testing.assert_allclose(x.getrow(3).toarray(), splade_tiny.encode_document([huge[:20_000]]).toarray(),
                               rtol=1e-5, atol=1e-5)


def test_max_active_dims(texts):
    enc = MLMSparseEncoder(str(SPLADE_TINY), max_active_dims=16)
    x = enc.encode_document(texts[:6])
    assert (np.diff(x.indptr) <= 16).all()
    full = MLMSparseEncoder(str(SPLADE_TINY)).encode_document(texts[:1]).toarray()[0]
    kept = x.getrow(0)
    assert set(kept.indices) == set(np.argsort(-full)[:16])


def test_queries_use_query_length(splade_tiny):
    q = splade_tiny.encode_query(["vitamin D and bone fractures"])
    assert "vitamin" in dict(splade_tiny.decode(q)[0])
    assert splade_tiny.query_max_length == 64


def test_config_round_trip_and_fingerprint(splade_tiny):
    rebuilt = load_encoder(splade_tiny.config())
    assert rebuilt.fingerprint == splade_tiny.fingerprint
    assert rebuilt.config() == splade_tiny.config()
    assert load_encoder(f"mlm:{SPLADE_TINY}").name == "mlm"


def test_unknown_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderError, match="cannot load tokenizer from .*not a model folder"):
        MLMSparseEncoder(str(tmp_path / "no-such-model"))
    with pytest.raises(EncoderError, match="unknown encoder family"):
        load_encoder("xyz:whatever")
    with pytest.raises(EncoderError, match="pooling"):
        MLMSparseEncoder(str(SPLADE_TINY), pooling="mean")
