"""SAE diagnostics: held-out FVU and L0, activation frequencies, dead latents, top examples, a histogram PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from sparseir.sae.model import SparseAutoencoder
from sparseir.sae.store import ActivationStore

#: A latent firing on more than this fraction of inputs is "dense" (a common SAE pathology).
DENSE = 0.1
#: log10 frequency bins of the histogram: 1e-7 .. 1, 0.25 decades wide.
LOG_BINS = np.linspace(-7.0, 0.0, 29)


def log_freq_histogram(freq: np.ndarray) -> dict:
    """Counts of live latents per log10 activation-frequency bin (:data:`LOG_BINS`), dead latents apart."""
    alive = freq[freq > 0]
    counts, _ = np.histogram(np.clip(np.log10(alive), LOG_BINS[0], LOG_BINS[-1]), bins=LOG_BINS)
    return {"log10_edges": LOG_BINS.tolist(), "counts": counts.tolist(), "dead": int((freq == 0).sum())}


@dataclass
class ScanResult:
    """Output of :func:`scan`: diagnostics plus each feature's top activating rows."""

    fvu: float
    l0: float
    freq: np.ndarray  # [n_latents] fraction of rows where the feature fires
    top_rows: np.ndarray  # [n_latents, n_top] row indices, best first (-1 = none)
    top_vals: np.ndarray  # [n_latents, n_top] activations
    n_rows: int = 0  # rows scanned for the frequencies

    @property
    def dead_frac(self) -> float:
        """Fraction of latents that never fire over the scanned rows."""
        return float((self.freq == 0).mean())

    def summary(self) -> dict:
        """JSON-serialisable diagnostics; ``dead_window_rows``: the rows scanned, over which a dead latent
        never fired; ``freq_histogram``: the log10 activation frequencies of the live latents."""
        nz = self.freq[self.freq > 0]
        return {
            "fvu": self.fvu,
            "l0": self.l0,
            "dead_frac": self.dead_frac,
            "n_dead": int((self.freq == 0).sum()),
            "n_latents": int(len(self.freq)),
            "dead_window_rows": self.n_rows,
            "freq_median_alive": float(np.median(nz)) if len(nz) else 0.0,
            "freq_max": float(self.freq.max()),
            "dense_threshold": DENSE,
            "dense_frac": float((self.freq > DENSE).mean()),
            "freq_histogram": log_freq_histogram(self.freq),
        }


@torch.no_grad()
def scan(
    model: SparseAutoencoder,
    store: ActivationStore,
    *,
    n_top: int = 32,
    batch_size: int = 4096,
    progress: bool = True,
) -> ScanResult:
    """One inference pass over ``store``: FVU and L0 on the validation rows, firing
    frequencies and top-``n_top`` activating rows per feature over all rows."""
    model.eval()
    device = model.W_dec.device
    n_lat = model.cfg.n_latents
    counts = torch.zeros(n_lat, dtype=torch.long, device=device)
    top_vals = torch.zeros(n_top, n_lat, device=device)
    top_rows = torch.full((n_top, n_lat), -1, dtype=torch.long, device=device)
    err = sq = l0_sum = 0.0
    val_sum = torch.zeros(model.cfg.d_in, dtype=torch.float64, device=device)
    n_val = 0
    bar = tqdm(total=store.n_rows, desc="sae scan", disable=not progress, unit="row", dynamic_ncols=True)
    for rows, chunk in store.chunks(batch_size * 16):
        for s in range(0, len(rows), batch_size):
            x = torch.from_numpy(chunk[s : s + batch_size]).to(device)
            r = torch.from_numpy(rows[s : s + batch_size]).to(device)
            z = model.encode(x)
            counts += (z > 0).sum(0)
            m = min(n_top, len(r))
            v, i = z.topk(m, dim=0)
            cat_v = torch.cat([top_vals, v])
            cat_r = torch.cat([top_rows, r[i]])
            top_vals, j = cat_v.topk(n_top, dim=0)
            top_rows = cat_r.gather(0, j)
            val = r % store.val_every == 0
            if val.any():
                xn = model.normalize(x[val])
                rec = model.decode(z[val], denormalize=False)
                err += float((rec - xn).pow(2).sum())
                sq += float(xn.double().pow(2).sum())
                val_sum += xn.double().sum(0)
                l0_sum += float((z[val] > 0).sum())
                n_val += int(val.sum())
            bar.update(len(r))
    bar.close()
    top_rows = torch.where(top_vals > 0, top_rows, torch.full_like(top_rows, -1))
    return ScanResult(
        fvu=err / max(sq - float(val_sum @ val_sum) / n_val, 1e-12) if n_val else float("nan"),
        l0=l0_sum / max(n_val, 1),
        freq=(counts.double() / store.n_rows).cpu().numpy(),
        top_rows=top_rows.t().cpu().numpy(),
        top_vals=top_vals.t().cpu().numpy(),
        n_rows=store.n_rows,
    )


def freq_histogram_png(freq: np.ndarray, window: int, title: str = "SAE latent activation frequency") -> bytes:
    """PNG bytes of the log10 activation-frequency histogram as the SAE literature draws it: live latents
    per bin, dead latents (no activation over ``window`` rows) as a red bar left of the axis' range, dense
    latents (frequency > :data:`DENSE`) in orange right of a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alive = freq[freq > 0]
    n_dead, n_dense = len(freq) - len(alive), int((freq > DENSE).sum())
    logs = np.clip(np.log10(alive), LOG_BINS[0], LOG_BINS[-1]) if len(alive) else alive
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=100)
    ax.hist(logs[logs <= np.log10(DENSE)], bins=LOG_BINS, color="tab:blue", label="live")
    ax.hist(logs[logs > np.log10(DENSE)], bins=LOG_BINS, color="tab:orange", label=f"dense (> {DENSE:g}): {n_dense}")
    ax.bar(LOG_BINS[0] - 0.5, n_dead, width=0.4, color="tab:red", label=f"dead: {n_dead}")
    ax.axvline(np.log10(DENSE), color="tab:orange", linestyle="--", linewidth=1)
    ax.set_xlabel("log10(activation frequency)   (dead: left bar)")
    ax.set_ylabel("latents")
    ax.legend(fontsize=8)
    ax.set_title(f"{title}\n{n_dead} dead of {len(freq)} ({n_dead / max(len(freq), 1):.1%}) over {window:,} rows; "
                 f"{n_dense} dense", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
