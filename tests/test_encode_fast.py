"""The int8 / bf16 screens of max pooling are exact: same support as the textbook formula, values within 1e-5.

Real documents (SciFact and realtext slices), a property check of the bound on hostile features, and
documents whose logits sit right at the screen's boundary.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sparseir.corpus import load_corpus
from sparseir.encoders import EncoderError, MLMSparseEncoder
from sparseir.encoders.mlm import length_groups, naive_encode, pooled_mlm_weights
from sparseir.encoders.pooling import SCREENS, VocabHead, _bf16_upper, _int8_upper
from conftest import SCIFACT, SHARED, SPLADE_TINY

REALTEXT = SHARED / "data" / "realtext" / "corpus.jsonl.gz"
UPPER = {"int8": _int8_upper, "bf16": _bf16_upper}


@pytest.fixture(scope="module")
def slices() -> dict[str, list[str]]:
    take = lambda src, n: [d.text for _, d in zip(range(n), load_corpus(src))]  # noqa: E731
    return {"scifact": take(SCIFACT, 48), "realtext": take(REALTEXT, 64)}


@pytest.fixture(scope="module")
def encoders() -> dict[str, MLMSparseEncoder]:
    return {screen: MLMSparseEncoder(str(SPLADE_TINY), screen=screen) for screen in (*SCREENS, False)}


@pytest.mark.parametrize("corpus", ["scifact", "realtext"])
@pytest.mark.parametrize("screen", SCREENS)
def test_screened_encoding_equals_textbook_formula(encoders, slices, corpus, screen, one_torch_thread):
    texts = slices[corpus]
    fast = encoders[screen].encode_document(texts)
    naive = naive_encode(encoders[screen], texts).numpy()
    assert np.array_equal(fast.toarray() > 0, naive > 0)  # the same support, entry for entry
    np.testing.assert_allclose(fast.toarray(), naive, rtol=0, atol=1e-5)
    unscreened = encoders[False].encode_document(texts)
    assert np.array_equal(fast.indices, unscreened.indices) and np.array_equal(fast.indptr, unscreened.indptr)


@pytest.mark.parametrize("screen", SCREENS)
def test_bound_holds_on_hostile_features(encoders, screen):
    """``upper >= max_t exact`` for every vocabulary entry: outliers that blow up the int8 scale, tiny
    and huge magnitudes, a single row, constant rows."""
    head = encoders[screen]._heads[id(encoders[screen].model)]
    gen = torch.Generator().manual_seed(0)
    cases = [torch.randn(40, 128, generator=gen) * s for s in (1e-3, 1.0, 30.0)]
    spiky = torch.randn(17, 128, generator=gen)
    spiky[3, 5] = 500.0  # one outlier sets the scale of the whole document
    cases += [spiky, torch.randn(1, 128, generator=gen) * 20, torch.full((5, 128), 3.0), torch.zeros(3, 128)]
    for rows in cases:  # one document at a time, then all in one call (a shared int8 scale), with an empty one
        exact = (rows.double() @ head.weight.double().T + head.bias.double()).amax(0)
        upper = UPPER[screen](rows, [(0, len(rows))], head)[0].double()
        assert (upper >= exact).all(), (screen, (exact - upper).max().item())
    bounds = np.cumsum([0, *(len(rows) for rows in cases)]).tolist()
    spans = [(bounds[0], bounds[0]), *zip(bounds[:-1], bounds[1:])]
    upper = UPPER[screen](torch.cat(cases), spans, head).double()
    for i, rows in enumerate(cases):
        exact = (rows.double() @ head.weight.double().T + head.bias.double()).amax(0)
        assert (upper[i + 1] >= exact).all(), (screen, i, (exact - upper[i + 1]).max().item())


def _boundary_head(head: VocabHead, rows: torch.Tensor, offsets: dict[int, float]) -> VocabHead:
    """``head`` with biases moved so that the exact max logit of entry ``v`` over ``rows`` is ``offsets[v]``."""
    decoder = copy.deepcopy(head.decoder)
    exact = (rows @ head.weight.T).amax(0)
    with torch.no_grad():
        for v, delta in offsets.items():
            decoder.bias[v] = delta - exact[v]
    return VocabHead(head.transform, decoder)


@pytest.mark.parametrize("screen", SCREENS)
def test_logits_at_the_screen_boundary(encoders, slices, screen):
    """Entries whose exact max logit is +1e-3 survive (log1p(1e-3) is there), those at -1e-3 stay zero;
    the margins of the bound, not luck, keep the support exact."""
    enc = encoders[screen]
    model, head = enc.model, enc._heads[id(enc.model)]
    batch = enc.tokenizer(slices["realtext"][:1], truncation=True, max_length=256, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.inference_mode():
        rows = head.transform(model.base_model(input_ids=ids, attention_mask=mask)[0][0]).float()
        entries = torch.randperm(head.weight.shape[0], generator=torch.Generator().manual_seed(1))[:400].tolist()
        offsets = {v: (1e-3 if i % 2 else -1e-3) for i, v in enumerate(entries)}
        edge = _boundary_head(head, rows, offsets)
        exact = (rows @ edge.weight.T + edge.bias).amax(0)
        screened = pooled_mlm_weights(model, ids, mask, "max", enc.max_chunk_elements, edge, screen=screen)[0]
        reference = torch.log1p(torch.relu(exact))
    up = [v for v, d in offsets.items() if d > 0]
    down = [v for v, d in offsets.items() if d < 0]
    assert (screened[up] > 0).all() and (screened[down] == 0).all()
    torch.testing.assert_close(screened, reference, rtol=0, atol=1e-5)
    assert torch.equal(screened > 0, reference > 0)


def test_screen_option_is_validated():
    with pytest.raises(EncoderError, match="screen must be one of"):
        MLMSparseEncoder(str(SPLADE_TINY), screen="int4")


def test_length_groups_cover_the_batch_in_order():
    lengths = [256, 250, 240, 120, 118, 60, 59, 58, 3, 2]
    groups = length_groups(lengths, waste=0.1, min_tokens=200)
    assert [i for g in groups for i in range(len(lengths))[g]] == list(range(len(lengths)))
    assert len(groups) > 1 and length_groups([]) == []
    for g in groups[:-1]:  # every closed group reached min_tokens
        assert sum(lengths[g]) >= 200
