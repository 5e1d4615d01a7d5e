"""The ``sparseir bench`` subcommand."""

from __future__ import annotations

import argparse
import sys

from sparseir.bench.config import BenchConfig, ConfigError, from_mapping, load_config, systems_from_flags


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the ``sparseir`` command line."""
    p = subparsers.add_parser(
        "bench", help="benchmark sparseir against BM25, dense and Lucene impact search",
        description="Run systems on BEIR-style datasets and write report.md, report.json and "
                    "quality_vs_latency.png. Built indexes, vectors and results are cached and reused.")
    p.add_argument("datasets", nargs="*", help="BEIR folders or irds:<id> (or 'datasets' in --config)")
    p.add_argument("--config", help="TOML config (see sparseir.bench.config); flags override its top-level keys")
    p.add_argument("--systems", help="comma-separated: bm25, dense, splade, NAME (with --encoder), NAME-lucene, "
                                     "rrf:A+B[+C], convex:A+B[+C]")
    p.add_argument("--dense-model", help="sentence-transformers model id or path for 'dense'")
    p.add_argument("--splade-model", help="MLM (SPLADE) model path or id for 'splade'")
    p.add_argument("--encoder", action="append", default=[], metavar="NAME=SPEC",
                   help="another sparseir system NAME with encoder SPEC (e.g. llm=llm:PATH); repeatable")
    p.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (default 0.9)")
    p.add_argument("--b", type=float, default=0.4, help="BM25 b (default 0.4)")
    p.add_argument("--out", help="report folder")
    p.add_argument("--cache-dir", help="cache folder (default data/cache)")
    p.add_argument("--split", help="qrels split (default test)")
    p.add_argument("-k", type=int, help="retrieval depth (default 100)")
    p.add_argument("--latency-queries", type=int, help="queries timed one by one (default 300)")
    p.add_argument("--threads", type=int, help="threads for batch search (default: all cores)")
    p.add_argument("--no-isolate", action="store_true", help="run all systems in this process (peak RSS is shared)")
    p.set_defaults(func=cmd_bench)


def build_config(args: argparse.Namespace) -> BenchConfig:
    overrides = {"out": args.out, "cache_dir": args.cache_dir, "split": args.split, "k": args.k,
                 "latency_queries": args.latency_queries, "threads": args.threads,
                 "datasets": args.datasets or None, "isolate": False if args.no_isolate else None}
    if args.config:
        if args.systems:
            raise ConfigError("give systems either in --config or with --systems, not both")
        return load_config(args.config, **overrides)
    if not args.systems:
        raise ConfigError("no systems: pass --systems or --config")
    systems = systems_from_flags(args.systems.split(","), dense_model=args.dense_model,
                                 splade_model=args.splade_model, encoders=args.encoder, k1=args.k1, b=args.b)
    return from_mapping({k: v for k, v in overrides.items() if v is not None}, systems)


def cmd_bench(args: argparse.Namespace) -> None:
    from sparseir.bench.report import summary
    from sparseir.bench.runner import run_bench

    cfg = build_config(args)
    report = run_bench(cfg)
    for system, row in summary(report).items():
        print(f"{system:<28} nDCG@10 {row['mean']:.4f}")
    print(f"reports written to {cfg.out}", file=sys.stderr)
