"""Metrics on a fixed run whose values were worked out by hand (trec_eval gains: rel, discount log2(rank+1))."""

import math

import pytest

from sparseir.evaluate import evaluate

# q1: two relevant (d1 grade 1, d2 grade 2); q2: three relevant and a self-hit ranked first;
# q3: judged but missing from the run (scores 0); q4: only non-relevant judgements (not a judged query).
QRELS = {
    "q1": {"d1": 1, "d2": 2, "d9": 0},
    "q2": {"d5": 1, "d6": 1, "d7": 1},
    "q3": {"d1": 1},
    "q4": {"d2": 0},
}
RUN = {
    "q1": {"d3": 3.0, "d2": 2.0, "d1": 1.0},
    "q2": {"q2": 9.0, "d5": 5.0, "d8": 4.0},
    "q4": {"d2": 1.0},
}

# q1: ranks d3 (0), d2 (2), d1 (1). DCG = 2/log2(3) + 1/log2(4); ideal = 2/log2(2) + 1/log2(3).
Q1_NDCG = (2 / math.log2(3) + 1 / 2) / (2 + 1 / math.log2(3))
# q2 without the self-hit: d5 (1) at rank 1; ideal has three grade-1 documents.
Q2_NDCG = 1 / (1 + 1 / math.log2(3) + 1 / 2)
# q2 keeping the self-hit: d5 at rank 2.
Q2_NDCG_KEPT = (1 / math.log2(3)) / (1 + 1 / math.log2(3) + 1 / 2)


def test_hand_computed_values_with_query_removed():
    got = evaluate(RUN, QRELS)
    assert got["nDCG@10"] == pytest.approx((Q1_NDCG + Q2_NDCG + 0) / 3, abs=1e-6)
    assert got["RR@10"] == pytest.approx((1 / 2 + 1 + 0) / 3, abs=1e-9)
    assert got["R@100"] == pytest.approx((2 / 2 + 1 / 3 + 0) / 3, abs=1e-9)


def test_hand_computed_values_keeping_the_query():
    got = evaluate(RUN, QRELS, remove_query=False)
    assert got["nDCG@10"] == pytest.approx((Q1_NDCG + Q2_NDCG_KEPT + 0) / 3, abs=1e-6)
    assert got["RR@10"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3, abs=1e-9)


def test_cutoffs_apply():
    # q1's only relevant documents sit below rank 1 -> RR@1 = 0; q2's (self-hit removed) at rank 1.
    got = evaluate(RUN, QRELS, metrics=["RR@1", "R@1"])
    assert got["RR@1"] == pytest.approx((0 + 1 + 0) / 3)
    assert got["R@1"] == pytest.approx((0 + 1 / 3 + 0) / 3)
