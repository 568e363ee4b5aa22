"""Plots of a closed-loop evaluation result (:func:`dream_vla_ros.evaluation.statistics.summarize`), as PNG
files; matplotlib is imported when they are drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dream_vla_ros.evaluation.report import fmt


def write_plots(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Success per task, the k histogram and (with a sweep) success and latency per setting, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        written.append(out_dir / name)
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    def success_and_latency(x: list[float], rows: list[dict[str, Any]], latency_key: str, latency_label: str):
        """Mean success (left axis) and a latency (right axis) per sweep setting."""
        fig, ax = plt.subplots(figsize=(6, 3.4))
        ax.set_ylabel("mean success (%)")
        ax.set_ylim(0, 105)
        twin = ax.twinx()
        twin.plot(x, [r[latency_key] or 0.0 for r in rows], "s--", color="tab:red")
        twin.set_ylabel(latency_label, color="tab:red")
        return fig, ax, [100 * (r["mean_success"] or 0.0) for r in rows]

    tasks = list(result["tasks"])
    rates = [result["tasks"][t]["success_rate"] or 0.0 for t in tasks]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(range(len(tasks)), [100 * r for r in rates], color="tab:blue")
    ax.set_xticks(range(len(tasks)), tasks, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("success (%)")
    ax.set_title(f"success per task (mean {fmt(result['mean_success'], percent=True)}, "
                 f"{result['episodes_per_task']} episodes each)")
    save(fig, "success_per_task.png")
    if result.get("k_histogram"):
        ks = [int(k) for k in result["k_histogram"]]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.bar(ks, list(result["k_histogram"].values()), color="tab:orange")
        ax.set_xlabel("recurrent-core iterations k")
        ax.set_ylabel("chunks")
        ax.set_title(f"iterations per chunk (mean {fmt(result['k_mean'], 2)})")
        save(fig, "k_histogram.png")
    if result.get("k_sweep"):
        rows = result["k_sweep"]
        x = list(range(len(rows)))
        fig, ax, success = success_and_latency(x, rows, "latency_ms_mean", "latency mean (ms)")
        ax.bar(x, success, color="tab:blue")
        ax.set_xticks(x, [r["label"] for r in rows])
        ax.set_title("k-sweep: success and latency")
        save(fig, "k_sweep.png")
    if result.get("delay_sweep"):
        rows = result["delay_sweep"]
        delays = [r["added_delay_ms"] for r in rows]
        fig, ax, success = success_and_latency(delays, rows, "latency_ms_median",
                                               "observation-to-chunk latency median (ms)")
        ax.plot(delays, success, "o-", color="tab:blue")
        ax.set_xlabel("added chunk delay (ms)")
        ax.set_title("success against chunk delay")
        save(fig, "delay_sweep.png")
    return written
