"""The ``sparseir`` command line: a thin layer over the library.

Exit codes: 0 on success; 2 for a user error (bad input, an option out of range, a bad or locked
index), printed as one line ``sparseir: error: ...`` naming the file, line, id or option at fault;
130 when interrupted (SIGINT, Ctrl-C) and 143 when terminated (SIGTERM), with one line
``sparseir: interrupted``. A signal unwinds the command normally, so temporary files and folders
are removed and no partial output is published. Any other exception is a bug and shows its traceback.

Building the parser imports neither torch nor transformers: each command imports what it uses.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .argtypes import at_least, positive
from .errors import SparseirError, UsageError

#: Modules that add their own subcommands through ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = ("sparseir.bench.cli", "sparseir.sae.cli", "sparseir.serve.cli", "sparseir.train.cli")


def _encoder_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    names = ("max_length", "query_max_length", "batch_size", "max_active_dims", "device", "pooling",
             "mode", "attention", "adapter", "word_start", "score", "doc_template", "query_template", "mask")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _add_encoder_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("encoder")
    g.add_argument("--encoder", required=True, metavar="SPEC",
                   help="'mlm:PATH_OR_ID', 'llm:PATH_OR_ID', 'sae:PATH', or a model path (family auto-detected)")
    g.add_argument("--max-length", type=at_least(1), metavar="N",
                   help="document token limit, 1..the model's position limit (MLM default 256)")
    g.add_argument("--query-max-length", type=at_least(1), metavar="N",
                   help="query token limit, 1..the model's position limit (MLM default 64)")
    g.add_argument("--pooling", choices=("max", "sum"), help="pooling over tokens (default max)")
    g.add_argument("--max-active-dims", type=at_least(1), metavar="N",
                   help="keep only the top-N dimensions of every vector")
    g.add_argument("--batch-size", type=at_least(1), metavar="N", help="texts per forward pass (default 32)")
    g.add_argument("--device", help="torch device; default: cuda if available, else cpu")
    g = p.add_argument_group("LLM encoder (llm:...)")
    g.add_argument("--mode", choices=("plain", "echo", "prompt"),
                   help="positions pooled (default prompt with causal attention, plain with bidirectional)")
    g.add_argument("--attention", choices=("causal", "bidirectional"),
                   help="attention mask (default causal, or the one an --adapter was trained with)")
    g.add_argument("--adapter", metavar="DIR", help="a LoRA adapter from `sparseir train mntp` (LLM2Vec-style)")
    g.add_argument("--no-word-start", dest="word_start", action="store_false", default=None,
                   help="keep word-piece continuation tokens as dimensions")
    g.add_argument("--score", choices=("logits", "logprob", "pmi"),
                   help="token score before log(1+ReLU) (default pmi in prompt mode, else logprob)")
    g.add_argument("--doc-template", help="document template with {text} placeholder(s)")
    g.add_argument("--query-template", help="query template with {text} placeholder(s)")
    g.add_argument("--no-mask", dest="mask", action="store_false", default=None,
                   help="keep special, whitespace and punctuation tokens")


def _add_corpus_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("corpus", help="BEIR folder, .jsonl, .tsv (id<TAB>text), each optionally .gz or .zst, "
                                  "or irds:<ir_datasets id>")
    p.add_argument("--id-field", default="_id", help="JSONL id field (default _id)")
    p.add_argument("--text-fields", default="title,text", help="comma-separated JSONL text fields (default title,text)")
    _add_tsv_header_option(p)


def _add_tsv_header_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tsv-header", action=argparse.BooleanOptionalAction, default=None,
                   help="a TSV's first row is (--tsv-header) or is not (--no-tsv-header) a header; default: "
                        "detected from its first column (id, docid, qid, ...)")


def _corpus(args: argparse.Namespace):
    from .corpus import load_corpus

    return load_corpus(args.corpus, id_field=args.id_field, text_fields=args.text_fields.split(","),
                       tsv_header=args.tsv_header)


def cmd_index(args: argparse.Namespace) -> None:
    from .distributed.api import check_arguments
    from .encoders import load_encoder
    from .indexing import build_index

    _check_positive(args, "chunk_size")
    check_arguments(args)
    corpus = _corpus(args)
    encoder = load_encoder(args.encoder, **_encoder_kwargs(args))
    model = Path(str(encoder.config().get("model", ""))).name
    out = args.out or Path("index") / f"{Path(args.corpus.removeprefix('irds:')).name}-{encoder.name}-{model}"
    if args.shards:
        if args.reorder:
            raise UsageError("--reorder applies to one index; with --shards, run 'sparseir optimize --reorder' on "
                             "each shard")
        _index_sharded(args, corpus, encoder, out)
        return
    index = build_index(corpus, encoder, out, quantize=args.quantize, chunk_size=args.chunk_size,
                        overwrite=args.overwrite, store=not args.no_store, allow_empty=args.allow_empty,
                        reorder=args.reorder)
    s = index.stats()
    print(f"indexed {s['n_docs']} documents ({s['n_empty_docs']} empty) into {index.path}: "
          f"{s['n_postings']} postings, {s['bytes'] / 2**20:.1f} MiB, "
          f"{index.build_info['docs_per_second']} docs/s on {s['encoder']['device']}, commit {index.generation}")


def _index_sharded(args: argparse.Namespace, corpus, encoder, out) -> None:
    from .distributed import build_sharded_index

    build_sharded_index(corpus, encoder, out, args.shards, ray=bool(args.ray or args.ray_address),
                        ray_address=args.ray_address, workers=args.workers, quantize=args.quantize, scale=args.scale,
                        store=not args.no_store, chunk_size=args.chunk_size, overwrite=args.overwrite)
    info = json.loads((Path(out) / "build.json").read_text(encoding="utf-8"))
    print(f"indexed {info['n_docs']} documents into {out}: {args.shards} shards, scale {info['scale']:.6g}, "
          f"{info['docs_per_second']} docs/s encoding ({'on Ray' if info['ray'] else 'in process'})")


def _check_positive(args: argparse.Namespace, name: str) -> None:
    from .errors import UsageError

    value = getattr(args, name)
    if value is not None and value < 1:
        raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def _require_index(path: str) -> None:
    from .distributed import is_sharded
    from .errors import UsageError
    from .index import is_index

    if not is_index(path) and not is_sharded(path):
        raise UsageError(f"{path}: not a sparseir index (create one with `sparseir index`)")


def cmd_add(args: argparse.Namespace) -> None:
    from .distributed import open_writer
    from .indexing import add_documents

    _check_positive(args, "chunk_size")
    _require_index(args.index)
    corpus = _corpus(args)
    with open_writer(args.index) as writer:
        n = add_documents(writer, corpus, chunk_size=args.chunk_size, upsert=args.upsert)
        gen = writer.commit()
    print(f"added {n} documents to {args.index}, commit {gen}")


def cmd_delete(args: argparse.Namespace) -> None:
    from .distributed import open_writer
    from .errors import UsageError

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
    with open_writer(args.index) as writer:
        missing = writer.delete(ids)
        gen = writer.commit()
    print(f"deleted {len(set(ids)) - len(missing)} documents from {args.index}, commit {gen}")
    if missing:
        shown = ", ".join(repr(i) for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise UsageError(f"{len(missing)} ids are not in the index: {shown}")


def cmd_optimize(args: argparse.Namespace) -> None:
    from .distributed import open_writer

    _check_positive(args, "max_segments")
    _require_index(args.index)
    with open_writer(args.index) as writer:
        writer.optimize(args.max_segments, reorder=args.reorder)
        gen = writer.commit()
    print(f"optimized {args.index} to at most {args.max_segments} segment(s){' (reordered)' if args.reorder else ''}, "
          f"commit {gen}")
    if args.approx:
        from .search import save_approx

        for folder in (f for path in _index_paths(args.index) for f in save_approx(path)):
            print(f"approximate-search structures: {folder}")


def cmd_check(args: argparse.Namespace) -> None:
    from .index import open_index
    from .index.check import check_postings
    from .search.approx import ApproxIndex

    for path in _index_paths(args.index):
        index = open_index(path, verify=True)
        index.verify()
        for seg in index.segments:
            check_postings(seg)
            for folder in sorted(seg.path.glob("approx-*")):  # saved approximate-search structures
                ApproxIndex.load(folder, seg, verify=True)
        print(f"{index.path}: OK, commit {index.generation}, {len(index.segments)} segments, {index.n_docs} live "
              f"documents, every checksum and posting list valid")


def _index_paths(path: str) -> list[Path]:
    """``[path]``, or the shards' folders of a sharded index."""
    from .distributed import is_sharded, shard_paths

    return shard_paths(path) if is_sharded(path) else [Path(path)]


def _searcher(args: argparse.Namespace):
    from .distributed import open_searcher
    from .search.params import params_from_args

    return open_searcher(args.index, ray=args.ray, ray_address=args.ray_address, params=params_from_args(args))


def _snippet(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _hit_rows(searcher, hits, query: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One dict per hit: rank, id, score, and the stored title and snippet when the index keeps documents."""
    doc = getattr(searcher, "doc", lambda _id: None)
    rows = []
    for rank, h in enumerate(hits, 1):
        stored = doc(h.doc_id) or {}
        row = {"rank": rank, "doc_id": h.doc_id, "score": h.score, "title": stored.get("title", ""),
               "snippet": _snippet(stored.get("text", ""), args.snippet_chars)}
        if args.explain:
            row["explain"] = [c.to_dict() for c in _explain(searcher, query, h.doc_id, args)]
        rows.append(row)
    return rows


def _explain(searcher, query: str, doc_id: str, args: argparse.Namespace) -> list:
    """``searcher.explain`` with token provenance where the index and encoder allow it (else a note on stderr,
    once, and ``args.plain_explain`` set)."""
    from .encoders.sources import ProvenanceError

    if not getattr(args, "plain_explain", False):
        try:
            return searcher.explain(query, doc_id, provenance=True)
        except ProvenanceError as e:
            print(f"sparseir: note: no source words shown: {e}", file=sys.stderr)
            args.plain_explain = True
    return searcher.explain(query, doc_id)


def _source_words(sources: list[dict] | None) -> str:
    return ",".join(dict.fromkeys(s["token"] for s in sources or [])) or "-"


def _run_lines(results: dict[str, list], fmt: str, tag: str) -> Iterator[str]:
    """A run in TREC (``qid Q0 doc rank score tag``), MS MARCO (``qid<TAB>doc<TAB>rank``) or JSONL format."""
    for qid, hits in results.items():
        if fmt == "jsonl":
            yield json.dumps({"query_id": qid, "hits": [{"rank": r, "doc_id": h.doc_id, "score": h.score}
                                                        for r, h in enumerate(hits, 1)]}, ensure_ascii=False) + "\n"
        elif fmt == "msmarco":
            yield from (f"{qid}\t{h.doc_id}\t{r}\n" for r, h in enumerate(hits, 1))
        else:
            yield from (f"{qid} Q0 {h.doc_id} {r} {h.score:.6f} {tag}\n" for r, h in enumerate(hits, 1))


def _write_run(results: dict[str, list], out: str | None, fmt: str, tag: str) -> None:
    """Write a run to ``out`` atomically (``-`` or ``None``: standard output)."""
    from ._fs import atomic_write

    if out in (None, "-"):
        sys.stdout.writelines(_run_lines(results, fmt, tag))
        return
    try:
        atomic_write(out, "".join(_run_lines(results, fmt, tag)).encode("utf-8"))
    except OSError as e:
        raise UsageError(f"{out}: cannot write the run ({e.strerror or e})") from None


def _drop_self_hits(results: dict[str, list], k: int) -> dict[str, list]:
    """Pyserini's ``--remove-query``: drop a hit whose id is its query's id, keep ``k`` hits."""
    return {q: [h for h in hits if h.doc_id != q][:k] for q, hits in results.items()}


def cmd_search(args: argparse.Namespace) -> None:
    from .corpus import load_queries

    if bool(args.query) == bool(args.topics):
        raise UsageError("give either query texts or --topics FILE")
    if args.topics and (args.json or args.explain):
        raise UsageError("--json and --explain show query texts given on the command line; with --topics use "
                         "--format jsonl")
    if not args.topics and (args.output or args.remove_query):
        raise UsageError("--output and --remove-query go with --topics FILE")
    queries = load_queries(args.topics, tsv_header=args.tsv_header) if args.topics else None
    if queries is not None and not queries:
        raise UsageError(f"{args.topics}: no queries")
    searcher = _searcher(args)
    if queries is not None:
        depth = args.k + 1 if args.remove_query else args.k
        results = searcher.batch_search(queries, k=depth, threads=args.threads)
        if args.remove_query:
            results = _drop_self_hits(results, args.k)
        _write_run(results, args.output, args.format, args.run_tag)
        if args.output not in (None, "-"):
            print(f"wrote {sum(map(len, results.values()))} hits for {len(results)} queries to {args.output} "
                  f"({args.format})", file=sys.stderr)
        return
    results = [{"query": q, "hits": _hit_rows(searcher, searcher.search(q, k=args.k), q, args)} for q in args.query]
    if args.json:  # always a list, one entry per query
        json.dump(results, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return
    _print_results(searcher, results, args)


def _print_results(searcher, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The hits table; with ``--explain``, each hit's dimensions and their source words, marked in the snippet."""
    from .encoders.sources import highlight

    marks = ("\033[1;4m", "\033[0m") if sys.stdout.isatty() else ("[", "]")
    for res in results:
        print(f"query: {res['query']}")
        print(f"{'rank':>4}  {'doc_id':<20} {'score':>9}  title / text")
        for hit in res["hits"]:
            print(f"{hit['rank']:>4}  {hit['doc_id']:<20} {hit['score']:>9.4f}  {_snippet(hit['title'], 60)}")
            shown = hit.get("explain", [])[: args.explain_terms]
            if any("doc_sources" in c for c in shown):
                stored = searcher.doc(hit["doc_id"]) or {}
                spans = [(s["start"], s["end"]) for c in shown for s in c["doc_sources"][:1] if s["start"] is not None]
                hit["snippet"] = highlight(stored.get("text", ""), spans, args.snippet_chars, marks)
            if hit["snippet"]:
                print(f"{'':>37}{hit['snippet']}")
            for c in shown:
                line = f"{'':>6}{c['term']:<20} {c['query_weight']:.3f} x {c['doc_weight']:.3f} = {c['product']:.4f}"
                if "doc_sources" in c:
                    line += f"   query: {_source_words(c.get('query_sources'))}  doc: {_source_words(c['doc_sources'])}"
                print(line)


def cmd_eval(args: argparse.Namespace) -> None:
    import warnings

    from .corpus import load_qrels, load_queries
    from .evaluate import CONVENTIONS, check_qrels, evaluate, parse_metrics
    from .search.results import to_run

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    parse_metrics(metrics)  # fail before loading anything
    qrels = load_qrels(args.dataset, args.split)
    searcher = _searcher(args)
    position = getattr(getattr(searcher, "index", None), "position", None)  # a sharded index: no check
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        all_queries = load_queries(args.dataset)
        coverage = check_qrels(qrels, all_queries, _IdSet(position) if position else None,
                               source=f"{args.dataset} qrels ({args.split})")
    for w in caught:
        print(f"sparseir: warning: {w.message}", file=sys.stderr)
    queries = {q: t for q, t in all_queries.items() if q in qrels}
    remove_query = not args.keep_query
    start = time.perf_counter()
    results = searcher.batch_search(queries, k=args.k, threads=args.threads)
    seconds = time.perf_counter() - start
    scores = evaluate(to_run(results), qrels, metrics, remove_query=remove_query)
    if args.run_out:
        _write_run(_drop_self_hits(results, args.k) if remove_query else results, args.run_out, "trec", "sparseir")
    if args.json:
        print(json.dumps({"queries": len(queries), "seconds": seconds, "convention": CONVENTIONS[remove_query],
                          "coverage": coverage._asdict(), **scores}, indent=2))
        return
    print(f"{len(queries)} queries in {seconds:.2f} s (encoding included)")
    print(f"convention: {CONVENTIONS[remove_query]}" + ("; --keep-query keeps them" if remove_query else ""))
    for name, value in scores.items():
        print(f"{name:<10} {value:.4f}")


class _IdSet:
    """``in`` over the index's document ids through its ``position(doc_id)`` lookup."""

    def __init__(self, position) -> None:
        self.position = position

    def __contains__(self, doc_id: str) -> bool:
        return self.position(doc_id) is not None


def cmd_encode(args: argparse.Namespace) -> None:
    from ._fs import atomic_write
    from .corpus import load_queries
    from .encoders import load_encoder

    if args.queries:
        items = list(load_queries(args.corpus, tsv_header=args.tsv_header).items())
    else:
        items = [(d.id, d.text) for d in _corpus(args)]
    encoder = load_encoder(args.encoder, **_encoder_kwargs(args))
    encode = encoder.encode_query if args.queries else encoder.encode_document
    vectors = encode([t for _, t in items], show_progress_bar=True)
    lines = []
    for (doc_id, _), start, end in zip(items, vectors.indptr[:-1], vectors.indptr[1:]):
        vec = {encoder.terms[c]: (round(float(w) * args.quantize_factor) if args.quantize_factor else float(w))
               for c, w in zip(vectors.indices[start:end], vectors.data[start:end])}
        lines.append(json.dumps({"id": doc_id, "contents": "", "vector": vec}, ensure_ascii=False) + "\n")
    try:
        atomic_write(args.out, "".join(lines).encode("utf-8"))
    except OSError as e:
        raise UsageError(f"{args.out}: cannot write ({e.strerror or e})") from None
    print(f"wrote {len(items)} vectors to {args.out} ({encoder.last_docs_per_second:.1f} docs/s on {encoder.device})")


def cmd_info(args: argparse.Namespace) -> None:
    from .distributed import is_sharded
    from .index import open_index

    paths = _index_paths(args.index)
    all_stats = []
    for path in paths:
        index = open_index(path, verify=args.verify)
        if args.verify:
            index.verify()
        all_stats.append(index.stats())
    if args.json:
        print(json.dumps(all_stats[0] if not is_sharded(args.index) else
                         {"path": args.index, "n_shards": len(paths), "n_docs": sum(s["n_docs"] for s in all_stats),
                          "shards": all_stats}, indent=2))
        return
    if is_sharded(args.index):
        print(f"sharded index {args.index}: {len(paths)} shards, {sum(s['n_docs'] for s in all_stats)} live documents")
    for stats in all_stats:
        _print_info(stats)


def _print_info(stats: dict[str, Any]) -> None:
    for key in ("path", "generation", "n_docs", "n_deleted", "n_empty_docs", "n_dims", "n_postings",
                "postings_per_doc", "quantization", "scale", "bytes", "bytes_per_posting", "store_bytes_per_doc"):
        value = stats[key]
        print(f"{key:<20} {value:.4g}" if isinstance(value, float) else f"{key:<20} {value}")
    enc = stats["encoder"] or {}
    print(f"{'encoder':<20} {enc.get('name')} {enc.get('config', {}).get('model')} ({enc.get('fingerprint')})")
    if enc.get("health"):
        from .sae.cli import print_health

        print_health(enc["health"])
    print(f"segments ({len(stats['segments'])}):")
    for seg in stats["segments"]:
        print(f"  {seg['name']}  {seg['n_docs']:>10} docs  {seg['n_deleted']:>8} deleted")
    hist = stats["weight_histogram"]
    top = max(hist["counts"], default=1) or 1
    print("weight histogram:")
    for lo, hi, c in zip(hist["edges"], hist["edges"][1:], hist["counts"]):
        print(f"  [{lo:7.3f}, {hi:7.3f})  {c:>10}  {'#' * round(40 * c / top)}")


def cmd_inspect(args: argparse.Namespace) -> None:
    from .index import open_index
    from .search.dimensions import inspect_dimension, source_spans

    index = open_index(args.index)
    report = inspect_dimension(index, args.term, top=args.top)
    if args.spans:
        from .search import Searcher

        source_spans(index, Searcher(index).encoder, report)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return
    w = report["weights"]
    print(f"{report['term']} (dimension {report['dim']}) in {report['index']}")
    print(f"document frequency   {report['df']} of {report['n_docs']} ({report['df'] / max(report['n_docs'], 1):.3%})")
    if w["quantiles"]:
        print("weight               " + "  ".join(f"q{float(q):g}={v:.3f}" for q, v in w["quantiles"].items())
              + f"  mean={w['mean']:.3f}")
        hist = w["histogram"]
        peak = max(hist["counts"]) or 1
        for lo, hi, c in zip(hist["edges"], hist["edges"][1:], hist["counts"]):
            print(f"  [{lo:7.3f}, {hi:7.3f})  {c:>9}  {'#' * round(30 * c / peak)}")
    sae = report.get("sae")
    if sae:
        print(f"SAE feature          {sae.get('label', '')}  {sae.get('note', '')}".rstrip())
        if sae.get("frequency") is not None:
            print(f"training frequency   {sae['frequency']:.4%}" + ("  (DEAD)" if sae["dead"] else ""))
        for ex in sae.get("examples", []):
            print(f"  {ex['act']:8.3f}  [{ex['id']}]  {ex['snippet']}")
    print(f"top {len(report['top'])} documents:")
    for rank, row in enumerate(report["top"], 1):
        print(f"{rank:>4}  {row['weight']:8.3f}  {row['doc_id']:<20} {_snippet(row['title'], 60)}")
        if row.get("context"):
            print(f"{'':>16}{row['context']}")


REORDER_HELP = ("renumber the documents by recursive graph bisection, so that documents sharing terms sit "
                "together, as PISA and BMP do before indexing (its effect: bench/README.md); equal scores then "
                "rank in that order")


def build_parser() -> argparse.ArgumentParser:
    from .distributed.api import add_arguments as add_ray_arguments
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
    p.add_argument("--reorder", action="store_true", help=REORDER_HELP)
    add_ray_arguments(p, build=True)
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
                       "deleted documents (Lucene's forceMerge); search results do not change (with --reorder, "
                       "ties may rank differently).")
    p.add_argument("index")
    p.add_argument("--max-segments", type=int, default=1, help="segments left (default 1)")
    p.add_argument("--reorder", action="store_true", help=REORDER_HELP)
    p.add_argument("--approx", action="store_true", help="also save the approximate-search structures (default "
                   "n_postings, block_size and keep) in each segment, so `search --approx` memory-maps them instead of "
                   "building them in every process")
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser("check", help="verify an index", description="Check every file's sha256 and every posting "
                       "list's bounds and order; exit code 2 and the file at fault on any problem.")
    p.add_argument("index")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("search", help="search an index", description="Exact top-k search; the query is encoded with "
                       "the encoder recorded in the index. Query texts on the command line print a table (or --json) "
                       "with each hit's stored title and text; --topics FILE writes a run for every query in FILE, "
                       "as Pyserini's `search` does.")
    p.add_argument("index")
    p.add_argument("query", nargs="*", help="one or more query texts")
    p.add_argument("-k", "--hits", dest="k", type=at_least(1), default=10, metavar="N",
                   help="results per query (default 10)")
    p.add_argument("--explain", action="store_true", help="show the dimensions behind each score")
    p.add_argument("--explain-terms", type=at_least(1), default=5, metavar="N",
                   help="dimensions shown per hit in the --explain table (--json has all)")
    p.add_argument("--snippet-chars", type=at_least(0), default=160, metavar="N",
                   help="characters of stored text shown per hit (default 160)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one {query, hits} entry per query")
    g = p.add_argument_group("batch retrieval (Pyserini style)")
    g.add_argument("--topics", metavar="FILE", help="queries: .jsonl ({_id, text}), .tsv (id<TAB>text) or a BEIR folder")
    _add_tsv_header_option(g)
    g.add_argument("--output", metavar="FILE", help="run file, written atomically (default: standard output)")
    g.add_argument("--format", choices=("trec", "msmarco", "jsonl"), default="trec", help="run format (default trec)")
    g.add_argument("--run-tag", default="sparseir", help="TREC run tag (default sparseir)")
    g.add_argument("--threads", type=at_least(1), metavar="N", help="search threads (default: all cores)")
    g.add_argument("--remove-query", action="store_true",
                   help="drop a hit whose id equals its query's id (off by default, as in Pyserini)")
    add_approx_arguments(p)
    add_ray_arguments(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="evaluate an index on a dataset's qrels",
                       description="Search every judged query and report nDCG@10, R@100 and RR@10 (reciprocal rank, "
                       "often called MRR@10) with ir-measures. Convention: as BEIR's evaluation, a retrieved "
                       "document whose id equals the query id is ignored; --keep-query scores the run as it is "
                       "(Pyserini's default). Qrels matching no query or no indexed document are an error; a "
                       "partial match is a warning with counts.")
    p.add_argument("index")
    p.add_argument("dataset", help="BEIR folder or irds:<id> with queries and qrels")
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument("-k", "--hits", dest="k", type=at_least(1), default=1000, metavar="N",
                   help="retrieval depth (default 1000)")
    p.add_argument("--metrics", default="nDCG@10,R@100,RR@10", help="ir-measures names, comma-separated")
    p.add_argument("--threads", type=at_least(1), metavar="N", help="search threads (default: all cores)")
    p.add_argument("--keep-query", action="store_true",
                   help="keep a document whose id equals the query id (default: ignored, as in BEIR)")
    p.add_argument("--run-out", metavar="FILE", help="also write the evaluated run in TREC format to this file")
    p.add_argument("--json", action="store_true")
    add_approx_arguments(p)
    add_ray_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("encode", help="write sparse vectors as JSONL (Pyserini JsonVectorCollection)",
                       description='Write {"id", "contents", "vector": {term: weight}} lines, the format of '
                       "Pyserini's JsonVectorCollection, to cross-check against Lucene.")
    _add_corpus_options(p)
    _add_encoder_options(p)
    p.add_argument("--out", required=True, help="output .jsonl file (written atomically)")
    p.add_argument("--queries", action="store_true", help="encode the dataset's queries instead of its documents")
    p.add_argument("--quantize-factor", type=positive, metavar="F",
                   help="write round(weight * F) integers, as Pyserini impact indexes expect (e.g. 100)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("info", help="index statistics", description="Commit generation, segments, live and "
                       "deleted documents, dimensions, postings, bytes and document-store bytes per document.")
    p.add_argument("index")
    p.add_argument("--verify", action="store_true", help="check every array's sha256")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("inspect", help="browse one dimension: its top documents, frequency and weights",
                       description="One dimension (a term, or an SAE feature: f12, 12 or its label) of an index: "
                       "the documents where it weighs most (its posting list by impact, titles from the document "
                       "store), its document frequency and weight distribution; for an SAE index the feature's "
                       "label, training frequency and top activating texts. --spans also shows, for each top "
                       "document, the words the weight comes from (loads the encoder).")
    p.add_argument("index")
    p.add_argument("term", metavar="TERM_OR_FEATURE")
    p.add_argument("--top", type=at_least(1), default=10, metavar="N", help="documents listed (default 10)")
    p.add_argument("--spans", action="store_true", help="re-encode the top documents to show their source words")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the command unwinds as on Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        args.func(args)
    except SparseirError as e:
        print(f"sparseir: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparseir: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("sparseir: terminated", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
