"""``sparseir sae collect|train|inspect``: a thin command-line layer over :mod:`sparseir.sae`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sparseir.argtypes import at_least, non_negative, positive
from sparseir.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sae`` and its subcommands to the ``sparseir`` command line."""
    p = subparsers.add_parser("sae", help="sparse autoencoder dictionaries: collect activations, train, inspect")
    sub = p.add_subparsers(dest="sae_command", required=True)

    c = sub.add_parser("collect", help="write base-model activations of a corpus to a memmapped store")
    c.add_argument("corpus", help="BEIR folder, .jsonl, .tsv or irds:<id>")
    c.add_argument("out", help="activation store directory (e.g. data/cache/sae/scifact-emb)")
    c.add_argument("--model", required=True, help="base model path (sentence-transformers or transformers)")
    c.add_argument("--source", choices=("embedding", "hidden"), default="embedding",
                   help="'embedding': one sentence embedding per text; 'hidden': every token's hidden state")
    c.add_argument("--layer", type=int, default=-1, help="hidden-state layer (0 = embeddings, -1 = last)")
    c.add_argument("--max-length", type=at_least(1), default=256, help="token limit per text for 'hidden'")
    c.add_argument("--sentences", action="store_true", help="also collect every document sentence")
    c.add_argument("--queries", help="also collect these queries (BEIR folder or queries file)")
    c.add_argument("--limit", type=at_least(1), help="use only the first N documents")
    c.add_argument("--batch-size", type=at_least(1), help="texts per forward pass (default 64 embedding, 16 hidden)")
    c.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage type")
    c.add_argument("--device", help="torch device; default cuda if available, else cpu")
    c.set_defaults(func=cmd_collect)

    t = sub.add_parser("train", help="train a sparse autoencoder on a store; writes a checkpoint directory")
    t.add_argument("activations", help="store directory from `sparseir sae collect`")
    t.add_argument("out", help="SAE checkpoint directory (resumed when it holds the same run)")
    t.add_argument("--n-latents", type=at_least(1), default=4096, help="dictionary size (default 4096)")
    t.add_argument("-k", "--k", type=at_least(1), default=32, help="active latents per input (default 32)")
    t.add_argument("--activation", choices=("topk", "batchtopk"), default="topk")
    t.add_argument("--matryoshka", help="comma-separated nested prefix sizes, e.g. 256,1024")
    t.add_argument("--aux-coef", type=non_negative, default=1 / 32, help="AuxK loss weight (0 disables; default 1/32)")
    t.add_argument("--aux-k", type=at_least(1), help="dead latents used by AuxK (default d_in/2)")
    t.add_argument("--dead-after", type=at_least(1), default=100_000,
                   help="samples without firing before a latent is dead")
    t.add_argument("--sim-coef", type=non_negative, default=0.0,
                   help="weight of the retrieval-aware in-batch similarity distillation (default 0)")
    t.add_argument("--batch-size", type=at_least(1), default=1024)
    t.add_argument("--epochs", type=positive, default=1.0)
    t.add_argument("--lr", type=positive, help="default 2e-4 / sqrt(n_latents / 2^14)")
    t.add_argument("--seed", type=at_least(0), default=0)
    t.add_argument("--no-center", action="store_true",
                   help="scale the inputs without removing their mean (keeps the direction sentence embeddings "
                   "share; see bench/results/sae_full_*.md)")
    t.add_argument("--max-steps", type=at_least(1), help="stop after this many steps (resume later)")
    t.add_argument("--no-resume", action="store_true", help="start afresh even if OUT holds a checkpoint")
    t.add_argument("--device", help="torch device; default cuda if available, else cpu")
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("inspect", help="an SAE's health (FVU, L0, dead and dense latents), or one feature: label, "
                       "frequency, dead or not, top activating texts")
    i.add_argument("sae", help="SAE checkpoint directory")
    i.add_argument("feature", nargs="?",
                   help="feature number, or a word to list the features whose label contains it (default: health)")
    i.add_argument("--plot", metavar="PNG", help="write the log10 activation-frequency histogram (dead and dense "
                   "latents marked) to this PNG file")
    i.add_argument("--examples", type=at_least(1), default=8, help="top activating texts shown (default 8)")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_inspect)


def cmd_collect(args: argparse.Namespace) -> None:
    from sparseir.sae.collect import (
        EmbeddingSource,
        HiddenStateSource,
        collect_embeddings,
        collect_hidden,
        corpus_records,
    )

    records = corpus_records(args.corpus, queries=args.queries, sentences=args.sentences, limit=args.limit)
    extra = {"corpus": args.corpus, "sentences": args.sentences, "queries": args.queries, "limit": args.limit}
    if args.source == "embedding":
        src = EmbeddingSource(args.model, device=args.device)
        out = collect_embeddings(src, records, args.out, batch_size=args.batch_size or 64, dtype=args.dtype,
                                 extra_meta=extra)
    else:
        src = HiddenStateSource(args.model, layer=args.layer, max_length=args.max_length, device=args.device)
        out = collect_hidden(src, records, args.out, batch_size=args.batch_size or 16, dtype=args.dtype,
                             extra_meta=extra)
    meta = json.loads((Path(out) / "meta.json").read_text())
    print(f"wrote {meta['n_rows']} x {meta['dim']} {args.source} activations of {len(records)} texts to {out}")


def cmd_train(args: argparse.Namespace) -> None:
    from sparseir.sae.finalize import finalize_sae
    from sparseir.sae.model import SAEConfig
    from sparseir.sae.store import ActivationStore
    from sparseir.sae.train import TrainConfig, train_sae, trainer_lock

    store = ActivationStore(args.activations)
    try:
        matryoshka = tuple(int(m) for m in args.matryoshka.split(",")) if args.matryoshka else None
    except ValueError:
        raise UsageError(f"--matryoshka must be comma-separated integers, got {args.matryoshka!r}") from None
    try:
        sae_cfg = SAEConfig(d_in=store.dim, n_latents=args.n_latents, k=args.k, activation=args.activation,
                            matryoshka=matryoshka, aux_k=args.aux_k, aux_coef=args.aux_coef,
                            dead_after=args.dead_after, sim_coef=args.sim_coef)
    except ValueError as e:  # the settings' own checks (k <= --n-latents, increasing --matryoshka sizes)
        raise UsageError(f"sae train: {e}") from None
    train_cfg = TrainConfig(batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, seed=args.seed,
                            center=not args.no_center)
    with trainer_lock(args.out):  # held through finalize_sae, which writes into the same folder
        model, info = train_sae(store, args.out, sae_cfg, train_cfg, device=args.device,
                                resume=not args.no_resume, max_steps=args.max_steps, lock=False)
        if info["step"] < info["train"]["total_steps"]:
            print(f"stopped at step {info['step']} of {info['train']['total_steps']}; run again to resume")
            return
        diag = finalize_sae(args.out, model, info, store)
    print(f"SAE written to {args.out}: FVU {diag['fvu']:.4f}, L0 {diag['l0']:.1f}, "
          f"dead {diag['dead_frac']:.2%} ({diag['n_dead']} of {diag['n_latents']})")


def feature_report(sae: str | Path, feature: int, n_examples: int = 8) -> dict:
    """Label, activation frequency, dead flag and top examples of one feature."""
    from sparseir.sae.checkpoint import DIAGNOSTICS, LABELS, read_config, read_json

    config = read_config(sae)
    n = config["sae"]["n_latents"]
    if not 0 <= feature < n:
        raise UsageError(f"feature must be in [0, {n}), got {feature}")
    labels = read_json(sae, LABELS)
    diag = read_json(sae, DIAGNOSTICS)
    if labels is None or diag is None:
        raise UsageError(f"{sae} has no labels/diagnostics yet; finish `sparseir sae train` first")
    freq = diag["freq"][feature]
    return {"feature": feature, "label": labels["labels"][feature], "frequency": freq, "dead": freq == 0,
            "label_method": labels["method"], "examples": labels["examples"][feature][:n_examples]}


def cmd_inspect(args: argparse.Namespace) -> None:
    from sparseir.sae.checkpoint import DIAGNOSTICS, LABELS, read_config, read_json

    if args.plot or args.feature is None:
        read_config(args.sae)  # a clear error for a folder that is no SAE
        diagnostics = read_json(args.sae, DIAGNOSTICS)
        if diagnostics is None:
            raise UsageError(f"{args.sae} has no {DIAGNOSTICS} yet; finish `sparseir sae train` first")
        if args.plot:
            import numpy as np

            from sparseir._fs import atomic_write
            from sparseir.sae.diagnostics import freq_histogram_png

            window = diagnostics.get("dead_window_rows", diagnostics["n_rows"])
            atomic_write(args.plot, freq_histogram_png(np.asarray(diagnostics["freq"]), window))
            print(f"wrote the activation-frequency histogram to {args.plot}")
        if args.feature is None:
            if args.json:
                print(json.dumps({k: v for k, v in diagnostics.items() if k != "freq"}, indent=1))
            else:
                print_health(diagnostics)
            return
    if not args.feature.isdigit():
        labels = (read_json(args.sae, LABELS) or {}).get("labels", [])
        hits = [lab for lab in labels if args.feature.lower() in lab.lower()]
        print("\n".join(hits) if hits else f"no feature label contains {args.feature!r}")
        return
    rep = feature_report(args.sae, int(args.feature), args.examples)
    if args.json:
        print(json.dumps(rep, indent=1, ensure_ascii=False))
        return
    print(f"feature {rep['feature']}: {rep['label']}")
    print(f"activation frequency {rep['frequency']:.4%}" + ("  (DEAD: never fires)" if rep["dead"] else ""))
    print(f"label method: {rep['label_method']}")
    for ex in rep["examples"]:
        print(f"  {ex['act']:8.3f}  [{ex['id']}]  {ex['snippet']}")


def print_health(h: dict[str, Any]) -> None:
    """An SAE's training diagnostics, as the index (or the SAE folder) keeps them."""
    print(f"{'SAE health':<20} FVU {h['fvu']:.4f}, mean L0 {h['l0']:.1f}, dead {h['dead_frac']:.2%} ({h['n_dead']} "
          f"of {h['n_latents']} latents never active over {h.get('dead_window_rows', h.get('n_rows'))} rows), dense "
          f"{h['dense_frac']:.2%} (active on > {h.get('dense_threshold', 0.1):g} of rows)")
    if h.get("train_dead_frac") is not None:
        print(f"{'':<20} training: dead {h['train_dead_frac']:.2%} (no activation over the last "
              f"{h.get('train_dead_after', '?')} samples)")
    hist = h.get("freq_histogram")
    if hist:
        peak = max(hist["counts"] + [hist["dead"]]) or 1
        print(f"{'':<20} log10 activation frequency of the latents:")
        print(f"{'':<22}{'dead':>15}  {hist['dead']:>7}  {'#' * round(30 * hist['dead'] / peak)}")
        edges = hist["log10_edges"]
        for lo, hi, c in zip(edges, edges[1:], hist["counts"]):
            if c:
                print(f"{'':<22}[{lo:5.2f}, {hi:5.2f})  {c:>7}  {'#' * round(30 * c / peak)}")
