"""SAE health: FVU, L0, dead and dense latents and the log10 frequency histogram, kept with the SAE and the index."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sparseir.cli import main
from sparseir.corpus import Document
from sparseir.index import IndexWriter, open_index

from tiny_sae import SENTENCES, train_tiny_sae

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    return train_tiny_sae(tmp_path_factory.mktemp("health"), "embedding", n_latents=256)


def test_diagnostics_hold_the_health_figures(sae):
    diag = json.loads((sae / "diagnostics.json").read_text())
    freq = np.asarray(diag["freq"])
    assert 0 <= diag["fvu"] < 1 and 0 < diag["l0"] <= 4
    assert diag["n_dead"] == int((freq == 0).sum()) > 0  # 256 latents, 12 rows: many never fire
    assert diag["dead_frac"] == pytest.approx(diag["n_dead"] / 256)
    assert diag["dead_window_rows"] == diag["n_rows"] == 12 and diag["train_dead_after"] > 0
    assert diag["dense_frac"] == pytest.approx(float((freq > diag["dense_threshold"]).mean()))
    hist = diag["freq_histogram"]
    assert hist["dead"] == diag["n_dead"] and sum(hist["counts"]) + hist["dead"] == 256
    assert len(hist["log10_edges"]) == len(hist["counts"]) + 1


def test_index_carries_health_and_info_prints_it(sae, tmp_path, capsys):
    from sparseir.encoders.sae import SAESparseEncoder

    path = tmp_path / "ix"
    with IndexWriter(path, SAESparseEncoder(sae)) as w:
        w.add([Document(f"s{i}", t) for i, t in enumerate(SENTENCES)])
    health = open_index(path).settings["encoder"]["health"]
    diag = json.loads((sae / "diagnostics.json").read_text())
    assert "freq" not in health and health == {k: v for k, v in diag.items() if k != "freq"}
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"dead {diag['dead_frac']:.2%}" in out and f"FVU {diag['fvu']:.4f}" in out
    assert "never active over 12 rows" in out and "log10 activation frequency" in out


def test_sae_inspect_health_and_plot(sae, tmp_path, capsys):
    png = tmp_path / "hist.png"
    capsys.readouterr()
    assert main(["sae", "inspect", str(sae), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "SAE health" in out and "dead" in out
    image = Image.open(png).convert("RGB")
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20)}
    assert (0xD6, 0x27, 0x28) in colours, "no dead-latent bar (tab:red)"
    assert main(["sae", "inspect", str(sae), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_dead"] > 0
    assert main(["sae", "inspect", str(tmp_path), "--plot", str(png)]) == 2
    assert "not an SAE checkpoint" in capsys.readouterr().err
    assert main(["sae", "inspect", str(sae), "9999"]) == 2
