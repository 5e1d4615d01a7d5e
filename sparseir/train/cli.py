"""``sparseir llm adapt`` and ``sparseir train``: a thin command-line layer over :mod:`sparseir.train`.

Nothing heavy is imported here; torch, transformers and peft load inside the command functions.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``llm adapt`` and ``train`` to the ``sparseir`` command line."""
    p = subparsers.add_parser("llm", help="decoder-only LLMs as masked LMs (LLM2Vec): MNTP adaptation")
    sub = p.add_subparsers(dest="llm_command", required=True)
    a = sub.add_parser(
        "adapt", help="masked next-token prediction with LoRA on a corpus; writes an adapter folder",
        description="LLM2Vec's MNTP: bidirectional attention, ~20%% of tokens masked, token i predicted from "
        "the output at i-1; only LoRA weights train. Resumes from OUT's checkpoint (.OUT.checkpoint) when the "
        "settings match. Load the result with "
        "LLMSparseEncoder(MODEL, adapter=OUT).")
    a.add_argument("model", help="causal LM folder, .gguf file or hub id")
    a.add_argument("--corpus", required=True, help="BEIR folder, .jsonl(.gz) or .tsv whose text to adapt on")
    a.add_argument("--out", required=True, help="adapter folder to write (published atomically)")
    a.add_argument("--mask-ratio", type=float, default=0.2, help="fraction of tokens masked (default 0.2)")
    a.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    a.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4; LLM2Vec 5e-5)")
    a.add_argument("--max-length", type=int, default=128, help="tokens per text (default 128; LLM2Vec 512)")
    a.add_argument("--batch-size", type=int, default=8, help="texts per step (default 8; LLM2Vec 32)")
    a.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    a.add_argument("--lora-alpha", type=int, default=32, help="LoRA alpha (default 32)")
    a.add_argument("--lora-dropout", type=float, default=0.05, help="LoRA dropout (default 0.05)")
    a.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (default 50)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--limit", type=int, help="adapt on the first N documents only")
    a.add_argument("--restart", action="store_true", help="discard OUT's checkpoint and start afresh")
    a.add_argument("--device", help="torch device; default cuda if available, else cpu")
    a.set_defaults(func=cmd_adapt)

    t = subparsers.add_parser(
        "train", help="SPLADE fine-tuning of an MLM or an LLM (LoRA) on a BEIR train split",
        description="Contrastive loss over in-batch negatives (plus one BM25 hard negative per query with "
        "--hard-negatives) and FLOPS regularisation with separate query and document weights. An MLM is fully "
        "fine-tuned into a model folder (load it as mlm:OUT); an LLM trains a LoRA adapter (continuing --adapter, "
        "e.g. from `sparseir llm adapt`) loaded with LLMSparseEncoder(MODEL, adapter=OUT). Resumes from OUT's "
        "checkpoint (.OUT.checkpoint) when the settings match.")
    t.add_argument("model", help="masked LM folder (--backbone mlm) or causal LM folder/.gguf (--backbone llm)")
    t.add_argument("--data", required=True, help="BEIR folder with corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv")
    t.add_argument("--split", default="train", help="qrels split to train on (default train)")
    t.add_argument("--out", required=True, help="output folder (published atomically)")
    t.add_argument("--backbone", choices=("auto", "mlm", "llm"), default="auto",
                   help="model family (default: detected; a mismatch is an error)")
    t.add_argument("--adapter", help="LLM: start from this MNTP adapter (its LoRA weights keep training)")
    t.add_argument("--attention", choices=("causal", "bidirectional"), default="bidirectional",
                   help="LLM attention (default bidirectional)")
    t.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    t.add_argument("--batch-size", type=int, default=8, help="queries per step; in-batch negatives (default 8)")
    t.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default 5e-5)")
    t.add_argument("--query-flops", type=float, default=5e-4, help="FLOPS weight on queries (default 5e-4)")
    t.add_argument("--doc-flops", type=float, default=3e-4, help="FLOPS weight on documents (default 3e-4)")
    t.add_argument("--hard-negatives", action="store_true", help="add one BM25 hard negative per query")
    t.add_argument("--max-length", type=int, default=128, help="document tokens (default 128)")
    t.add_argument("--query-max-length", type=int, default=32, help="query tokens (default 32)")
    t.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (default 50)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--restart", action="store_true", help="discard OUT's checkpoint and start afresh")
    t.add_argument("--device", help="torch device; default cuda if available, else cpu")
    t.set_defaults(func=cmd_train)


def _positive(value: int | None, option: str) -> None:
    from ..errors import UsageError

    if value is not None and value < 1:
        raise UsageError(f"{option} must be >= 1, got {value}")


def _texts(spec: str, limit: int | None) -> list[str]:
    from itertools import islice

    from ..corpus import load_corpus

    return [d.text for d in islice(load_corpus(spec), limit)]


def cmd_adapt(args: argparse.Namespace) -> None:
    from .mntp import MNTPConfig, adapt

    _positive(args.limit, "--limit")
    config = MNTPConfig(mask_ratio=args.mask_ratio, steps=args.steps, lr=args.lr, max_length=args.max_length,
                        batch_size=args.batch_size, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                        lora_dropout=args.lora_dropout, checkpoint_every=args.checkpoint_every, seed=args.seed)
    config.validate()  # before the corpus and the model load
    meta = adapt(args.model, _texts(args.corpus, args.limit), args.out, config, device=args.device,
                 restart=args.restart)
    print(json.dumps({k: meta[k] for k in ("steps", "steps_per_second", "loss_first", "loss_last",
                                            "loss_last_10_mean", "n_texts")}))
    print(f"adapter written to {args.out} (loss curve: loss.json, loss.png)")


def _backbone_kind(model: str, requested: str) -> str:
    if requested != "auto":
        return requested
    from pathlib import Path

    from ..encoders.llm import declared_architectures

    p = Path(model)
    return "llm" if p.suffix == ".gguf" or any(p.glob("*.gguf")) or "CausalLM" in declared_architectures(model) \
        else "mlm"


def cmd_train(args: argparse.Namespace) -> None:
    from pathlib import Path

    import torch

    from .data import bm25_negatives, load_pairs
    from .splade import LLMBackbone, MLMBackbone, SpladeConfig, train

    config = SpladeConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, query_flops=args.query_flops,
                          doc_flops=args.doc_flops, hard_negatives=args.hard_negatives, max_length=args.max_length,
                          query_max_length=args.query_max_length, checkpoint_every=args.checkpoint_every,
                          seed=args.seed)
    config.validate()
    pairs, corpus = load_pairs(args.data, args.split)
    negatives = None
    if args.hard_negatives:
        out = Path(args.out)
        negatives = bm25_negatives(pairs, corpus, out.parent / f".{out.name}.bm25")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if _backbone_kind(args.model, args.backbone) == "llm":
        backbone = LLMBackbone(args.model, config, device, adapter=args.adapter, attention=args.attention)
    else:
        backbone = MLMBackbone(args.model, config, device)
    meta = train(backbone, pairs, corpus, args.out, config, negatives=negatives, restart=args.restart)
    print(json.dumps({k: meta[k] for k in ("backbone", "steps", "steps_per_second", "loss_first", "loss_last",
                                            "n_pairs", "n_queries")}))
    print(f"trained model written to {args.out} (loss curve: loss.json, loss.png)")
