"""Shared fixtures: real models and data from ../shared, never the network."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCIFACT = SHARED / "data" / "beir" / "scifact"
SPLADE_TINY = SHARED / "models" / "splade-tiny"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
SMOLLM = SHARED / "models" / "smollm2-135m-instruct-gguf"


def make_beir_slice(out: Path, n_docs: int) -> Path:
    """A BEIR folder with the first ``n_docs`` SciFact documents and the test queries judged on them."""
    out.mkdir(parents=True, exist_ok=True)
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as f:
        lines = [next(f) for _ in range(n_docs)]
    (out / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")
    ids = {json.loads(line)["_id"] for line in lines}
    (out / "qrels").mkdir(exist_ok=True)
    rows = (SCIFACT / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    kept = [r for r in rows[1:] if r.split("\t")[1] in ids]
    (out / "qrels" / "test.tsv").write_text("\n".join([rows[0], *kept]) + "\n", encoding="utf-8")
    qids = {r.split("\t")[0] for r in kept}
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as f:
        queries = [line for line in f if json.loads(line)["_id"] in qids]
    (out / "queries.jsonl").write_text("".join(queries), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def scifact_slice(tmp_path_factory) -> Path:
    """300 SciFact documents with their judged test queries, as a BEIR folder."""
    return make_beir_slice(tmp_path_factory.mktemp("scifact") / "scifact-300", 300)


@pytest.fixture(scope="session")
def splade_tiny():
    from sparseir.encoders import MLMSparseEncoder

    return MLMSparseEncoder(str(SPLADE_TINY))


@pytest.fixture
def one_torch_thread():
    """Tiny models run faster (and steadier on a busy machine) on one thread."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
