"""The ``sparseir`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

#: Modules that add their own subcommands through ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = ("sparseir.bench.cli", "sparseir.sae.cli")


def _encoder_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    names = ("max_length", "query_max_length", "batch_size", "max_active_dims", "device", "pooling",
             "mode", "score", "doc_template", "query_template", "mask")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _add_encoder_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoder")
    g.add_argument("--encoder", required=True, metavar="SPEC",
                   help="'mlm:PATH_OR_ID', 'llm:PATH_OR_ID', 'sae:PATH', or a model path (family auto-detected)")
    g.add_argument("--max-length", type=int, help="document token limit (MLM default 256)")
    g.add_argument("--query-max-length", type=int, help="query token limit (MLM default 64)")
    g.add_argument("--pooling", choices=("max", "sum"), help="pooling over tokens (default max)")
    g.add_argument("--max-active-dims", type=int, help="keep only the top-N dimensions of every vector")
    g.add_argument("--batch-size", type=int, help="texts per forward pass (default 32)")
    g.add_argument("--device", help="torch device; default: cuda if available, else cpu")
    g = p.add_argument_group("LLM encoder (llm:...)")
    g.add_argument("--mode", choices=("plain", "echo", "prompt"), help="positions pooled (default prompt)")
    g.add_argument("--score", choices=("logits", "logprob"), help="token score before log(1+ReLU) (default logprob)")
    g.add_argument("--doc-template", help="document template with {text} placeholder(s)")
    g.add_argument("--query-template", help="query template with {text} placeholder(s)")
    g.add_argument("--no-mask", dest="mask", action="store_false", default=None,
                   help="keep special, whitespace and punctuation tokens")


def _add_corpus_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("corpus", help="BEIR folder, .jsonl, .tsv (id<TAB>text), or irds:<ir_datasets id>")
    p.add_argument("--id-field", default="_id", help="JSONL id field (default _id)")
    p.add_argument("--text-fields", default="title,text", help="comma-separated JSONL text fields (default title,text)")


def _corpus(args: argparse.Namespace):
    from .corpus import load_corpus

    return load_corpus(args.corpus, id_field=args.id_field, text_fields=args.text_fields.split(","))


def cmd_index(args: argparse.Namespace) -> None:
    from .encoders import load_encoder
    from .indexing import build_index

    _check_positive(args, "chunk_size")
    corpus = _corpus(args)
    encoder = load_encoder(args.encoder, **_encoder_kwargs(args))
    out = args.out or Path("index") / f"{Path(args.corpus.removeprefix('irds:')).name}-{encoder.name}"
    index = build_index(corpus, encoder, out, quantize=args.quantize, chunk_size=args.chunk_size,
                        overwrite=args.overwrite, store=not args.no_store, allow_empty=args.allow_empty)
    s = index.stats()
    print(f"indexed {s['n_docs']} documents ({s['n_empty_docs']} empty) into {index.path}: "
          f"{s['n_postings']} postings, {s['bytes'] / 2**20:.1f} MiB, "
          f"{index.build_info['docs_per_second']} docs/s on {s['encoder']['device']}, commit {index.generation}")


def _check_positive(args: argparse.Namespace, name: str) -> None:
    from .errors import UsageError

    value = getattr(args, name)
    if value is not None and value < 1:
        raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def _require_index(path: str) -> None:
    from .errors import UsageError
    from .index import is_index

    if not is_index(path):
        raise UsageError(f"{path}: not a sparseir index (create one with `sparseir index`)")


def cmd_add(args: argparse.Namespace) -> None:
    from .index import IndexWriter
    from .indexing import add_documents

    _check_positive(args, "chunk_size")
    _require_index(args.index)
    corpus = _corpus(args)
    with IndexWriter(args.index) as writer:
        n = add_documents(writer, corpus, chunk_size=args.chunk_size, upsert=args.upsert)
        gen = writer.commit()
    print(f"added {n} documents to {args.index}, commit {gen}")


def cmd_delete(args: argparse.Namespace) -> None:
    from .errors import UsageError
    from .index import IndexWriter

    ids = list(args.ids)
    if args.ids_file:
        try:
            with open(args.ids_file, encoding="utf-8") as f:
                ids += [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{args.ids_file}: cannot read ids ({e})") from None
    if not ids:
        raise UsageError("no ids to delete: give IDS or --ids-file FILE")
    _require_index(args.index)
    with IndexWriter(args.index) as writer:
        missing = writer.delete(ids)
        gen = writer.commit()
    print(f"deleted {len(set(ids)) - len(missing)} documents from {args.index}, commit {gen}")
    if missing:
        shown = ", ".join(repr(i) for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise UsageError(f"{len(missing)} ids are not in the index: {shown}")


def cmd_optimize(args: argparse.Namespace) -> None:
    from .index import IndexWriter

    _check_positive(args, "max_segments")
    _require_index(args.index)
    with IndexWriter(args.index) as writer:
        writer.optimize(args.max_segments)
        gen = writer.commit()
    print(f"optimized {args.index} to at most {args.max_segments} segment(s), commit {gen}")


def cmd_check(args: argparse.Namespace) -> None:
    from .index import open_index
    from .index.check import check_postings

    index = open_index(args.index, verify=True)
    index.verify()
    for seg in index.segments:
        check_postings(seg)
    print(f"{index.path}: OK, commit {index.generation}, {len(index.segments)} segments, {index.n_docs} live "
          f"documents, every checksum and posting list valid")


def _searcher(args: argparse.Namespace):
    from .search import Searcher
    from .search.approx import ApproxSearcher
    from .search.params import params_from_args

    params = params_from_args(args)
    return ApproxSearcher(args.index, params=params) if params else Searcher(args.index)


def cmd_search(args: argparse.Namespace) -> None:
    searcher = _searcher(args)
    results = []
    for query in args.query:
        hits = searcher.search(query, k=args.k)
        expl = {h.doc_id: searcher.explain(query, h.doc_id) for h in hits} if args.explain else {}
        results.append({"query": query, "hits": [
            {"rank": r, "doc_id": h.doc_id, "score": h.score,
             **({"explain": [c._asdict() for c in expl[h.doc_id]]} if args.explain else {})}
            for r, h in enumerate(hits, 1)]})
    if args.json:
        json.dump(results if len(results) > 1 else results[0], sys.stdout, indent=2)
        print()
        return
    for res in results:
        print(f"query: {res['query']}")
        print(f"{'rank':>4}  {'doc_id':<24} {'score':>9}")
        for hit in res["hits"]:
            print(f"{hit['rank']:>4}  {hit['doc_id']:<24} {hit['score']:>9.4f}")
            for c in hit.get("explain", [])[: args.explain_terms]:
                print(f"{'':>6}{c['term']:<20} {c['query_weight']:.3f} x {c['doc_weight']:.3f} = {c['product']:.4f}")


def cmd_eval(args: argparse.Namespace) -> None:
    from .corpus import load_qrels, load_queries
    from .evaluate import evaluate, run_from_hits

    searcher = _searcher(args)
    qrels = load_qrels(args.dataset, args.split)
    queries = {q: t for q, t in load_queries(args.dataset).items() if q in qrels}
    start = time.perf_counter()
    results = searcher.batch_search(queries, k=args.k, threads=args.threads)
    seconds = time.perf_counter() - start
    scores = evaluate(run_from_hits(results), qrels, args.metrics.split(","), remove_query=not args.keep_query)
    if args.run_out:
        with open(args.run_out, "w", encoding="utf-8") as f:
            for q, hits in results.items():
                f.writelines(f"{q} Q0 {h.doc_id} {r} {h.score:.6f} sparseir\n" for r, h in enumerate(hits, 1))
    if args.json:
        print(json.dumps({"queries": len(queries), "seconds": seconds, **scores}, indent=2))
        return
    print(f"{len(queries)} queries in {seconds:.2f} s (encoding included)")
    for name, value in scores.items():
        print(f"{name:<10} {value:.4f}")


def cmd_encode(args: argparse.Namespace) -> None:
    from .corpus import load_queries
    from .encoders import load_encoder

    encoder = load_encoder(args.encoder, **_encoder_kwargs(args))
    if args.queries:
        items = list(load_queries(args.corpus).items())
    else:
        items = [tuple(d) for d in _corpus(args)]
    encode = encoder.encode_query if args.queries else encoder.encode_document
    vectors = encode([t for _, t in items], show_progress_bar=True)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for (doc_id, _), start, end in zip(items, vectors.indptr[:-1], vectors.indptr[1:]):
            vec = {encoder.terms[c]: (round(float(w) * args.quantize_factor) if args.quantize_factor else float(w))
                   for c, w in zip(vectors.indices[start:end], vectors.data[start:end])}
            f.write(json.dumps({"id": doc_id, "contents": "", "vector": vec}, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    print(f"wrote {len(items)} vectors to {out} ({encoder.last_docs_per_second:.1f} docs/s on {encoder.device})")


def cmd_info(args: argparse.Namespace) -> None:
    from .index import open_index

    index = open_index(args.index, verify=args.verify)
    if args.verify:
        index.verify()
    stats = index.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return
    for key in ("path", "generation", "n_docs", "n_deleted", "n_empty_docs", "n_dims", "n_postings",
                "postings_per_doc", "quantization", "scale", "bytes", "bytes_per_posting", "store_bytes_per_doc"):
        value = stats[key]
        print(f"{key:<20} {value:.4g}" if isinstance(value, float) else f"{key:<20} {value}")
    enc = stats["encoder"] or {}
    print(f"{'encoder':<20} {enc.get('name')} {enc.get('config', {}).get('model')} ({enc.get('fingerprint')})")
    print(f"segments ({len(stats['segments'])}):")
    for seg in stats["segments"]:
        print(f"  {seg['name']}  {seg['n_docs']:>10} docs  {seg['n_deleted']:>8} deleted")
    hist = stats["weight_histogram"]
    top = max(hist["counts"], default=1) or 1
    print("weight histogram:")
    for lo, hi, c in zip(hist["edges"], hist["edges"][1:], hist["counts"]):
        print(f"  [{lo:7.3f}, {hi:7.3f})  {c:>10}  {'#' * round(40 * c / top)}")


def build_parser() -> argparse.ArgumentParser:
    from .search.params import add_arguments as add_approx_arguments

    parser = argparse.ArgumentParser(prog="sparseir", description="Learned-sparse retrieval: encode, index, search, "
                                     "evaluate. Run 'sparseir COMMAND --help' for a command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="encode a corpus and build an index", description="Encode a corpus and write an "
                       "index directory atomically (nothing appears under --out if the build fails).")
    _add_corpus_options(p)
    _add_encoder_options(p)
    p.add_argument("--out", help="index directory (default index/<corpus>-<encoder>)")
    p.add_argument("--quantize", choices=("uint8", "float32"), default="uint8",
                   help="impact storage (default uint8: 8-bit with a global scale; see bench/results/core.md)")
    p.add_argument("--chunk-size", type=int, default=4096, help="documents encoded and spilled per chunk (>= 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing sparseir index at --out (anything else there is refused)")
    p.add_argument("--no-store", action="store_true", help="do not keep the documents' id, title and text")
    p.add_argument("--allow-empty", action="store_true", help="build an index even from an empty corpus")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("add", help="encode documents and add them to an index",
                       description="Encode a corpus with the index's own encoder and add it in one commit. A "
                       "document id already in the index is an error unless --upsert.")
    p.add_argument("index")
    _add_corpus_options(p)
    p.add_argument("--upsert", action="store_true", help="replace documents whose id is already in the index")
    p.add_argument("--chunk-size", type=int, default=4096, help="documents encoded per chunk (>= 1)")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("delete", help="delete documents by id", description="Delete documents in one commit. "
                       "Ids not in the index are listed and the exit code is 2 (the others are deleted).")
    p.add_argument("index")
    p.add_argument("ids", nargs="*", help="document ids")
    p.add_argument("--ids-file", metavar="FILE", help="a file with one document id per line")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("optimize", help="merge an index's segments", description="Merge segments and expunge "
                       "deleted documents (Lucene's forceMerge); search results do not change.")
    p.add_argument("index")
    p.add_argument("--max-segments", type=int, default=1, help="segments left (default 1)")
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser("check", help="verify an index", description="Check every file's sha256 and every posting "
                       "list's bounds and order; exit code 2 and the file at fault on any problem.")
    p.add_argument("index")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("search", help="search an index", description="Exact top-k search; the query is encoded with "
                       "the encoder recorded in the index.")
    p.add_argument("index")
    p.add_argument("query", nargs="+", help="one or more query texts")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--explain", action="store_true", help="show the dimensions behind each score")
    p.add_argument("--explain-terms", type=int, default=5, help="dimensions shown per hit with --explain")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_approx_arguments(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="evaluate an index on a dataset's qrels",
                       description="Search every judged query and report nDCG@10, R@100 and MRR@10 (ir-measures).")
    p.add_argument("index")
    p.add_argument("dataset", help="BEIR folder or irds:<id> with queries and qrels")
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument("-k", type=int, default=1000, help="retrieval depth (default 1000)")
    p.add_argument("--metrics", default="nDCG@10,R@100,RR@10", help="ir-measures names, comma-separated")
    p.add_argument("--threads", type=int, help="search threads (default: all cores)")
    p.add_argument("--keep-query", action="store_true",
                   help="keep a document whose id equals the query id (default: removed, as Pyserini's --remove-query)")
    p.add_argument("--run-out", help="also write the run in TREC format to this file")
    p.add_argument("--json", action="store_true")
    add_approx_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("encode", help="write sparse vectors as JSONL (Pyserini JsonVectorCollection)",
                       description='Write {"id", "contents", "vector": {term: weight}} lines, the format of '
                       "Pyserini's JsonVectorCollection, to cross-check against Lucene.")
    _add_corpus_options(p)
    _add_encoder_options(p)
    p.add_argument("--out", required=True, help="output .jsonl file")
    p.add_argument("--queries", action="store_true", help="encode the dataset's queries instead of its documents")
    p.add_argument("--quantize-factor", type=float,
                   help="write round(weight * F) integers, as Pyserini impact indexes expect (e.g. 100)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("info", help="index statistics", description="Commit generation, segments, live and "
                       "deleted documents, dimensions, postings, bytes and document-store bytes per document.")
    p.add_argument("index")
    p.add_argument("--verify", action="store_true", help="check every array's sha256")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .corpus import CorpusError
    from .errors import SparseirError

    # EncoderError can only come from an imported sparseir.encoders (importing it would load torch)
    encoders = sys.modules.get("sparseir.encoders")
    encoder_error = (encoders.EncoderError,) if encoders is not None else ()
    try:
        args.func(args)
    except (CorpusError, *encoder_error, SparseirError, FileExistsError,
            FileNotFoundError, KeyError, ValueError) as e:
        print(f"sparseir: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
