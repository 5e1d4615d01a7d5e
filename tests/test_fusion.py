"""Reciprocal rank fusion and convex combination, against values worked out by hand."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparseir.fusion import convex, normalize, rrf

A = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
B = {"q": {"b": 0.9, "d": 0.5}}


def test_rrf_by_hand():
    fused = rrf([A, B], k=60)["q"]
    assert fused == pytest.approx({"b": 1 / 62 + 1 / 61, "a": 1 / 61, "d": 1 / 62, "c": 1 / 63})
    assert list(fused) == ["b", "a", "d", "c"]


def test_rrf_weights_and_depth():
    fused = rrf([A, B], k=0, weights=[1.0, 3.0], depth=2)["q"]
    # a: 1/1; b: 1/2 + 3/1; c: 1/3; d: 3/2
    assert fused == pytest.approx({"b": 3.5, "d": 1.5})


def test_rrf_union_of_queries():
    fused = rrf([A, {"other": {"x": 1.0}}])
    assert set(fused) == {"q", "other"}
    assert fused["other"] == pytest.approx({"x": 1 / 61})


def test_convex_minmax_by_hand():
    fused = convex([A, B], [0.25, 0.75])["q"]
    # A normalised: a 1, b 0.5, c 0; B: b 1, d 0. Missing documents get 0.
    assert fused == pytest.approx({"b": 0.25 * 0.5 + 0.75 * 1, "a": 0.25, "d": 0.0, "c": 0.0})
    assert list(fused)[:2] == ["b", "a"]


def test_convex_weights_are_normalised_and_default_to_equal():
    assert convex([A, B]) == convex([A, B], [1, 1]) == convex([A, B], [0.5, 0.5])
    assert convex([A, B], [1, 3]) == convex([A, B], [0.25, 0.75])


def test_convex_zscore_missing_document_gets_the_run_minimum():
    fused = convex([A, B], [0.5, 0.5], norm="zscore")["q"]
    sd = math.sqrt(2 / 3)
    za = {"a": 1 / sd, "b": 0.0, "c": -1 / sd}
    zb = {"b": 1.0, "d": -1.0}
    assert fused["c"] == pytest.approx(0.5 * za["c"] + 0.5 * zb["d"])
    assert fused["a"] == pytest.approx(0.5 * za["a"] + 0.5 * zb["d"])
    assert fused["d"] == pytest.approx(0.5 * za["c"] + 0.5 * zb["d"])


def test_normalize_constant_scores():
    assert normalize({"x": 2.0, "y": 2.0}) == {"x": 1.0, "y": 1.0}
    assert normalize({"x": 2.0, "y": 2.0}, "zscore") == {"x": 0.0, "y": 0.0}
    assert normalize({"x": 2.0}, "none") == {"x": 2.0}


@pytest.mark.parametrize("call", [
    lambda: rrf([A]),
    lambda: rrf([A, B], k=-1),
    lambda: rrf([A, B], weights=[1.0]),
    lambda: convex([A, B], [1.0, -1.0]),
    lambda: convex([A, B], [0.0, 0.0]),
    lambda: convex([A, B], norm="bogus"),
])
def test_bad_input_is_rejected(call):
    with pytest.raises(ValueError):
        call()


scores = st.dictionaries(st.sampled_from("abcdefgh"), st.floats(-100, 100, allow_nan=False), min_size=1)


int_scores = st.dictionaries(st.sampled_from("abcdefgh"), st.integers(-1000, 1000).map(float), min_size=1)


@given(int_scores, int_scores)
def test_rrf_ignores_monotone_rescaling(x, y):
    """RRF sees only ranks, so an increasing transform of one run's scores changes nothing
    (integer scores: the transform is exact, so it creates no ties)."""
    scaled = {d: 2 * s + 7 for d, s in x.items()}
    assert rrf([{"q": x}, {"q": y}]) == rrf([{"q": scaled}, {"q": y}])


@given(scores, scores)
def test_fused_runs_are_sorted_and_cover_the_union(x, y):
    for fused in (rrf([{"q": x}, {"q": y}]), convex([{"q": x}, {"q": y}])):
        values = list(fused["q"].values())
        assert values == sorted(values, reverse=True)
        assert set(fused["q"]) == set(x) | set(y)
