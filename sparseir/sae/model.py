"""Sparse autoencoders: TopK (Gao et al. 2024), BatchTopK (Bussmann et al.), Matryoshka prefixes, AuxK."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("topk", "batchtopk")


@dataclass
class SAEConfig:
    """Architecture and loss settings of a sparse autoencoder.

    ``matryoshka`` lists nested prefix sizes (increasing, the last may equal ``n_latents``);
    each prefix must reconstruct the input on its own. ``sim_coef`` weights an optional
    retrieval-aware term that distils the in-batch cosine ranking of the inputs onto the
    dot products of the sparse codes.
    """

    d_in: int
    n_latents: int
    k: int
    activation: str = "topk"
    matryoshka: tuple[int, ...] | None = None
    aux_k: int | None = None
    aux_coef: float = 1.0 / 32.0
    dead_after: int = 100_000
    sim_coef: float = 0.0
    sim_temperature: float = 0.05

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not 0 < self.k <= self.n_latents:
            raise ValueError(f"k must be in [1, n_latents={self.n_latents}], got {self.k}")
        if self.d_in <= 0:
            raise ValueError(f"d_in must be positive, got {self.d_in}")
        if self.matryoshka is not None:
            sizes = tuple(int(m) for m in self.matryoshka)
            if not sizes or list(sizes) != sorted(set(sizes)) or sizes[0] <= 0 or sizes[-1] > self.n_latents:
                raise ValueError(f"matryoshka prefixes must increase within (0, {self.n_latents}], got {sizes}")
            if sizes[-1] != self.n_latents:
                sizes = sizes + (self.n_latents,)
            self.matryoshka = sizes
        if self.aux_k is None:
            self.aux_k = max(1, min(self.d_in // 2, self.n_latents // 2))

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        d = dataclasses.asdict(self)
        d["matryoshka"] = list(self.matryoshka) if self.matryoshka else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SAEConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        if d.get("matryoshka") is not None:
            d["matryoshka"] = tuple(d["matryoshka"])
        return cls(**d)


class SAEOutput(NamedTuple):
    """Result of a training forward pass."""

    loss: torch.Tensor
    recon: torch.Tensor
    latents: torch.Tensor
    fvu: torch.Tensor
    aux_loss: torch.Tensor
    sim_loss: torch.Tensor


def normalized_mse(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error over the target's total variance in the batch (the batch FVU)."""
    var = (target - target.mean(0, keepdim=True)).pow(2).sum()
    return (recon - target).pow(2).sum() / var.clamp_min(1e-12)


class SparseAutoencoder(nn.Module):
    """A TopK / BatchTopK sparse autoencoder with unit-norm decoder columns.

    Inputs are normalised inside the module, ``(x - norm_mean) / norm_scale``, so the
    normalisation statistics live (and are saved) with the weights.
    """

    def __init__(self, cfg: SAEConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        w_dec = torch.empty(cfg.d_in, cfg.n_latents)
        nn.init.kaiming_uniform_(w_dec, a=5**0.5, generator=generator)
        w_dec = w_dec / w_dec.norm(dim=0, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.n_latents))
        self.b_pre = nn.Parameter(torch.zeros(cfg.d_in))
        self.sim_log_scale = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("norm_mean", torch.zeros(cfg.d_in))
        self.register_buffer("norm_scale", torch.ones(()))
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("samples_since_fired", torch.zeros(cfg.n_latents, dtype=torch.long))

    # ----------------------------------------------------------------- normalisation
    def set_normalization(self, mean: torch.Tensor, scale: float) -> None:
        """Store the input statistics: inputs become ``(x - mean) / scale``."""
        self.norm_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.norm_scale.fill_(float(scale))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map raw activations to the SAE's input space."""
        return (x.float() - self.norm_mean) / self.norm_scale

    # ----------------------------------------------------------------- encode / decode
    def pre_acts(self, xn: torch.Tensor) -> torch.Tensor:
        """ReLU pre-activations of normalised inputs."""
        return F.relu(F.linear(xn - self.b_pre, self.W_enc, self.b_enc))

    @staticmethod
    def _topk(acts: torch.Tensor, k: int) -> torch.Tensor:
        vals, idx = acts.topk(min(k, acts.shape[-1]), dim=-1, sorted=False)
        return torch.zeros_like(acts).scatter_(-1, idx, vals)

    def _batch_topk(self, acts: torch.Tensor, k: int) -> torch.Tensor:
        flat = acts.flatten()
        n_keep = min(k * acts.shape[0], flat.numel())
        vals, idx = flat.topk(n_keep, sorted=False)
        out = torch.zeros_like(flat).scatter_(0, idx, vals).view_as(acts)
        if self.training:
            positive = vals[vals > 0]
            if positive.numel():
                new = positive.min().detach()
                self.threshold.copy_(torch.where(self.threshold > 0, 0.99 * self.threshold + 0.01 * new, new))
        return out

    def encode(self, x: torch.Tensor, k: int | None = None, *, normalized: bool = False) -> torch.Tensor:
        """Sparse codes (dense tensor, mostly zeros) of raw inputs ``x`` [n, d_in].

        TopK keeps ``k`` (default ``cfg.k``) latents per row. BatchTopK, at inference,
        keeps latents above the learned threshold, capped at ``k`` per row when given.
        """
        xn = x if normalized else self.normalize(x)
        acts = self.pre_acts(xn)
        if self.cfg.activation == "batchtopk" and not self.training:
            acts = acts * (acts > self.threshold)
            return acts if k is None else self._topk(acts, k)
        return self._topk(acts, k or self.cfg.k)

    def decode(self, latents: torch.Tensor, *, denormalize: bool = True) -> torch.Tensor:
        """Reconstruction from codes, in raw input space by default."""
        xn = F.linear(latents, self.W_dec, self.b_pre)
        return xn * self.norm_scale + self.norm_mean if denormalize else xn

    # ----------------------------------------------------------------- training
    def forward(self, x: torch.Tensor) -> SAEOutput:
        """Training pass on raw inputs; returns the total loss and its parts."""
        cfg = self.cfg
        xn = self.normalize(x)
        acts = self.pre_acts(xn)
        latents = self._batch_topk(acts, cfg.k) if cfg.activation == "batchtopk" else self._topk(acts, cfg.k)
        recon = F.linear(latents, self.W_dec, self.b_pre)
        fvu = normalized_mse(recon, xn)
        if cfg.matryoshka:
            losses = [
                normalized_mse(F.linear(latents[:, :m], self.W_dec[:, :m], self.b_pre), xn) for m in cfg.matryoshka[:-1]
            ]
            recon_loss = (sum(losses) + fvu) / len(cfg.matryoshka)
        else:
            recon_loss = fvu
        fired = (latents > 0).any(0)
        self.samples_since_fired += x.shape[0]
        self.samples_since_fired[fired] = 0
        aux_loss = self._aux_loss(acts, xn - recon.detach())
        sim_loss = self._sim_loss(x, latents) if cfg.sim_coef > 0 else acts.new_zeros(())
        loss = recon_loss + cfg.aux_coef * aux_loss + cfg.sim_coef * sim_loss
        return SAEOutput(loss, recon, latents, fvu.detach(), aux_loss.detach(), sim_loss.detach())

    def _aux_loss(self, acts: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """AuxK: the top ``aux_k`` dead latents reconstruct the residual (0 when none is dead)."""
        dead = self.samples_since_fired > self.cfg.dead_after
        if self.cfg.aux_coef <= 0 or not bool(dead.any()):
            return acts.new_zeros(())
        k_aux = min(self.cfg.aux_k, int(dead.sum()))
        aux = self._topk(acts * dead, k_aux)
        return normalized_mse(F.linear(aux, self.W_dec), residual).nan_to_num(0.0)

    def _sim_loss(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """KL between the in-batch ranking of input cosines and of code dot products."""
        xu = F.normalize(x.float(), dim=-1)
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        target = (xu @ xu.t() / self.cfg.sim_temperature).masked_fill(eye, -1e4)
        pred = (latents @ latents.t() * self.sim_log_scale.exp()).masked_fill(eye, -1e4)
        return F.kl_div(F.log_softmax(pred, -1), F.log_softmax(target, -1), log_target=True, reduction="batchmean")

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient component parallel to each unit-norm decoder column."""
        if self.W_dec.grad is not None:
            g = self.W_dec.grad
            g -= (g * self.W_dec).sum(0, keepdim=True) * self.W_dec

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder columns to unit norm."""
        self.W_dec /= self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8)

    def dead_mask(self) -> torch.Tensor:
        """Latents that have not fired for more than ``dead_after`` training samples."""
        return self.samples_since_fired > self.cfg.dead_after
