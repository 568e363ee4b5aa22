"""Reports of a closed-loop evaluation (:mod:`dream_vla_ros.evaluation.runner`): the progress line of an episode,
the Markdown table, and the results files (results.json, results.md and the plots of
:mod:`dream_vla_ros.evaluation.plots`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dream_vla_ros.evaluation.statistics import EpisodeResult


def fmt(value: Any, digits: int = 2, percent: bool = False) -> str:
    """A table cell: '-' for None or NaN, a percentage, or a number with ``digits`` decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if percent:
        return f"{100 * value:.0f}%"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def centimetres(metres: float | None) -> str:
    """Metres as centimetres with one decimal ('-' for None)."""
    return "-" if metres is None else f"{100 * metres:.1f}"


def episode_line(n: int, total: int, result: EpisodeResult) -> str:
    """The progress line of episode ``n`` of ``total``: outcome, k, latency, pace and notes."""
    if result.success:
        outcome = f"success in {result.steps} steps"
    elif result.goal_distance is not None and result.closest_goal_distance is not None:
        outcome = (f"failed ({result.steps} steps, {centimetres(result.goal_distance)} cm from the goal, "
                   f"closest {centimetres(result.closest_goal_distance)} cm)")
    else:
        outcome = f"failed ({result.steps} steps)"
    k = f", k {result.k_mean:.1f}" if result.k else ""
    latency = f", {result.latency_ms_median:.0f} ms" if result.latency_ms else ""
    notes = [result.note] if result.note else []
    if result.lag_events:
        notes.append(f"{result.lag_events} lag event(s): does not count")
    note = "".join(f" [{text}]" for text in notes)
    pace = f", real-time factor {result.real_time_factor:g}" if result.real_time_factor != 1.0 else ""
    return f"[{n}/{total}] {result.task} seed {result.seed}: {outcome}{k}{latency}{pace}{note}"


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
    lines += [f"- Mean success over tasks: **{fmt(result['mean_success'], percent=True)}**", ""]
    if expert:
        lines += ["| task | ROS replay success | episodes | direct replay | expert failures | mean steps |",
                  "|---|---|---|---|---|---|"]
        for task, s in result["tasks"].items():
            lines.append(f"| {task} | {fmt(s['success_rate'], percent=True)} | {s['episodes']} | "
                         f"{fmt(s['direct_replay_success_rate'], percent=True)} | {s['expert_failures']} | "
                         f"{fmt(s['steps_mean'], 1)} |")
        lines += ["", f"Overall ROS replay success: {fmt(result['replay_success'], percent=True)} of "
                  f"{result['replayed_episodes']} replayed episodes (goal >= {fmt(result['goal'], percent=True)})."]
        return "\n".join(lines) + "\n"
    lines += ["| task | success | episodes | mean steps | steps to success | failures: goal distance at end / "
              "closest (cm, median) | k mean | latency median (ms) | inference median (ms) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for task, s in result["tasks"].items():
        lines.append(f"| {task} | {fmt(s['success_rate'], percent=True)} | {s['episodes']} | "
                     f"{fmt(s['steps_mean'], 1)} | {fmt(s['steps_to_success_mean'], 1)} | "
                     f"{centimetres(s.get('failed_goal_distance_median'))} / "
                     f"{centimetres(s.get('failed_closest_goal_distance_median'))} | {fmt(s['k_mean'], 2)} | "
                     f"{fmt(s['latency_ms_median'], 1)} | {fmt(s['inference_ms_median'], 1)} |")
    lines.append(f"| **mean** | **{fmt(result['mean_success'], percent=True)}** | | {fmt(result['steps_mean'], 1)} "
                 f"| | | {fmt(result['k_mean'], 2)} | {fmt(result['latency_ms_median'], 1)} | "
                 f"{fmt(result['inference_ms_median'], 1)} |")
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
            lines.append(f"| {row['added_delay_ms']:g} | {fmt(row['mean_success'], percent=True)} | "
                         f"{fmt(row['latency_ms_median'], 1)} | {fmt(row['k_mean'], 2)} | "
                         f"{_factors(row['real_time_factors'])} | {row['lag_events']} |")
    if result.get("k_sweep"):
        tasks = list(result["tasks"])
        header = "| setting | mean success | k mean | latency mean (ms) | latency median (ms) | inference mean (ms) | "
        rule = "|---|---|---|---|---|---|" + "---|" * len(tasks)
        lines += ["", "## k-sweep", "", header + " | ".join(tasks) + " |", rule]
        for row in result["k_sweep"]:
            lines.append(f"| {row['label']} | {fmt(row['mean_success'], percent=True)} | {fmt(row['k_mean'], 2)} | "
                         f"{fmt(row['latency_ms_mean'], 1)} | {fmt(row['latency_ms_median'], 1)} | "
                         f"{fmt(row['inference_ms_mean'], 1)} | "
                         + " | ".join(fmt(row['tasks'].get(t), percent=True) for t in tasks) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(result: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """results.json, results.md and the plots in ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / "results.md"
    markdown.write_text(markdown_report(result))
    from dream_vla_ros.evaluation.plots import write_plots

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
