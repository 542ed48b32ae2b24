"""Loss curve PNG from ``metrics.jsonl`` (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_metrics(metrics: str | Path, dest: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(ln) for ln in Path(metrics).read_text(encoding="utf-8").splitlines() if ln.strip()]
    train = [(r["step"], r["train_loss"]) for r in recs if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in recs if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train, strict=True), lw=0.8, alpha=0.7, label="train")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", ms=3, label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, dest)


def save_png(fig, dest: str | Path) -> Path:
    """Lay out ``fig``, write it to ``dest`` atomically as PNG and free it."""
    import matplotlib.pyplot as plt

    from ..fsutil import atomic_path

    fig.tight_layout()
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return dest
