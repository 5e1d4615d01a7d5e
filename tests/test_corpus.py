import pytest

from sparseir.corpus import CorpusError, load_corpus, load_qrels, load_queries
from conftest import SCIFACT


def test_beir_folder_streams_title_and_text():
    corpus = load_corpus(SCIFACT)
    first = next(iter(corpus))
    assert first.id == "4983"
    assert first.text.startswith("Microstructural development of human newborn cerebral white matter")
    assert len(corpus) == 5183
    assert len(load_queries(SCIFACT)) == 300
    qrels = load_qrels(SCIFACT)
    assert sum(len(v) for v in qrels.values()) == 339


def test_jsonl_fields_and_tsv(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"pid": 7, "body": "hello", "head": "T"}\n\n{"pid": 8, "body": "world"}\n')
    docs = list(load_corpus(p, id_field="pid", text_fields=["head", "body"]))
    assert [d[:3] for d in docs] == [("7", "T hello", ""), ("8", "world", "")]
    t = tmp_path / "c.tsv"
    t.write_text("a\tfirst doc\nb\tsecond\n")
    assert [d.id for d in load_corpus(t)] == ["a", "b"]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: invalid JSON"):
        list(load_corpus(p))
    p.write_text('{"_id": "1", "text": "ok"}\n{"text": "no id"}\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: missing id field '_id'"):
        list(load_corpus(p))


def test_missing_inputs(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        load_corpus(tmp_path / "nope.jsonl")
    with pytest.raises(CorpusError, match="no corpus.jsonl"):
        load_corpus(tmp_path)
    bad = tmp_path / "x.tsv"
    bad.write_text("no tab here\n")
    with pytest.raises(CorpusError, match=r"x\.tsv:1"):
        list(load_corpus(bad))


def test_unknown_irds_id_is_a_clear_error():
    with pytest.raises(CorpusError, match="unknown ir_datasets id"):
        list(load_corpus("irds:no-such/dataset"))
