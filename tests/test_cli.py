import json
import subprocess
import sys
from pathlib import Path

import pytest

from sparseir.cli import main
from conftest import SPLADE_TINY


@pytest.fixture(scope="module")
def built(scifact_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ix"
    assert main(["index", str(scifact_slice), "--encoder", str(SPLADE_TINY), "--out", str(out),
                 "--chunk-size", "128"]) == 0
    return out


def test_index_search_explain(built, capsys):
    capsys.readouterr()
    assert main(["search", str(built), "cerebral white matter development in newborns", "-k", "3", "--explain",
                 "--json"]) == 0
    (res,) = json.loads(capsys.readouterr().out)  # a list, one entry per query
    assert len(res["hits"]) == 3 and res["hits"][0]["doc_id"] == "4983"
    top = res["hits"][0]
    assert sum(c["product"] for c in top["explain"]) == pytest.approx(top["score"], rel=1e-4)
    assert main(["search", str(built), "cerebral white matter development in newborns", "-k", "3", "--json",
                 "--approx", "--query-cut", "4"]) == 0
    (approx,) = json.loads(capsys.readouterr().out)
    assert approx["hits"][0]["doc_id"] == "4983"
    assert approx["hits"][0]["score"] == pytest.approx(top["score"], rel=1e-6)  # candidates re-scored exactly
    assert main(["search", str(built), "vitamin D and bone fractures", "-k", "2", "--explain"]) == 0
    table = capsys.readouterr().out
    assert "rank" in table and " x " in table


def test_eval_and_info(built, scifact_slice, capsys, tmp_path):
    capsys.readouterr()
    run = tmp_path / "run.trec"
    assert main(["eval", str(built), str(scifact_slice), "--json", "--run-out", str(run)]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) >= {"nDCG@10", "R@100", "RR@10", "convention"}
    assert 0.3 < scores["nDCG@10"] <= 1.0  # 300 documents: an easy slice
    assert run.read_text().split("\n", 1)[0].split()[1] == "Q0"
    assert main(["info", str(built)]) == 0
    out = capsys.readouterr().out
    assert "n_postings" in out and "segments" in out


def test_encode_writes_json_vector_collection(scifact_slice, tmp_path):
    out = tmp_path / "vectors.jsonl"
    small = tmp_path / "small.tsv"
    small.write_text("a\tvitamin D and bone fractures\nb\t\n")
    assert main(["encode", str(small), "--encoder", str(SPLADE_TINY), "--out", str(out),
                 "--quantize-factor", "100"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["id"] for d in lines] == ["a", "b"]
    assert lines[1]["vector"] == {} and all(isinstance(w, int) for w in lines[0]["vector"].values())
    assert "vitamin" in lines[0]["vector"]


def test_bad_input_exits_2_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "text": "fine"}\nnot json\n')
    assert main(["index", str(bad), "--encoder", str(SPLADE_TINY), "--out", str(tmp_path / "ix")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert not (tmp_path / "ix").exists() and [p.name for p in tmp_path.iterdir()] == ["bad.jsonl"]
    dup = tmp_path / "dup.tsv"
    dup.write_text("x\tone\nx\ttwo\n")
    assert main(["index", str(dup), "--encoder", str(SPLADE_TINY), "--out", str(tmp_path / "ix2")]) == 2
    assert "duplicate document id 'x'" in capsys.readouterr().err
    assert main(["search", str(tmp_path), "q"]) == 2
    assert "not a sparseir index" in capsys.readouterr().err
    assert main(["index", str(dup), "--encoder", str(tmp_path / "nomodel"), "--out", str(tmp_path / "i3")]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_help_is_complete():
    exe = Path(sys.executable).with_name("sparseir")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("index", "search", "eval", "encode", "info"):
        assert cmd in out
    out = subprocess.run([str(exe), "index", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--encoder" in out and "--quantize" in out and "irds:" in out
