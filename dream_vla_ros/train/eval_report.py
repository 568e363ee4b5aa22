"""Reports of a closed-loop evaluation (:mod:`dream_vla_ros.train.evaluation`): a Markdown table, plots, and
the results files (results.json, results.md, PNGs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 2, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if percent:
        return f"{100 * value:.0f}%"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def centimetres(metres: float | None) -> str:
    """Metres as centimetres with one decimal ('-' for None)."""
    return "-" if metres is None else f"{100 * metres:.1f}"


def markdown_report(result: dict[str, Any]) -> str:
    """A Markdown results table (per task, overall, k histogram and the k-sweep when present)."""
    expert = result["mode"] == "expert"
    title = "Expert replay through the sim_arm trajectory topic" if expert else \
        f"Closed-loop evaluation: {result['model']}"
    lines = [
        f"# {title}",
        "",
        f"- Protocol: {result['episodes_per_task']} episode(s) per task, seeds {result['seeds'][0]}.."
        f"{result['seeds'][1]}, {result['phrasings']} phrasings, at most {result['max_steps']} steps of 12.5 ms, "
        f"through ROS 2 (controller interface: {result['controller_interface']})",
        f"- Pace: {pace_line(result)}",
        f"- Host: {result['host']['cpu_model']}, {result['host']['cores']} core(s)" if result.get("host") else "",
    ]
    lines = [line for line in lines if line]
    if result.get("lag_events"):
        lines.append(f"- **{lag_warning(result)}**")
    if not expert:
        lines.append(f"- Halting: {result['halting']['label']}")
    lines += [f"- Mean success over tasks: **{_fmt(result['mean_success'], percent=True)}**", ""]
    if expert:
        lines += ["| task | ROS replay success | episodes | direct replay | expert failures | mean steps |",
                  "|---|---|---|---|---|---|"]
        for task, s in result["tasks"].items():
            lines.append(f"| {task} | {_fmt(s['success_rate'], percent=True)} | {s['episodes']} | "
                         f"{_fmt(s['direct_replay_success_rate'], percent=True)} | {s['expert_failures']} | "
                         f"{_fmt(s['steps_mean'], 1)} |")
        lines += ["", f"Overall ROS replay success: {_fmt(result['replay_success'], percent=True)} of "
                  f"{result['replayed_episodes']} replayed episodes (goal >= {_fmt(result['goal'], percent=True)})."]
        return "\n".join(lines) + "\n"
    lines += ["| task | success | episodes | mean steps | steps to success | failures: goal distance at end / "
              "closest (cm, median) | k mean | latency median (ms) | inference median (ms) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for task, s in result["tasks"].items():
        lines.append(f"| {task} | {_fmt(s['success_rate'], percent=True)} | {s['episodes']} | "
                     f"{_fmt(s['steps_mean'], 1)} | {_fmt(s['steps_to_success_mean'], 1)} | "
                     f"{centimetres(s.get('failed_goal_distance_median'))} / "
                     f"{centimetres(s.get('failed_closest_goal_distance_median'))} | {_fmt(s['k_mean'], 2)} | "
                     f"{_fmt(s['latency_ms_median'], 1)} | {_fmt(s['inference_ms_median'], 1)} |")
    lines.append(f"| **mean** | **{_fmt(result['mean_success'], percent=True)}** | | {_fmt(result['steps_mean'], 1)} "
                 f"| | | {_fmt(result['k_mean'], 2)} | {_fmt(result['latency_ms_median'], 1)} | "
                 f"{_fmt(result['inference_ms_median'], 1)} |")
    if result["k_histogram"]:
        keys = list(result["k_histogram"])
        counts = " | ".join(str(v) for v in result["k_histogram"].values())
        lines += ["", "Iterations k per chunk:", "", "| k | " + " | ".join(keys) + " |",
                  "|---|" + "---|" * len(keys), f"| chunks | {counts} |"]
    if result.get("delay_sweep"):
        lines += ["", "## Added chunk delay (policy_node.added_delay)", "",
                  "| added delay (ms) | mean success | latency median (ms) | k mean | real-time factor | lag events |",
                  "|---|---|---|---|---|---|"]
        for row in result["delay_sweep"]:
            lines.append(f"| {row['added_delay_ms']:g} | {_fmt(row['mean_success'], percent=True)} | "
                         f"{_fmt(row['latency_ms_median'], 1)} | {_fmt(row['k_mean'], 2)} | "
                         f"{_factors(row['real_time_factors'])} | {row['lag_events']} |")
    if result.get("k_sweep"):
        tasks = list(result["tasks"])
        header = "| setting | mean success | k mean | latency mean (ms) | latency median (ms) | inference mean (ms) | "
        rule = "|---|---|---|---|---|---|" + "---|" * len(tasks)
        lines += ["", "## k-sweep", "", header + " | ".join(tasks) + " |", rule]
        for row in result["k_sweep"]:
            lines.append(f"| {row['label']} | {_fmt(row['mean_success'], percent=True)} | {_fmt(row['k_mean'], 2)} | "
                         f"{_fmt(row['latency_ms_mean'], 1)} | {_fmt(row['latency_ms_median'], 1)} | "
                         f"{_fmt(row['inference_ms_mean'], 1)} | "
                         + " | ".join(_fmt(row['tasks'].get(t), percent=True) for t in tasks) + " |")
    return "\n".join(lines) + "\n"


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
    ax.set_title(f"success per task (mean {_fmt(result['mean_success'], percent=True)}, "
                 f"{result['episodes_per_task']} episodes each)")
    save(fig, "success_per_task.png")
    if result.get("k_histogram"):
        ks = [int(k) for k in result["k_histogram"]]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.bar(ks, list(result["k_histogram"].values()), color="tab:orange")
        ax.set_xlabel("recurrent-core iterations k")
        ax.set_ylabel("chunks")
        ax.set_title(f"iterations per chunk (mean {_fmt(result['k_mean'], 2)})")
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


def write_outputs(result: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """results.json, results.md and the plots in ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / "results.md"
    markdown.write_text(markdown_report(result))
    plots = write_plots(result, out_dir)
    files = {"json": str(out_dir / "results.json"), "markdown": str(markdown), "plots": [str(p) for p in plots]}
    (out_dir / "results.json").write_text(json.dumps({**result, "files": files}, indent=2) + "\n")
    return files


def _factors(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values) or "-"


def pace_line(result: dict[str, Any]) -> str:
    """How time ran: the clock, the real-time factor(s) and how they were chosen."""
    pacing = result.get("pacing", "wall-clock")
    clock = "wall clock" if pacing == "wall-clock" else "simulation time (/clock)"
    factors = _factors(result.get("real_time_factors", []))
    lag = result.get("lag_events", 0)
    retried = len(result.get("lag_retries", []))
    text = f"{clock}, real-time factor {factors} ({pacing}), {lag} lag event(s)"
    if retried:
        text += f"; {retried} episode run(s) discarded for lag and run again"
    return text


def lag_warning(result: dict[str, Any]) -> str:
    """The warning a result with lag events carries (the simulation fell behind: it does not count)."""
    return (f"WARNING: {result['lag_events']} lag event(s) in {result['episodes_with_lag']} episode(s): the host "
            "did not keep the simulation's pace; these figures are not comparable (use --real-time-factor below "
            "the one used, or auto pacing)")
