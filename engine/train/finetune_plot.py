"""Fine-tuning curves PNG from ``metrics.jsonl``: loss (train steps and evaluations) beside a second
metric of the evaluations (classification accuracy on train and val), against epochs."""

from __future__ import annotations

import json
from pathlib import Path


def _series(recs: list[dict], key: str) -> list[tuple[float, float]]:
    return [(r.get("epoch", r["step"]), r[key]) for r in recs if key in r]


def plot_finetune(metrics: str | Path, dest: str | Path, second: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .train_plot import save_png

    recs = [json.loads(ln) for ln in Path(metrics).read_text(encoding="utf-8").splitlines() if ln.strip()]
    x_label = "epoch" if any("epoch" in r for r in recs) else "step"
    fig, axes = plt.subplots(1, 2 if second else 1, figsize=(11 if second else 6, 4), dpi=120, squeeze=False)
    ax = axes[0][0]
    for key, style, label in (("train_loss", "-", "train (step)"), ("val_loss", "o-", "val")):
        pts = _series(recs, key)
        if pts:
            ax.plot(*zip(*pts, strict=True), style, ms=3, lw=0.8, label=label)
    ax.set(xlabel=x_label, ylabel="loss", title="loss")
    if second:
        ax2 = axes[0][1]
        for split in ("train", "val"):
            pts = _series(recs, f"{split}_{second}")
            if pts:
                ax2.plot(*zip(*pts, strict=True), "o-", ms=3, label=split)
        ax2.set(xlabel=x_label, ylabel=second, title=second)
    for a in axes[0]:
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend()
    return save_png(fig, dest)
