"""End to end on a SciFact slice with MiniLM: collect -> train -> index -> search -> explain by feature label."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sparseir.cli import main

from conftest import MINILM, SCIFACT
LABEL = re.compile(r"^f\d+:\S+$")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scifact_slice(tmp_path_factory) -> Path:
    """The first 20 SciFact documents as a JSONL corpus."""
    path = tmp_path_factory.mktemp("scifact") / "corpus.jsonl"
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as f:
        path.write_text("".join(next(f) for _ in range(20)), encoding="utf-8")
    return path


def _first_title(corpus: Path) -> tuple[str, str]:
    doc = json.loads(corpus.read_text(encoding="utf-8").splitlines()[7])
    return doc["_id"], doc["title"]


@pytest.mark.parametrize("source", ["embedding", pytest.param("hidden", marks=pytest.mark.slow)])
def test_collect_train_index_search_explain(tmp_path, scifact_slice, source, capsys):
    acts, sae, index = tmp_path / "acts", tmp_path / "sae", tmp_path / "index"
    extra = ["--sentences"] if source == "embedding" else ["--layer", "4", "--max-length", "96"]
    assert main(["sae", "collect", str(scifact_slice), str(acts), "--model", str(MINILM), "--source", source,
                 *extra]) == 0
    assert main(["sae", "train", str(acts), str(sae), "--n-latents", "256", "-k", "16", "--batch-size", "64",
                 "--epochs", "30" if source == "embedding" else "2", "--dead-after", "2000"]) == 0
    for name in ("sae_config.json", "sae.safetensors", "labels.json", "diagnostics.json", "freq_hist.png"):
        assert (sae / name).is_file(), name
    diag = json.loads((sae / "diagnostics.json").read_text())
    assert diag["fvu"] < 1.0 and diag["l0"] > 0 and 0 <= diag["dead_frac"] < 1

    assert main(["index", str(scifact_slice), "--encoder", f"sae:{sae}", "--out", str(index),
                 "--quantize", "float32"]) == 0
    doc_id, title = _first_title(scifact_slice)
    capsys.readouterr()
    assert main(["search", str(index), title, "-k", "3", "--explain", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    hits = out[0]["hits"] if isinstance(out, list) else out["hits"]
    assert doc_id in [h["doc_id"] for h in hits]
    terms = [c["term"] for h in hits for c in h["explain"]]
    assert terms and all(LABEL.match(t) for t in terms)

    feature = int(terms[0].split(":")[0][1:])
    assert main(["sae", "inspect", str(sae), str(feature), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["label"] == terms[0] and rep["examples"] and not rep["dead"]
