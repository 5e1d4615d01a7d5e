"""`sparseir inspect`: one dimension's posting list, frequency and weights, equal to a brute-force reading."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from sparseir.cli import main
from sparseir.corpus import Document
from sparseir.index import IndexWriter
from sparseir.search.dimensions import UnknownDimensionError, inspect_dimension

from conftest import ROOT
from tiny_sae import SENTENCES, train_tiny_sae

TERMS = ["alpha", "beta", "gamma", "delta"]


@pytest.fixture(scope="module")
def vectors_index(tmp_path_factory):
    """Two segments of random vectors with titles; one document deleted."""
    rng = np.random.default_rng(0)
    m = sp.random(60, len(TERMS), density=0.5, random_state=rng, format="csr", dtype=np.float32)
    docs = [Document(f"d{i}", f"text {i}", f"title {i}") for i in range(60)]
    path = tmp_path_factory.mktemp("inspect") / "ix"
    with IndexWriter(path, terms=TERMS, quantize="float32") as w:
        w.add(docs[:30], m[:30])
    with IndexWriter(path) as w:
        w.add(docs[30:], m[30:])
        w.delete(["d3"])
    return path, m


def test_report_equals_brute_force(vectors_index):
    path, m = vectors_index
    for dim, term in enumerate(TERMS):
        col = m[:, dim].toarray().ravel()
        col[3] = 0  # deleted
        live = np.nonzero(col)[0]
        report = inspect_dimension(path, term, top=5)
        assert report["dim"] == dim and report["df"] == len(live) and report["n_docs"] == 59
        expected = sorted(live, key=lambda i: (-col[i], i))[:5]
        assert [r["doc_id"] for r in report["top"]] == [f"d{i}" for i in expected]
        assert [r["title"] for r in report["top"]] == [f"title {i}" for i in expected]
        assert np.allclose([r["weight"] for r in report["top"]], col[expected])
        assert report["weights"]["quantiles"]["1.0"] == pytest.approx(col.max())
        assert sum(report["weights"]["histogram"]["counts"]) == len(live)


def test_unknown_term_and_bad_options(vectors_index, capsys):
    path, _ = vectors_index
    with pytest.raises(UnknownDimensionError, match="close: alpha"):
        inspect_dimension(path, "alpah")
    capsys.readouterr()
    assert main(["inspect", str(path), "nosuchterm"]) == 2
    assert "no dimension named 'nosuchterm'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["inspect", str(path), "alpha", "--top", "0"])
    assert e.value.code == 2
    assert main(["inspect", str(path / "missing"), "alpha"]) == 2


def test_cli_is_fast_to_start_without_spans(vectors_index):
    path, _ = vectors_index
    code = ("import sys; from sparseir.cli import main; rc = main(['inspect', sys.argv[1], 'beta', '--json']); "
            "assert rc == 0; assert not {'torch', 'transformers'} & set(sys.modules), 'model libraries imported'")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["term"] == "beta"


def test_spans_point_at_source_words(splade_tiny, tmp_path, capsys):
    path = tmp_path / "ix"
    with IndexWriter(path, splade_tiny) as w:
        w.add([Document(f"s{i}", t) for i, t in enumerate(SENTENCES)])
    capsys.readouterr()
    assert main(["inspect", str(path), "whale", "--spans", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    top = report["top"][0]
    assert top["doc_id"] == "s1" and top["sources"][0]["token"] == "whale" and "[[whale]]" in top["context"]
    assert main(["inspect", str(path), "whale", "--spans"]) == 0
    assert "[[whale]]" in capsys.readouterr().out


def test_sae_feature_label_and_examples(tmp_path, capsys):
    from sparseir.encoders.sae import SAESparseEncoder

    sae = train_tiny_sae(tmp_path, "embedding")
    enc = SAESparseEncoder(sae)
    path = tmp_path / "ix"
    with IndexWriter(path, enc, quantize="float32") as w:
        w.add([Document(f"s{i}", t) for i, t in enumerate(SENTENCES)])
    labels = json.loads((sae / "labels.json").read_text())["labels"]
    vec = enc.encode_document(SENTENCES[1])
    feature = int(vec.indices[np.argmax(vec.data)])
    for name in (f"f{feature}", str(feature), labels[feature]):
        report = inspect_dimension(path, name)
        assert report["term"] == labels[feature] and report["sae"]["label"] == labels[feature]
        assert report["sae"]["examples"] and not report["sae"]["dead"]
        assert "s1" in [r["doc_id"] for r in report["top"]]
    with pytest.raises(UnknownDimensionError, match="out of range"):
        inspect_dimension(path, "f64")
    capsys.readouterr()
    assert main(["inspect", str(path), f"f{feature}"]) == 0
    out = capsys.readouterr().out
    assert f"SAE feature          {labels[feature]}" in out and "training frequency" in out


def test_service_and_page_inspect(splade_tiny, tmp_path):
    import httpx

    from sparseir.serve.process import ServerProcess

    from serve_browser import CHROMIUM, chromium

    path = tmp_path / "ix"
    with IndexWriter(path, splade_tiny) as w:
        w.add([Document(f"s{i}", t, f"title {i}") for i, t in enumerate(SENTENCES)])
    with ServerProcess(path, "--read-only") as server:
        r = httpx.get(f"{server.url}/inspect", params={"term": "whale", "spans": "true"}, timeout=60)
        assert r.status_code == 200
        report = r.json()
        assert report == {**inspect_dimension(path, "whale"), "top": report["top"]}
        assert report["top"][0]["doc_id"] == "s1" and "[[whale]]" in report["top"][0]["context"]
        r = httpx.get(f"{server.url}/inspect", params={"term": "nosuchterm"}, timeout=60)
        assert r.status_code == 404 and "no dimension named" in r.json()["error"]
        assert httpx.get(f"{server.url}/inspect", params={"term": "whale", "top": 0}, timeout=60).status_code == 422
        if CHROMIUM is None:
            pytest.skip("headless Chromium is not installed; the page view is not tested here")
        dom = chromium("--dump-dom", f"{server.url}/?inspect=whale").stdout
        assert 'data-ready="1"' in dom and "<mark>whale</mark>" in dom and "title 1" in dom, dom[-3000:]
