"""Streaming SAE trainer: memmapped batches, Adam, decoder-norm constraint, logging, checkpoint/resume."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sparseir._fs import FileLock
from sparseir.encoders.base import pick_device
from sparseir.sae.checkpoint import TRAIN_STATE, read_config, save_sae
from sparseir.sae.model import SAEConfig, SparseAutoencoder
from sparseir.sae.store import ActivationStore


@dataclass
class TrainConfig:
    """Optimisation settings. ``lr=None`` uses Gao et al.'s scaling 2e-4 / sqrt(n_latents / 2**14).

    ``center`` removes the training mean from the inputs before scaling them to unit RMS norm;
    ``center=False`` only scales them, so the codes keep the direction all inputs share (for
    sentence embeddings, the part of a dot product that the mean carries).
    """

    batch_size: int = 1024
    epochs: float = 1.0
    lr: float | None = None
    warmup_steps: int = 50
    decay_frac: float = 0.2
    chunk_rows: int = 65536
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 500
    center: bool = True

    def __post_init__(self) -> None:
        if self.batch_size <= 0 or self.epochs <= 0 or self.chunk_rows <= 0:
            raise ValueError("batch_size, epochs and chunk_rows must be positive")


def _lr_at(step: int, total: int, base: float, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return base * (step + 1) / cfg.warmup_steps
    decay_start = int(total * (1 - cfg.decay_frac))
    if step >= decay_start and total > decay_start:
        return base * max(0.0, (total - step) / (total - decay_start))
    return base


def train_sae(
    store: ActivationStore,
    out: str | Path,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig | None = None,
    *,
    device: str | torch.device | None = None,
    resume: bool = True,
    max_steps: int | None = None,
    progress: bool = True,
    lock: bool = True,
) -> tuple[SparseAutoencoder, dict]:
    """Train an SAE on ``store``; checkpoints go to ``out`` and a run there is resumed.

    ``max_steps`` stops this call after that many steps (checkpointed), for time-boxed runs;
    calling again with the same settings continues where it stopped.

    One trainer per output folder: the call holds an exclusive lock on ``.<name>.lock`` beside
    ``out`` (not inside it: each checkpoint replaces ``out`` whole) from before it reads a
    previous run until after its last checkpoint. A second call for the same ``out`` while one
    runs, in this process or another, raises :class:`~sparseir.errors.LockError` naming the
    folder and the holder's pid, and leaves ``out`` untouched. The lock dies with its process.
    ``lock=False`` is for a caller that holds :func:`trainer_lock` itself (``sparseir sae train``
    does, so that the lock also covers its ``finalize_sae``).

    Returns the trained model (eval mode, on ``device``) and the checkpoint info dict
    (source, settings, step, training log) that :func:`save_sae` writes.
    """
    train_cfg = train_cfg or TrainConfig()
    if sae_cfg.d_in != store.dim:
        raise ValueError(f"SAE d_in={sae_cfg.d_in} but the activations have dim {store.dim}")
    device = pick_device(device)
    out = Path(out)
    if not lock:
        return _train(store, out, sae_cfg, train_cfg, device, resume, max_steps, progress)
    with trainer_lock(out):
        return _train(store, out, sae_cfg, train_cfg, device, resume, max_steps, progress)


def trainer_lock(out: str | Path) -> FileLock:
    """The exclusive lock of SAE output folder ``out`` (``.<name>.lock`` beside it), taken now."""
    out = Path(out)
    folder = out.resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(folder.parent / f".{folder.name}.lock", lambda holder: (
        f"{out} is being trained by another process ({holder}); only one trainer per output folder"))


def _train(store: ActivationStore, out: Path, sae_cfg: SAEConfig, train_cfg: TrainConfig, device: torch.device,
           resume: bool, max_steps: int | None, progress: bool) -> tuple[SparseAutoencoder, dict]:
    """The body of :func:`train_sae`, run while it holds the output folder's lock."""
    torch.manual_seed(train_cfg.seed)
    model = SparseAutoencoder(sae_cfg, generator=torch.Generator().manual_seed(train_cfg.seed))
    lr = train_cfg.lr or 2e-4 / math.sqrt(sae_cfg.n_latents / 2**14)
    total = max(1, math.ceil(train_cfg.epochs * store.batches_per_epoch(train_cfg.batch_size, train_cfg.chunk_rows)))
    info = {
        "source": store.meta,
        "activations": str(store.path),
        "train": {**dataclasses.asdict(train_cfg), "lr": lr, "total_steps": total, "device": str(device)},
        "step": 0,
        "log": [],
    }
    step = 0
    state_file = out / TRAIN_STATE
    if resume and state_file.is_file():
        prev = read_config(out)
        if (prev["sae"] != sae_cfg.to_dict() or prev["train"]["total_steps"] != total
                or prev["train"].get("center", True) != train_cfg.center):
            raise ValueError(f"{out} holds a different run (SAE or training settings differ); pass resume=False")
        state = torch.load(state_file, weights_only=False)
        model.load_state_dict(state["model"])
        info = {**info, "step": state["step"], "log": prev.get("log", [])}
        step = state["step"]
    else:
        mean, scale = store.norm_stats(train_cfg.chunk_rows, train_cfg.center)
        model.set_normalization(torch.from_numpy(mean), scale)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
    if step:
        opt.load_state_dict(state["optimizer"])

    def checkpoint() -> None:
        info["step"] = step
        state = {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict()}
        save_sae(out, model, info, train_state=state)

    batches = store.train_batches(train_cfg.batch_size, train_cfg.chunk_rows, train_cfg.seed, start_step=step)
    bar = tqdm(total=total, initial=step, desc="sae train", disable=not progress, dynamic_ncols=True)
    acc = np.zeros(4)
    n_acc = 0
    stop = total if max_steps is None else min(total, step + max_steps)
    while step < stop:
        x = torch.from_numpy(next(batches)).to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, total, lr, train_cfg)
        res = model(x)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        model.project_decoder_grad()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        model.normalize_decoder()
        step += 1
        l0 = (res.latents > 0).sum(-1).float().mean()
        acc += [res.fvu.item(), l0.item(), res.aux_loss.item(), res.sim_loss.item()]
        n_acc += 1
        bar.update(1)
        if step % train_cfg.log_every == 0 or step == total:
            fvu, l0m, aux, sim = acc / n_acc
            dead = float(model.dead_mask().float().mean())
            rec = {"step": step, "fvu": fvu, "l0": l0m, "dead_frac": dead, "aux_loss": aux, "sim_loss": sim}
            info["log"].append(rec)
            bar.set_postfix(fvu=f"{fvu:.3f}", l0=f"{l0m:.1f}", dead=f"{dead:.1%}", auxk=f"{aux:.3f}")
            acc[:] = 0
            n_acc = 0
        if step % train_cfg.checkpoint_every == 0 and step < stop:
            checkpoint()
    bar.close()
    checkpoint()
    model.eval()
    return model, info
