"""SAE diagnostics: held-out FVU and L0, activation frequencies, dead latents, top examples, a histogram PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from sparseir.sae.model import SparseAutoencoder
from sparseir.sae.store import ActivationStore


@dataclass
class ScanResult:
    """Output of :func:`scan`: diagnostics plus each feature's top activating rows."""

    fvu: float
    l0: float
    freq: np.ndarray  # [n_latents] fraction of rows where the feature fires
    top_rows: np.ndarray  # [n_latents, n_top] row indices, best first (-1 = none)
    top_vals: np.ndarray  # [n_latents, n_top] activations

    @property
    def dead_frac(self) -> float:
        """Fraction of latents that never fire over the scanned rows."""
        return float((self.freq == 0).mean())

    def summary(self) -> dict:
        """JSON-serialisable diagnostics."""
        nz = self.freq[self.freq > 0]
        return {
            "fvu": self.fvu,
            "l0": self.l0,
            "dead_frac": self.dead_frac,
            "n_dead": int((self.freq == 0).sum()),
            "n_latents": int(len(self.freq)),
            "freq_median_alive": float(np.median(nz)) if len(nz) else 0.0,
            "freq_max": float(self.freq.max()),
            "dense_frac": float((self.freq > 0.1).mean()),
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
    )


def freq_histogram_png(freq: np.ndarray, title: str = "SAE feature activation frequency") -> bytes:
    """PNG bytes of the log10 firing-frequency histogram, dead latents counted apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alive = freq[freq > 0]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if len(alive):
        ax.hist(np.log10(alive), bins=50, color="tab:blue")
    ax.set_xlabel("log10(activation frequency)")
    ax.set_ylabel("features")
    ax.set_title(f"{title}\n{len(freq) - len(alive)} dead of {len(freq)} ({(len(freq) - len(alive)) / len(freq):.1%})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
