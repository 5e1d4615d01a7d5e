"""SPLADE fine-tuning for MLM and LLM (LoRA) backbones, with the project's own small trainer.

Objective (Formal et al., SPLADE v2): a contrastive loss over in-batch negatives (and, when asked,
one BM25 hard negative per query), ``CE(q @ d.T)``, plus FLOPS regularisation
``sum_j (mean_i w_ij)^2`` on queries and documents with separate weights, ramped up quadratically
over the first ``reg_warmup`` of the run. Another query's positive that is also judged relevant to
this query is masked out of its negatives.

Why not sentence-transformers' ``SparseEncoderTrainer``/``SpladeLoss``: its ``MLMTransformer``
loads ``AutoModelForMaskedLM`` only, so a decoder-only LM with bidirectional attention, MNTP's
shifted pooling and a LoRA adapter (our LLM path) cannot be expressed in it; one trainer here
uses exactly the encoders' own inputs, masks and pooling (:mod:`sparseir.encoders`), so what is
trained is what is indexed, for both families, with the same atomic checkpoints as MNTP.

Output: for an MLM, a model folder that ``MLMSparseEncoder(OUT)`` loads; for an LLM, a LoRA adapter
(continuing the MNTP adapter when one is given) that ``LLMSparseEncoder(BASE, adapter=OUT)`` loads.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .._fs import atomic_dir
from ..timing import peak_rss_bytes
from ..errors import UsageError
from . import TrainError
from .checkpoint import plot_losses, remove_checkpoint, resume, save_checkpoint, warmup_linear_decay
from .data import Pair

TRAIN_META = "sparseir_train.json"


@dataclass
class SpladeConfig:
    steps: int = 100
    batch_size: int = 8
    lr: float = 5e-5
    query_flops: float = 5e-4
    doc_flops: float = 3e-4
    reg_warmup: float = 0.3
    warmup: float = 0.1
    max_length: int = 128
    query_max_length: int = 32
    hard_negatives: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    seed: int = 0
    checkpoint_every: int = 50

    def validate(self) -> None:
        for name in ("steps", "lora_r", "lora_alpha", "checkpoint_every", "max_length", "query_max_length"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise UsageError(f"--batch-size must be >= 2 (in-batch negatives), got {self.batch_size}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        for name in ("query_flops", "doc_flops"):
            if not 0 <= getattr(self, name) < math.inf:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("reg_warmup", "warmup", "lora_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")


class Backbone:
    """A trainable encoder: ``encode(texts, is_query) -> [batch, vocab]`` with gradients, and its state."""

    model: torch.nn.Module
    device: str
    encode: Callable[[list[str], bool], torch.Tensor]
    info: dict[str, Any]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def publish(self, folder: Path) -> None:
        raise NotImplementedError


class MLMBackbone(Backbone):
    """Full fine-tuning of a masked LM, pooled as :class:`sparseir.encoders.MLMSparseEncoder` pools."""

    def __init__(self, path: str, config: SpladeConfig, device: str) -> None:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        from ..encoders.llm import declared_architectures
        from ..encoders.mlm import load_pretrained

        archs = declared_architectures(path)
        if "CausalLM" in archs or any(Path(path).glob("*.gguf")) or path.endswith(".gguf"):
            raise TrainError(f"{path} is a causal LM ({archs or 'GGUF'}), not a masked LM; use --backbone llm")
        self.tokenizer = load_pretrained(AutoTokenizer, path, "tokenizer")
        self.model = load_pretrained(AutoModelForMaskedLM, path, "masked-LM model").to(device)
        self.device, self.config = device, config
        self.info = {"backbone": "mlm", "model": path}

    def encode(self, texts: list[str], is_query: bool) -> torch.Tensor:
        n = self.config.query_max_length if is_query else self.config.max_length
        t = self.tokenizer(texts, padding=True, truncation=True, max_length=n, return_tensors="pt").to(self.device)
        w = torch.log1p(torch.relu(self.model(**t).logits)) * t["attention_mask"].unsqueeze(-1)
        return w.amax(1)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def publish(self, folder: Path) -> None:
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))


class LLMBackbone(Backbone):
    """LoRA on a causal LM used as :class:`sparseir.encoders.llm.LLMSparseEncoder` uses it (bidirectional
    attention, MNTP-shifted pooling by default), continuing an MNTP adapter when one is given."""

    def __init__(self, path: str, config: SpladeConfig, device: str, *, adapter: str | None = None,
                 attention: str = "bidirectional", mode: str | None = None) -> None:
        from peft import LoraConfig, PeftModel, get_peft_model

        from ..encoders.base import module_fingerprint
        from ..encoders.llm import LLMSparseEncoder, check_adapter, find_gguf, lm_head, load_causal_lm, to_device
        from ..encoders.mlm import resolve_model_path
        from .mntp import LORA_TARGETS

        path, gguf_file = find_gguf(resolve_model_path(path), None)
        tokenizer, model = load_causal_lm(path, gguf_file)
        fingerprint = module_fingerprint(model)
        if adapter is not None:
            check_adapter(adapter, fingerprint)
            model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                     lora_dropout=config.lora_dropout,
                                                     target_modules=list(LORA_TARGETS)))
        # The input builder (templates, shifted pool positions, vocabulary masks) of the frozen base encoder.
        self.spec = LLMSparseEncoder(path, gguf_file=gguf_file, attention=attention, mode=mode, device="cpu",
                                     max_length=config.max_length, query_max_length=config.query_max_length)
        if self.spec.score == "pmi":
            raise TrainError("training uses a fixed score; choose a mode whose score is logprob (plain or echo)")
        self.model = model
        self.base = to_device(model.get_base_model(), device)
        self.head = lm_head(self.base)
        keep = torch.ones(self.spec.vocab, device=device)
        keep[self.spec._excluded.to(device)] = 0
        self.keep, self.device = keep, device
        self.info = {"backbone": "llm", "model": path, "gguf_file": gguf_file, "base_fingerprint": fingerprint,
                     "attention": self.spec.attention, "mode": self.spec.mode, "init_adapter": adapter}

    def encode(self, texts: list[str], is_query: bool) -> torch.Tensor:
        from ..encoders.llm import hidden_states

        input_ids, attention, pool = (t.to(self.device) for t in self.spec.build_inputs(texts, is_query))
        hidden = hidden_states(self.base, input_ids, attention, self.spec.bidirectional)
        rows = pool.nonzero()[:, 0]
        w = torch.log1p(torch.relu(self.spec.scores(self.head(hidden[pool]))))
        pooled = torch.stack([w[rows == i].amax(0) for i in range(len(texts))])
        return pooled * self.keep

    def trainable_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.model)

    def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, state)

    def publish(self, folder: Path) -> None:
        from ..encoders.llm import ADAPTER_META

        self.model.save_pretrained(str(folder))
        meta = {"objective": "splade", **{k: self.info[k] for k in ("attention", "base_fingerprint", "mode")},
                "base_model": self.info["model"], "gguf_file": self.info["gguf_file"]}
        (folder / ADAPTER_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def make_step_batch(by_query: dict[str, list[Pair]], step: int, config: SpladeConfig,
                    negatives: dict[str, list[str]] | None) -> tuple[list[Pair], list[str]]:
    """``batch_size`` pairs with distinct queries (``by_query``: the pairs grouped by query id), and one hard
    negative id per query (or none), drawn from ``seed`` and ``step`` only, so a resumed run sees the same
    batches."""
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    qids = sorted(by_query)
    chosen = torch.randperm(len(qids), generator=g)[: config.batch_size].tolist()
    batch = [by_query[qids[i]][int(torch.randint(len(by_query[qids[i]]), (1,), generator=g))] for i in chosen]
    hard = []
    if negatives is not None:
        for p in batch:
            cands = negatives.get(p.qid) or []
            if cands:
                hard.append(cands[int(torch.randint(len(cands), (1,), generator=g))])
    return batch, hard


def splade_loss(q: torch.Tensor, d: torch.Tensor, false_negative: torch.Tensor, config: SpladeConfig,
                reg_scale: float) -> tuple[torch.Tensor, dict[str, float]]:
    """In-batch contrastive loss (query ``i``'s positive is document ``i``) plus weighted FLOPS terms."""
    scores = (q @ d.T).masked_fill(false_negative, float("-inf"))
    rank = torch.nn.functional.cross_entropy(scores, torch.arange(len(q), device=q.device))
    flops_q = (q.mean(0) ** 2).sum()
    flops_d = (d.mean(0) ** 2).sum()
    loss = rank + reg_scale * (config.query_flops * flops_q + config.doc_flops * flops_d)
    parts = {"loss": loss.item(), "rank": rank.item(), "flops_q": flops_q.item(), "flops_d": flops_d.item(),
             "nnz_q": (q > 0).sum(1).float().mean().item(), "nnz_d": (d > 0).sum(1).float().mean().item()}
    return loss, parts


def train(backbone: Backbone, pairs: list[Pair], corpus: dict[str, str], out: str | Path,
          config: SpladeConfig | None = None, *, negatives: dict[str, list[str]] | None = None,
          restart: bool = False, show_progress_bar: bool = True) -> dict[str, Any]:
    """Train ``backbone`` on ``pairs`` and publish it at ``out`` (atomically); returns the run's metadata."""
    config = config or SpladeConfig()
    config.validate()
    by_query: dict[str, list[Pair]] = {}
    for p in pairs:
        by_query.setdefault(p.qid, []).append(p)
    if len(by_query) < 2:
        raise TrainError("training needs pairs of at least 2 distinct queries (in-batch negatives)")
    positives = {q: {p.doc_id for p in ps} for q, ps in by_query.items()}
    params = [p for p in backbone.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    run_config = {**asdict(config), **{k: v for k, v in backbone.info.items() if k != "init_adapter"},
                  "n_pairs": len(pairs)}
    state = resume(out, run_config, optimizer, backbone.load_trainable, restart=restart)
    step, history, elapsed = state.get("step", 0), state.get("history", []), state.get("seconds", 0.0)
    scheduler = warmup_linear_decay(optimizer, config.steps, config.warmup, step)
    backbone.model.train()
    t0 = time.perf_counter() - elapsed
    ramp = max(1, int(config.reg_warmup * config.steps))
    with tqdm(total=config.steps, initial=step, desc="SPLADE", unit="step", disable=not show_progress_bar) as bar:
        while step < config.steps:
            batch, hard = make_step_batch(by_query, step, config, negatives)
            doc_ids = [p.doc_id for p in batch] + hard
            q = backbone.encode([p.query for p in batch], True)
            d = backbone.encode([p.doc for p in batch] + [corpus[h] for h in hard], False)
            false_negative = torch.tensor([[j != i and doc_ids[j] in positives[p.qid] for j in range(len(doc_ids))]
                                           for i, p in enumerate(batch)], device=q.device)
            loss, parts = splade_loss(q, d, false_negative, config, min(1.0, ((step + 1) / ramp) ** 2))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            history.append({k: round(v, 5) for k, v in parts.items()})
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.3f}", nnz_d=f"{parts['nnz_d']:.0f}")
            if step % config.checkpoint_every == 0 and step < config.steps:
                save_checkpoint(out, backbone.trainable_state(), optimizer,
                                {"config": run_config, "step": step, "history": history,
                                 "seconds": time.perf_counter() - t0})
    seconds = time.perf_counter() - t0
    meta = {"objective": "splade", **backbone.info, "config": asdict(config), "n_pairs": len(pairs),
            "n_queries": len(positives), "steps": step, "seconds": round(seconds, 2),
            "steps_per_second": round(step / seconds, 4) if seconds > 0 else None,
            "peak_memory_bytes": (torch.cuda.max_memory_allocated() if str(backbone.device).startswith("cuda")
                                  else peak_rss_bytes()),
            "loss_first": history[0]["loss"], "loss_last": history[-1]["loss"]}
    with atomic_dir(out) as tmp:
        backbone.publish(tmp)
        (tmp / "loss.json").write_text(json.dumps(history), encoding="utf-8")
        meta["loss_png"] = plot_losses([h["loss"] for h in history], tmp / "loss.png", "SPLADE fine-tuning")
        (tmp / TRAIN_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    remove_checkpoint(out)
    return meta
