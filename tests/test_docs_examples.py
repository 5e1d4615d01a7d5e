"""docs/examples/: the seeds' fox / canine / whale / car experiment runs and gives sane matrices."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import ROOT, SHARED
from tiny_sae import train_tiny_sae

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeds_similarity(tmp_path, capsys):
    seeds = _load("seeds_similarity")
    sae = train_tiny_sae(tmp_path, "embedding", n_latents=128, k=8)
    out = tmp_path / "heatmap.png"
    results = seeds.main(["--out", str(out), "--sae", str(sae), "--models", str(SHARED / "models"), "--top", "3"])
    assert set(results) == {"SPLADE (splade-tiny)", "SAE (MiniLM embedding)", *(label for label, _ in seeds.LLM_MODES)}
    for label, sim in results.items():
        assert sim.shape == (4, 4) and np.allclose(np.diag(sim), 1, atol=1e-5), label
        assert np.allclose(sim, sim.T, atol=1e-6) and (sim >= -1e-6).all(), label
    splade = results["SPLADE (splade-tiny)"]
    assert splade[0, 1] > splade[0, 3]  # fox is nearer canine than car
    printed = capsys.readouterr().out
    assert "top 3 dimensions of 'fox'" in printed and "SPLADE (splade-tiny): cosine" in printed
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert (ROOT / "docs" / "seeds-similarity.png").read_bytes()[:4] == b"\x89PNG"  # the committed heatmap
