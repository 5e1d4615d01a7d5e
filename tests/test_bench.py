"""The benchmark harness: configuration, cache keys, reports, and a real end-to-end run on a SciFact slice."""

import json
import textwrap
from pathlib import Path

import pytest

from bench_slice import make_scifact_slice
from conftest import MINILM, SPLADE_TINY as SPLADE
from sparseir.bench.cache import Cache, dataset_fingerprint, digest, model_fingerprint
from sparseir.bench.config import BenchConfig, ConfigError, SystemSpec, load_config, systems_from_flags
from sparseir.bench.report import summary, to_markdown, write_reports

REPO = Path(__file__).resolve().parents[1]


# --- configuration --------------------------------------------------------------------------------

def test_committed_scifact_config_loads():
    cfg = load_config(REPO / "bench" / "configs" / "scifact.toml")
    kinds = {s.kind for s in cfg.systems}
    assert kinds == {"bm25", "dense", "sparseir", "lucene-impact", "fusion"}
    fused = {tuple(s.depends_on) for s in cfg.systems if s.kind == "fusion"}
    assert ("splade", "bm25") in fused and ("splade", "dense") in fused
    assert cfg.datasets == (str(Path("../shared/data/beir/scifact")),)


def test_flags_to_systems():
    specs = systems_from_flags(["bm25", "dense", "splade", "splade-lucene", "rrf:splade+bm25",
                                "convex:splade+dense+bm25"], dense_model="m", splade_model="p")
    assert [s.kind for s in specs] == ["bm25", "dense", "sparseir", "lucene-impact", "fusion", "fusion"]
    assert specs[2].params["encoder"] == "mlm:p"
    assert specs[5].depends_on == ("splade", "dense", "bm25")
    assert "k" not in specs[5].params and "norm" not in specs[4].params
    llm = systems_from_flags(["llm"], encoders=["llm=llm:some/path"])
    assert llm[0].params["encoder"] == "llm:some/path"


@pytest.mark.parametrize("tokens, kwargs, message", [
    (["dense"], {}, "--dense-model"),
    (["splade"], {}, "--splade-model"),
    (["nope"], {}, "unknown system"),
    (["bm25"], {"encoders": ["broken"]}, "NAME=SPEC"),
])
def test_bad_flags(tokens, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        systems_from_flags(tokens, **kwargs)


def test_bad_configs(tmp_path):
    bm25 = SystemSpec.make("bm25", "bm25")
    with pytest.raises(ConfigError, match="unknown kind"):
        SystemSpec.make("x", "bm26")
    with pytest.raises(ConfigError, match="unknown parameter"):
        SystemSpec.make("x", "bm25", k3=1)
    with pytest.raises(ConfigError, match="two or three"):
        SystemSpec.make("f", "fusion", of=["bm25"])
    with pytest.raises(ConfigError, match="does not apply"):
        SystemSpec.make("f", "fusion", method="rrf", of=["a", "b"], norm="zscore")
    with pytest.raises(ConfigError, match="unknown system"):
        BenchConfig(("d",), (bm25, SystemSpec.make("f", "fusion", of=["bm25", "dense"])), tmp_path)
    with pytest.raises(ConfigError, match="must name a sparseir system"):
        BenchConfig(("d",), (bm25, SystemSpec.make("l", "lucene-impact", of="bm25")), tmp_path)
    with pytest.raises(ConfigError, match="duplicate"):
        BenchConfig(("d",), (bm25, bm25), tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text('out = "x"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match="colour"):
        load_config(bad)
    bad.write_text("out = \n")
    with pytest.raises(ConfigError):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "missing.toml")


# --- cache ------------------------------------------------------------------------------------------

def test_keys_follow_content(tmp_path):
    make_scifact_slice(tmp_path / "a", n_queries=3, n_docs=20)
    make_scifact_slice(tmp_path / "b", n_queries=3, n_docs=20)
    make_scifact_slice(tmp_path / "c", n_queries=3, n_docs=21)
    assert dataset_fingerprint(str(tmp_path / "a")) == dataset_fingerprint(str(tmp_path / "b"))
    assert dataset_fingerprint(str(tmp_path / "a")) != dataset_fingerprint(str(tmp_path / "c"))
    assert dataset_fingerprint("irds:beir/scifact/test") != dataset_fingerprint("irds:beir/nfcorpus/test")
    assert model_fingerprint(str(SPLADE)) != model_fingerprint(str(MINILM))
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})


def test_cache_entries_are_atomic(tmp_path):
    cache = Cache(tmp_path)
    with pytest.raises(RuntimeError):
        with cache.create("x", "k") as tmp:
            (tmp / "half").write_text("written")
            raise RuntimeError("build failed")
    assert not cache.has("x", "k") and not cache.path("x", "k").exists()
    with cache.create("x", "k") as tmp:
        (tmp / "f").write_text("ok")
    assert cache.has("x", "k") and (cache.path("x", "k") / "f").read_text() == "ok"


# --- reports ----------------------------------------------------------------------------------------

def _fake_result(name, ndcg, kind="bm25"):
    return {"system": name, "kind": kind, "params": {"k1": 0.9}, "metrics": {"nDCG@10": ndcg, "R@100": 0.9,
            "RR@10": 0.5}, "build": {"index_seconds": 1.0, "index_bytes": 2**20, "docs_per_second": None,
                                     "device": None},
            "latency": {"p50_ms": 1.0, "p99_ms": 2.0, "mean_ms": 1.2, "n": 3}, "latency_ms": [1.0, 1.0, 2.0],
            "search_latency": {"p50_ms": 0.5, "p99_ms": 1.0, "mean_ms": 0.6, "n": 3}, "search_latency_ms": [.5, .5, 1.],
            "batch": {"seconds": 1.0, "qps": 3.0, "threads": 2, "queries": 3}, "peak_rss_bytes": 2**30,
            "run": {"q": {"d": 1.0}}, "isolated": True}


def test_reports_with_a_summary_over_datasets(tmp_path):
    machine = {"date": "now", "cpu": "cpu", "cpu_cores": 2, "memory_gib": 1.0, "gpu": None, "os": "os",
               "python": "3", "versions": {"numpy": "2"}, "git_commit": None}
    report = {"machine": machine, "config": {}, "settings": {"k": 100, "latency_queries": 3, "threads": 2},
              "datasets": {name: {"spec": name, "fingerprint": "f", "split": "test", "n_docs": 10, "n_queries": 3,
                                  "systems": {"bm25": _fake_result("bm25", v), "other": _fake_result("other", 2 * v)}}
                           for name, v in (("one", 0.2), ("two", 0.4))}}
    assert summary(report)["bm25"] == pytest.approx({"one": 0.2, "two": 0.4, "mean": 0.3})
    md = to_markdown(report)
    assert "## Summary (nDCG@10)" in md and "| other | 0.4000 | 0.8000 | 0.6000 |" in md
    write_reports(report, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "run" not in saved["datasets"]["one"]["systems"]["bm25"]
    assert (tmp_path / "out" / "quality_vs_latency.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["quality_vs_latency.png", "report.json",
                                                                     "report.md"]


# --- end to end ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_end_to_end_on_a_scifact_slice(tmp_path, monkeypatch):
    """Every system on 8 queries / 60 documents, each base system in its own process, Lucene really started."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = make_scifact_slice(tmp_path / "scifact-slice", n_queries=8, n_docs=60)
    config = tmp_path / "bench.toml"
    config.write_text(textwrap.dedent(f"""
        out = "{tmp_path / 'out'}"
        datasets = ["{data}"]
        cache_dir = "{tmp_path / 'cache'}"
        latency_queries = 5
        show_progress = false
        [[system]]
        name = "bm25"
        kind = "bm25"
        [[system]]
        name = "dense"
        kind = "dense"
        model = "{MINILM}"
        [[system]]
        name = "splade"
        kind = "sparseir"
        encoder = "mlm:{SPLADE}"
        [[system]]
        name = "splade-lucene"
        kind = "lucene-impact"
        of = "splade"
        [[system]]
        name = "rrf"
        kind = "fusion"
        of = ["splade", "bm25"]
        [[system]]
        name = "convex"
        kind = "fusion"
        method = "convex"
        of = ["splade", "dense"]
    """))
    from sparseir.bench import run_bench

    report = run_bench(load_config(config))
    systems = report["datasets"]["scifact-slice"]["systems"]
    assert list(systems) == ["bm25", "dense", "splade", "splade-lucene", "rrf", "convex"]
    for name, r in systems.items():
        assert 0.3 < r["metrics"]["nDCG@10"] <= 1.0, name
        assert r["latency"]["n"] == r["search_latency"]["n"] == 5 and r["batch"]["qps"] > 0
        assert r["search_latency"]["p50_ms"] > 0 and r["latency"]["p50_ms"] > 0  # no timing comparisons here
        assert r["peak_rss_bytes"] > 0
        assert r["build"]["index_bytes"] > 0
        assert r.get("cached", False) is False
    check = systems["splade-lucene"]["crosscheck"]
    assert check["identical_scores"] == check["identical_up_to_ties"] == check["queries"] == 8
    assert check["ndcg10_delta"] <= 0.002
    assert systems["splade"]["build"]["device"].startswith("cpu")
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "quality_vs_latency.png"}
    md = (out / "report.md").read_text()
    assert "| splade-lucene |" in md and "Cross-check" in md

    # A re-run with one new system reuses every cached result and runs only the new one (here in this process).
    config.write_text(config.read_text() + '\n[[system]]\nname = "bm25-k1"\nkind = "bm25"\nk1 = 1.2\n')
    again = run_bench(load_config(config, isolate=False))["datasets"]["scifact-slice"]["systems"]
    assert [n for n, r in again.items() if r.get("cached") is False] == ["bm25-k1"]
    assert again["splade"]["metrics"] == systems["splade"]["metrics"]
    assert again["bm25-k1"]["isolated"] is False


def test_cli_wiring_builds_configs(tmp_path):
    from sparseir.bench.cli import build_config
    from sparseir.cli import build_parser

    args = build_parser().parse_args([
        "bench", "../shared/data/beir/scifact", "--systems", "bm25,dense,splade,rrf:splade+bm25",
        "--dense-model", "m", "--splade-model", "s", "--out", str(tmp_path), "-k", "50", "--no-isolate"])
    cfg = build_config(args)
    assert [s.name for s in cfg.systems] == ["bm25", "dense", "splade", "rrf:splade+bm25"]
    assert (cfg.k, cfg.isolate, cfg.out, cfg.datasets) == (50, False, tmp_path, ("../shared/data/beir/scifact",))
    args = build_parser().parse_args(["bench", "--config", str(REPO / "bench/configs/scifact.toml"),
                                      "--out", str(tmp_path), "--latency-queries", "7"])
    cfg = build_config(args)
    assert (cfg.out, cfg.latency_queries, len(cfg.systems)) == (tmp_path, 7, 9)
    with pytest.raises(ConfigError, match="not both"):
        build_config(build_parser().parse_args(["bench", "--config", "x.toml", "--systems", "bm25"]))
    with pytest.raises(ConfigError, match="no systems"):
        build_config(build_parser().parse_args(["bench", "d", "--out", "o"]))


def test_crosscheck_tolerates_only_ties_at_the_cut():
    from sparseir.bench.systems import _same_up_to_ties

    a = {"x": 5.0, "y": 4.0, "z": 3.0}
    assert _same_up_to_ties(a, {"x": 5.0, "y": 4.0, "w": 3.0})  # tie at the cut, another document
    assert not _same_up_to_ties(a, {"x": 5.0, "w": 4.0, "z": 3.0})  # a different document above the cut
    assert not _same_up_to_ties(a, {"x": 5.0, "y": 4.0, "z": 2.0})  # a different score
    assert _same_up_to_ties({"x": 2.0, "y": 2.0, "z": 1.0}, {"y": 2.0, "x": 2.0, "z": 1.0})  # tie above the cut


def test_single_thread_limits_and_restores_numba_and_torch():
    import numba
    import torch

    from sparseir.timing import latency, single_thread

    before = (numba.get_num_threads(), torch.get_num_threads())
    with single_thread():
        assert (numba.get_num_threads(), torch.get_num_threads()) == (1, 1)
    assert (numba.get_num_threads(), torch.get_num_threads()) == before
    stats, ms = latency(lambda x: x, range(10), warmup=2)
    assert stats["n"] == len(ms) == 10 and 0 <= stats["p50_ms"] <= stats["p99_ms"]
    with pytest.raises(ValueError):
        latency(lambda x: x, [])
