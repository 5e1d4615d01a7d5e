"""Masked next-token prediction (MNTP, LLM2Vec step 2): turn a causal LM into a masked LM with LoRA.

With bidirectional attention (:func:`sparseir.encoders.llm.hidden_states`), about ``mask_ratio`` of
each text's tokens are corrupted as in BERT (80% the mask token, 10% a random token, 10% kept) and
token ``i`` is predicted from the output at position ``i - 1`` through the LM head. Only LoRA
weights train (``peft``). Each step's batch and mask are drawn from ``seed`` and the step number,
so a resumed run continues exactly where the killed one stopped. The adapter is published with
:func:`sparseir._fs.atomic_dir` together with ``sparseir_adapter.json`` (base model, its weight
fingerprint, settings, loss curve), ``loss.json`` and ``loss.png``; ``LLMSparseEncoder(...,
adapter=DIR)`` loads it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .._fs import atomic_dir
from ..timing import peak_rss_bytes
from ..encoders.base import module_fingerprint
from ..encoders.llm import ADAPTER_META, find_gguf, hidden_states, lm_head, load_causal_lm, to_device
from ..encoders.mlm import resolve_model_path
from ..errors import UsageError
from . import TrainError
from .checkpoint import plot_losses, remove_checkpoint, resume, save_checkpoint, warmup_linear_decay

#: LLM2Vec's LoRA targets for Llama/Mistral-style blocks.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class MNTPConfig:
    """LLM2Vec's knobs (its defaults: mask ratio 0.2, LoRA r 16, lr 5e-5, 512 tokens, batch 32)."""

    mask_ratio: float = 0.2
    steps: int = 200
    lr: float = 1e-4
    max_length: int = 128
    batch_size: int = 8
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    warmup: float = 0.1
    seed: int = 0
    checkpoint_every: int = 50
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))

    def validate(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise UsageError(f"--mask-ratio must be in (0, 1), got {self.mask_ratio}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise UsageError(f"--warmup must be in [0, 1), got {self.warmup}")
        if not 0 <= self.lora_dropout < 1:
            raise UsageError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        for name in ("steps", "batch_size", "lora_r", "lora_alpha", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 4:
            raise UsageError(f"--max-length must be >= 4, got {self.max_length}")


def mask_token_id(tokenizer) -> int:
    """The tokenizer's mask token, else ``"_"`` as LLM2Vec uses for Llama and Mistral."""
    if tokenizer.mask_token_id is not None:
        return tokenizer.mask_token_id
    return tokenizer("_", add_special_tokens=False)["input_ids"][0]


def tokenize_corpus(texts: list[str], tokenizer, max_length: int, start: list[int]) -> list[list[int]]:
    """Each text's ids, truncated, after ``start`` (a BOS): position 0 predicts the first token."""
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length - len(start))["input_ids"]
    return [start + row for row in ids if len(row) >= 2]


def make_batch(rows: list[list[int]], step: int, config: MNTPConfig, mask_id: int, vocab: int, pad_id: int,
               n_start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention, targets, positions)`` for ``step``, drawn from ``seed`` and ``step`` only.

    ``positions`` is ``[n, 2]`` (row, token index) of the masked tokens; ``targets`` their true ids.
    """
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    pick = torch.randint(len(rows), (config.batch_size,), generator=g).tolist()
    batch = [rows[i] for i in pick]
    seq = max(map(len, batch))
    input_ids = torch.full((len(batch), seq), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), seq), dtype=torch.long)
    for i, row in enumerate(batch):
        input_ids[i, :len(row)] = torch.tensor(row)
        attention[i, :len(row)] = 1
    maskable = attention.bool().clone()
    maskable[:, :n_start] = False
    chosen = (torch.rand(input_ids.shape, generator=g) < config.mask_ratio) & maskable
    for i in range(len(batch)):  # at least one masked token per text
        if not chosen[i].any():
            chosen[i, n_start + int(torch.randint(len(batch[i]) - n_start, (1,), generator=g))] = True
    positions = chosen.nonzero()
    targets = input_ids[chosen].clone()
    roll = torch.rand(len(targets), generator=g)
    corrupted = targets.clone()
    corrupted[roll < 0.8] = mask_id
    random_ids = torch.randint(vocab, (len(targets),), generator=g)
    corrupted[(roll >= 0.8) & (roll < 0.9)] = random_ids[(roll >= 0.8) & (roll < 0.9)]
    input_ids[chosen] = corrupted
    return input_ids, attention, targets, positions


def mntp_loss(model, head, input_ids: torch.Tensor, attention: torch.Tensor, targets: torch.Tensor,
              positions: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each masked token ``i`` predicted from the output at ``i - 1``, with full attention."""
    hidden = hidden_states(model, input_ids, attention, bidirectional=True)
    logits = head(hidden[positions[:, 0], positions[:, 1] - 1])
    return torch.nn.functional.cross_entropy(logits.float(), targets)


def adapt(model_name_or_path: str, texts: list[str], out: str | Path, config: MNTPConfig | None = None, *,
          gguf_file: str | None = None, device: str | None = None, restart: bool = False,
          show_progress_bar: bool = True) -> dict[str, Any]:
    """Run MNTP with LoRA on ``texts`` and publish the adapter at ``out``; returns its metadata.

    Resumes from ``out``'s checkpoint when one exists with the same settings (``restart`` discards it).
    """
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    config = config or MNTPConfig()
    config.validate()
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise TrainError("the corpus has no non-empty text to adapt on")
    path, gguf_file = find_gguf(resolve_model_path(str(model_name_or_path)), gguf_file)
    tokenizer, model = load_causal_lm(path, gguf_file)
    base_fingerprint = module_fingerprint(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    rows = tokenize_corpus(texts, tokenizer, config.max_length, start)
    if not rows:
        raise TrainError("every corpus text is shorter than 2 tokens; nothing to mask")
    targets = [t for t in config.targets if any(n.endswith(t) for n, _ in model.named_modules())]
    if not targets:
        raise TrainError(f"{path} has none of the LoRA target modules {config.targets}")
    model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                             lora_dropout=config.lora_dropout, target_modules=targets))
    base = to_device(model.get_base_model(), device)
    head = lm_head(base)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    run_config = {**asdict(config), "model": path, "gguf_file": gguf_file, "base_fingerprint": base_fingerprint,
                  "n_texts": len(rows)}
    state = resume(out, run_config, optimizer, lambda t: set_peft_model_state_dict(model, t), restart=restart)
    step, losses, elapsed = state.get("step", 0), state.get("losses", []), state.get("seconds", 0.0)
    scheduler = warmup_linear_decay(optimizer, config.steps, config.warmup, step)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start[0]
    mask_id = mask_token_id(tokenizer)
    vocab = base.config.vocab_size
    model.train()
    t0 = time.perf_counter() - elapsed
    with tqdm(total=config.steps, initial=step, desc="MNTP", unit="step", disable=not show_progress_bar) as bar:
        while step < config.steps:
            batch = make_batch(rows, step, config, mask_id, vocab, pad_id, len(start))
            loss = mntp_loss(base, head, *(t.to(device) for t in batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(round(loss.item(), 5))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step % config.checkpoint_every == 0 and step < config.steps:
                save_checkpoint(out, get_peft_model_state_dict(model), optimizer,
                                {"config": run_config, "step": step, "losses": losses,
                                 "seconds": time.perf_counter() - t0})
    seconds = time.perf_counter() - t0
    meta = {"objective": "mntp", "attention": "bidirectional", "base_model": path, "gguf_file": gguf_file,
            "base_fingerprint": base_fingerprint, "config": asdict(config), "targets": targets,
            "mask_token_id": mask_id, "n_texts": len(rows), "steps": step, "seconds": round(seconds, 2),
            "steps_per_second": round(step / seconds, 4) if seconds > 0 else None, "device": str(device),
            "peak_memory_bytes": (torch.cuda.max_memory_allocated() if str(device).startswith("cuda")
                                  else peak_rss_bytes()),
            "loss_first": losses[0], "loss_last": losses[-1],
            "loss_last_10_mean": round(sum(losses[-10:]) / len(losses[-10:]), 5)}
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        (tmp / "loss.json").write_text(json.dumps({"step": list(range(1, len(losses) + 1)), "loss": losses}),
                                       encoding="utf-8")
        meta["loss_png"] = plot_losses(losses, tmp / "loss.png", f"MNTP on {Path(path).name}")
        (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    remove_checkpoint(out)
    return meta
