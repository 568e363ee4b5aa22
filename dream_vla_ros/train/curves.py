"""Plots people would rather look at than read: training curves."""

from __future__ import annotations

import json
from pathlib import Path


def plot_training_curves(metrics_file: Path, out_png: Path) -> Path | None:
    """Loss (train and validation) and learning rate against step, from a ``metrics.jsonl``; None if empty."""
    if not metrics_file.is_file():
        return None
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(3, 1))
    steps = [r["step"] for r in records]
    ax_loss.plot(steps, [r["loss"] for r in records], lw=0.6, alpha=0.5, label="train loss")
    window = max(1, len(records) // 100)
    smooth = [sum(r["loss"] for r in records[max(0, i - window + 1):i + 1]) / min(window, i + 1)
              for i in range(len(records))]
    ax_loss.plot(steps, smooth, lw=1.5, label=f"train loss (mean of {window})")
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if val:
        ax_loss.plot([v[0] for v in val], [v[1] for v in val], "o-", lw=1.5, label="validation loss")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    ax_lr.plot(steps, [r["lr"] for r in records], color="gray")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
