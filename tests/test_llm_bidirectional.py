"""Bidirectional attention in a decoder-only LM (LLM2Vec step 1), on the real SmolLM2-135M GGUF."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparseir.encoders import EncoderError
from sparseir.encoders.llm import LLMSparseEncoder, bidirectional_mask, naive_encode
from conftest import SMOLLM

DOCS = ["Bone density falls with age in women after menopause.",
        "The mitochondria is the powerhouse of the cell.",
        "Stocks fell sharply on Monday."]


@pytest.fixture(scope="module")
def pair() -> dict[str, LLMSparseEncoder]:
    """Plain mode, causal and bidirectional, over one shared copy of the weights."""
    return {a: LLMSparseEncoder(SMOLLM, mode="plain", attention=a, max_length=32) for a in ("causal", "bidirectional")}


def test_later_token_changes_earlier_logits_only_when_bidirectional(pair):
    tok = pair["causal"].tokenizer
    a = tok("The fox jumps over the dog", add_special_tokens=False)["input_ids"]
    b = a[:-1] + tok(" whale", add_special_tokens=False)["input_ids"][:1]
    ids = torch.tensor([a, b])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        causal = pair["causal"].logits(ids, mask)
        bidi = pair["bidirectional"].logits(ids, mask)
    earlier = slice(0, len(a) - 1)
    torch.testing.assert_close(causal[0, earlier], causal[1, earlier], atol=1e-4, rtol=1e-4)
    assert (bidi[0, earlier] - bidi[1, earlier]).abs().amax(-1).min() > 1e-2  # every earlier position moved
    # The last position sees the same prefix either way, but its own token differs in both.
    assert not torch.allclose(causal[0, -1], causal[1, -1])


def test_bidirectional_output_differs_from_causal(pair):
    causal = pair["causal"].encode_document(DOCS).toarray()
    bidi = pair["bidirectional"].encode_document(DOCS).toarray()
    assert causal.shape == bidi.shape and (bidi > 0).any()
    assert np.abs(causal - bidi).max() > 0.1


def test_mask_is_full_attention_over_real_keys():
    attention = torch.tensor([[1, 1, 1], [1, 1, 0]])
    m = bidirectional_mask(attention, torch.float32)
    assert m.shape == (2, 1, 3, 3)
    assert (m[0] == 0).all()  # no causal triangle
    assert (m[1, 0, :, :2] == 0).all() and (m[1, 0, :, 2] == torch.finfo(torch.float32).min).all()


def test_pooled_positions_are_shifted_as_in_mntp(pair):
    enc = pair["bidirectional"]
    text = "Bone density"
    ids = enc.tokenizer(text, add_special_tokens=False)["input_ids"]
    input_ids, attention, pool = enc.build_inputs([text, text + " falls with age"], False)
    shifted = torch.roll(pool[0], 1)  # position i - 1 pooled <=> token i is the text's
    assert input_ids[0][shifted].tolist() == ids
    assert input_ids[0, 0].item() == enc.tokenizer.bos_token_id and not pool[0][attention[0] == 0].any()
    c_ids, _, c_pool = pair["causal"].build_inputs([text], False)
    assert c_ids[0][c_pool[0]].tolist() == ids  # causal: the text's own positions, no BOS added


def test_bidirectional_batched_equals_one_at_a_time_and_naive(pair):
    enc = pair["bidirectional"]
    batched = enc.encode_document(DOCS, batch_size=3).toarray()
    single = np.vstack([enc.encode_document([d]).toarray() for d in DOCS])
    np.testing.assert_allclose(batched, single, atol=2e-4)  # padding keys are masked
    bounded = LLMSparseEncoder(SMOLLM, mode="plain", attention="bidirectional", max_length=32,
                               max_chunk_elements=3 * 49152)
    np.testing.assert_allclose(bounded.encode_document(DOCS, batch_size=3).toarray(),
                               naive_encode(bounded, DOCS).numpy(), atol=1e-4)


def test_bidirectional_settings(pair):
    assert pair["bidirectional"].config()["attention"] == "bidirectional"
    assert LLMSparseEncoder(SMOLLM, attention="bidirectional").mode == "plain"  # default mode follows attention
    with pytest.raises(EncoderError, match="causal attention"):
        LLMSparseEncoder(SMOLLM, attention="bidirectional", mode="prompt")
    with pytest.raises(EncoderError, match="attention"):
        LLMSparseEncoder(SMOLLM, attention="full")
