"""Issue 10: every bad input gets a clear error (exit code 2 on the CLI) naming its culprit, and the
API behaves as sentence-transformers and Pyserini users expect. Real model and data, no mocks."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import zstandard

from conftest import ROOT, SCIFACT, SHARED, SPLADE_TINY
from sparseir.cli import main
from sparseir.corpus import CorpusError, load_corpus, load_queries
from sparseir.errors import SparseirError, UsageError
from sparseir.evaluate import EvaluationError, check_qrels, evaluate, parse_metrics

CLI_ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """The real command line in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "sparseir.cli", *map(str, args)], env=CLI_ENV, cwd=ROOT,
                          capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """40 SciFact documents with the document store, built through the CLI."""
    d = tmp_path_factory.mktemp("bad")
    corpus = d / "c.jsonl"
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as f:
        corpus.write_text("".join(next(f) for _ in range(40)), encoding="utf-8")
    assert main(["index", str(corpus), "--encoder", str(SPLADE_TINY), "--out", str(d / "ix")]) == 0
    return d / "ix"


# --- corpus -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad_id", ["null", '""', "[1, 2]", '"  "', "true", "1.5", '{"a": 1}'])
def test_jsonl_bad_ids_name_file_and_line(tmp_path, bad_id):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": "1", "text": "fine"}\n' + f'{{"_id": {bad_id}, "text": "x"}}\n')
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: id field '_id'"):
        list(load_corpus(p))


def test_integer_ids_are_kept_as_text(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"_id": 7, "text": "seven"}\n')
    assert [d.id for d in load_corpus(p)] == ["7"]


def test_tsv_bom_and_header(tmp_path):
    p = tmp_path / "c.tsv"
    p.write_bytes("\ufeff4983\tfirst\n5\tsecond\n".encode("utf-8"))
    assert [d.id for d in load_corpus(p)] == ["4983", "5"]
    p.write_text("id\ttext\n1\tone\n")
    assert [d.id for d in load_corpus(p)] == ["1"]  # detected
    p.write_text("docid\tbody\n1\tone\n")
    assert [d.id for d in load_corpus(p, tsv_header=False)] == ["docid", "1"]  # declared: no header
    p.write_text("a\tb\n1\tone\n")
    assert [d.id for d in load_corpus(p, tsv_header=True)] == ["1"]  # declared header
    p.write_bytes("\ufeffid\ttext\n1\tone\n".encode("utf-8"))
    assert [d.id for d in load_corpus(p)] == ["1"]  # BOM and header together


def test_non_utf8_names_file_and_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        list(load_corpus(p))
    t = tmp_path / "q.tsv"
    t.write_bytes(b"1\tok\n2\t\xff\n")
    with pytest.raises(CorpusError, match=r"q\.tsv:2: not valid UTF-8"):
        load_queries(t)


def test_compressed_corpora_and_document_contract(tmp_path):
    rows = [{"_id": "a", "title": "Vitamin D", "text": "and bone", "url": "u"}, {"_id": "b", "text": "plain"}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    (tmp_path / "c.tsv.gz").write_bytes(gzip.compress(b"a\tVitamin D and bone\nb\tplain\n"))
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    for spec in ("c.jsonl.gz", "c.jsonl.zst", "beir"):
        docs = list(load_corpus(tmp_path / spec))
        assert docs[0] == ("a", "Vitamin D and bone", "Vitamin D", {"url": "u"}), spec
        assert docs[1] == ("b", "plain", "", None)
        assert len(load_corpus(tmp_path / spec)) == 2
    assert [tuple(d[:2]) for d in load_corpus(tmp_path / "c.tsv.gz")] == [("a", "Vitamin D and bone"), ("b", "plain")]
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(text.encode())[:-12])
    with pytest.raises(CorpusError, match=r"bad\.jsonl\.gz(:\d+)?: cannot read"):
        list(load_corpus(tmp_path / "bad.jsonl.gz"))
    # a .zst cut inside a frame (here after whole lines, so no JSON error could give it away)
    zst = zstandard.ZstdCompressor()
    frames = zst.compress(text.encode()) + zst.compress(text.replace('"a"', '"c"').replace('"b"', '"d"').encode())
    (tmp_path / "two.jsonl.zst").write_bytes(frames)
    assert [d.id for d in load_corpus(tmp_path / "two.jsonl.zst")] == ["a", "b", "c", "d"]
    (tmp_path / "cut.jsonl.zst").write_bytes(frames[:-4])  # the last frame's checksum is missing
    with pytest.raises(CorpusError, match=r"cut\.jsonl\.zst(:\d+)?: cannot read \(compressed file ended"):
        list(load_corpus(tmp_path / "cut.jsonl.zst"))


def test_realtext_gz_corpus_loads():
    corpus = load_corpus(SHARED / "data" / "realtext" / "corpus.jsonl.gz")
    first = next(iter(corpus))
    assert first.id == "gcide-0-0" and first.title == "0" and first.text.startswith("0 A dictionary")
    assert len(corpus) == 366_372


# --- encoders -----------------------------------------------------------------------------------------

def test_a_string_is_one_text(splade_tiny):
    q = splade_tiny.encode_query("vitamin D")
    assert q.shape == (1, splade_tiny.dim)
    assert (q != splade_tiny.encode_query(["vitamin D"])).nnz == 0
    d = splade_tiny.encode_document("vitamin D")
    assert d.shape == (1, splade_tiny.dim)
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        splade_tiny.encode_query(["a", 3])


def test_decode_sparsity_and_per_call_max_active_dims(splade_tiny):
    x = splade_tiny.encode_document(["vitamin D and bone fractures", "cerebral white matter"])
    rows = splade_tiny.decode(x, top_k=3)
    assert len(rows) == 2 and all(len(r) == 3 and isinstance(r[0], tuple) for r in rows)
    one = splade_tiny.decode(x.toarray()[0], top_k=3)  # one vector: a list of (term, weight)
    assert one == rows[0] and isinstance(one[0][0], str)
    assert splade_tiny.decode(x[0]) == [splade_tiny.decode(x.toarray()[0])]  # a one-row matrix: a list of lists
    few = splade_tiny.encode_document(["vitamin D and bone fractures"], max_active_dims=4)
    assert few.nnz == 4 and splade_tiny.max_active_dims is None
    s = splade_tiny.sparsity(x)
    assert s["active_dims"] == x.nnz / 2 and s["sparsity_ratio"] == pytest.approx(1 - x.nnz / 2 / splade_tiny.dim)
    with pytest.raises(UsageError, match="max_active_dims"):
        splade_tiny.encode_query("q", max_active_dims=0)


@pytest.mark.parametrize("kw,option", [({"max_length": 0}, "--max-length"), ({"max_length": -5}, "--max-length"),
                                       ({"max_length": 100_000}, "--max-length"),
                                       ({"query_max_length": 0}, "--query-max-length"),
                                       ({"query_max_length": 513}, "--query-max-length")])
def test_max_length_range(kw, option):
    from sparseir.encoders import MLMSparseEncoder

    with pytest.raises(UsageError, match=f"{option} must be in 1..512"):
        MLMSparseEncoder(SPLADE_TINY, **kw)


def test_check_max_length_helper():
    from sparseir.encoders import SparseEncoder

    assert SparseEncoder._check_max_length(512, 512, "--max-length") == 512
    assert SparseEncoder._check_max_length(None, 512, "--max-length") is None
    with pytest.raises(UsageError, match=r"--x must be >= 1"):
        SparseEncoder._check_max_length(0, None, "--x")


def test_encoder_names_and_corrupt_config(tmp_path):
    import sparseir
    from sparseir.encoders import EncoderError, load_encoder

    assert sparseir.LLMSparseEncoder.__name__ == "LLMSparseEncoder"
    assert sparseir.SAESparseEncoder.__name__ == "SAESparseEncoder"
    (tmp_path / "config.json").write_text('{"architectures": \n')
    with pytest.raises(EncoderError, match=r"config\.json: not a valid model config"):
        load_encoder(str(tmp_path))
    with pytest.raises(EncoderError, match="unknown encoder family 'splade'"):
        load_encoder("splade:x")


def test_every_project_error_is_a_sparseir_error():
    from sparseir.bench.config import ConfigError
    from sparseir.encoders import EncoderError
    from sparseir.index import IndexFormatError
    from sparseir.search import EncoderMismatchError

    for cls in (CorpusError, EncoderError, EvaluationError, ConfigError, IndexFormatError, EncoderMismatchError):
        assert issubclass(cls, SparseirError), cls


# --- evaluation ---------------------------------------------------------------------------------------

def test_qrels_checks():
    with pytest.raises(EvaluationError, match="no relevance judgements"):
        check_qrels({}, ["1"])
    with pytest.raises(EvaluationError, match="none of its 1 query ids matches"):
        check_qrels({"9": {"d": 1}}, ["1"])
    with pytest.raises(EvaluationError, match="none of its 1 judged document ids is in the index"):
        check_qrels({"1": {"d": 1}}, ["1"], {"x"})
    with pytest.warns(UserWarning, match=r"1 of 2 judged queries .* 2 of 3 judgements"):
        cov = check_qrels({"1": {"d": 1, "e": 1}, "2": {"f": 1}}, ["1"], {"d"})
    assert cov == (2, 1, 3, 1)
    with pytest.raises(UsageError, match="unknown metric 'Bogus@3'.*nDCG"):
        parse_metrics(["nDCG@10", "Bogus@3"])
    assert evaluate({"1": {"1": 9.0, "d": 1.0}}, {"1": {"d": 1}}, ["RR@10"]) == {"RR@10": 1.0}  # BEIR: self hit ignored
    assert evaluate({"1": {"1": 9.0, "d": 1.0}}, {"1": {"d": 1}}, ["RR@10"], remove_query=False) == {"RR@10": 0.5}


# --- command line -------------------------------------------------------------------------------------

def test_cli_user_errors_exit_2_and_name_the_culprit(index, tmp_path, capsys):
    cases = [
        (["search", index, "q", "-k", "0"], "argument -k/--hits: must be >= 1, got 0"),
        (["search", index, "q", "--hits", "-5"], "argument -k/--hits: must be >= 1, got -5"),
        (["search", index, "--topics", SCIFACT / "queries.jsonl", "--threads", "0"], "--threads: must be >= 1"),
        (["eval", index, SCIFACT, "-k", "x"], "argument -k/--hits: expected an integer, got 'x'"),
        (["index", SCIFACT, "--encoder", SPLADE_TINY, "--max-length", "0"], "--max-length: must be >= 1"),
        (["encode", SCIFACT, "--encoder", SPLADE_TINY, "--out", tmp_path / "v", "--quantize-factor", "0"],
         "--quantize-factor: must be a finite number > 0"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        assert e.value.code == 2 and message in capsys.readouterr().err, args
    beyond = ["index", SCIFACT, "--encoder", SPLADE_TINY, "--max-length", "100000", "--out", tmp_path / "i"]
    assert main([str(a) for a in beyond]) == 2
    assert "--max-length must be in 1..512" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()
    assert main(["search", str(index)]) == 2
    assert "give either query texts or --topics FILE" in capsys.readouterr().err


def test_cli_bad_input_in_a_fresh_process(tmp_path):
    bad = tmp_path / "ids.jsonl"
    bad.write_text('{"_id": "1", "text": "a"}\n{"_id": null, "text": "b"}\n')
    r = cli("index", bad, "--encoder", SPLADE_TINY, "--out", tmp_path / "ix")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == \
        f"sparseir: error: {bad}:2: id field '_id' must be a string or an integer, got null"
    assert not (tmp_path / "ix").exists()


def test_eval_bad_qrels_metrics_and_convention(index, tmp_path, capsys):
    assert main(["eval", str(index), str(SCIFACT), "--metrics", "Bogus@3"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'Bogus@3'" in err and "nDCG" in err and "Traceback" not in err
    ds = tmp_path / "ds"
    (ds / "qrels").mkdir(parents=True)
    (ds / "queries.jsonl").write_text('{"_id": "q1", "text": "cerebral white matter"}\n')
    (ds / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    assert main(["eval", str(index), str(ds)]) == 2
    assert "no relevance judgements" in capsys.readouterr().err
    (ds / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nzz\t4983\t1\n")
    assert main(["eval", str(index), str(ds)]) == 2
    assert "none of its 1 query ids matches a query" in capsys.readouterr().err
    (ds / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tnot-a-doc\t1\n")
    assert main(["eval", str(index), str(ds)]) == 2
    assert "none of its 1 judged document ids is in the index" in capsys.readouterr().err
    (ds / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t4983\t1\nq1\tgone\t1\nq2\t4983\t1\n")
    assert main(["eval", str(index), str(ds)]) == 0
    out = capsys.readouterr()
    assert "1 of 2 judged queries have no query text and 1 of 3 judgements" in out.err
    assert "convention: BEIR" in out.out and "--keep-query" in out.out
    assert main(["eval", str(index), str(ds), "--keep-query"]) == 0
    assert "convention: as retrieved" in capsys.readouterr().out


def test_search_table_json_and_topics_runs(index, tmp_path, capsys):
    assert main(["search", str(index), "cerebral white matter", "-k", "2"]) == 0
    table = capsys.readouterr().out
    assert "4983" in table and "Microstructural development" in table  # title and snippet from the store
    assert main(["search", str(index), "cerebral white matter", "-k", "2", "--json"]) == 0
    (res,) = json.loads(capsys.readouterr().out)  # one query: still a list
    assert res["query"] == "cerebral white matter" and res["hits"][0]["title"].startswith("Microstructural")
    topics = tmp_path / "topics.tsv"
    topics.write_text("qid\tquery\n4983\tcerebral white matter development\n2\tvitamin D\n")
    runs = {}
    for fmt in ("trec", "msmarco", "jsonl"):
        out = tmp_path / f"run.{fmt}"
        assert main(["search", str(index), "--topics", str(topics), "--output", str(out), "--hits", "5",
                     "--format", fmt, "--run-tag", "TAG", "--threads", "1"]) == 0
        runs[fmt] = out.read_text().splitlines()
    assert len(runs["trec"]) == 10 and runs["trec"][0].split()[:4] == ["4983", "Q0", "4983", "1"]
    assert runs["trec"][0].endswith(" TAG")
    assert runs["msmarco"][0].split("\t") == ["4983", "4983", "1"]
    assert [json.loads(line)["query_id"] for line in runs["jsonl"]] == ["4983", "2"]
    out = tmp_path / "rq.trec"
    assert main(["search", str(index), "--topics", str(topics), "--output", str(out), "--hits", "5",
                 "--remove-query"]) == 0
    rows = [line.split() for line in out.read_text().splitlines()]
    assert len(rows) == 10 and not any(r[0] == r[2] for r in rows)


def test_main_lets_bugs_show_their_traceback(monkeypatch):
    import sparseir.cli as cli_module

    def buggy(args):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(cli_module, "cmd_info", buggy)
    with pytest.raises(KeyError):
        cli_module.main(["info", "x"])


LAZY_CHECK = """
import io, contextlib, sys
from sparseir.cli import main
for argv in {argvs!r}:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
heavy = sorted(m for m in ("torch", "transformers", "numba") if m in sys.modules)
print(",".join(heavy))
"""


def test_help_and_info_import_neither_torch_nor_transformers(index):
    from sparseir.cli import build_parser

    commands = [a for a in build_parser()._subparsers._group_actions[0].choices]
    argvs = [["--help"]] + [[c, "--help"] for c in commands] + [["info", str(index)]]
    r = subprocess.run([sys.executable, "-c", LAZY_CHECK.format(argvs=argvs)], env=CLI_ENV, cwd=ROOT,
                       capture_output=True, text=True, check=True)
    heavy = r.stdout.strip().split(",")
    assert "torch" not in heavy and "transformers" not in heavy, r.stdout


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signals_exit_cleanly_and_leave_nothing(tmp_path, sig, code, word):
    out = tmp_path / "out" / "ix"
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "sparseir.cli", "index", str(SHARED / "data/realtext/corpus.jsonl.gz"),
                             "--encoder", str(SPLADE_TINY), "--out", str(out), "--chunk-size", "64"],
                            env=CLI_ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell's background job inherits SIGINT ignored, and Python keeps it so
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not any(out.parent.iterdir()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)  # wait until the build has written its temporary folder
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code
    assert err.strip().splitlines()[-1] == f"sparseir: {word}" and "Traceback" not in err
    assert list(out.parent.iterdir()) == []
