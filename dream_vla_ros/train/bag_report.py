"""The dataset build's report as Markdown (``report.md`` next to ``report.json``; see :mod:`.bag_dataset`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def markdown_report(report: dict[str, Any]) -> str:
    """The build report as Markdown (what ``report.md`` holds)."""
    totals = report.get("totals", {})
    lines = [f"# Dataset build: {report['dataset']}", "",
             f"- {totals.get('episodes', 0)} episode(s), {totals.get('frames', 0)} frames at {report['rate_hz']:g} Hz"
             f" ({totals.get('duration_s', 0)} s); {totals.get('refused', 0)} bag(s) refused"]
    if "throughput" in report:
        t = report["throughput"]
        lines.append(f"- Build: {t['seconds']} s, {t['frames_per_s']} frames/s, {t['input_mb']} MB of bags "
                     f"({t['input_mb_per_s']} MB/s)")
    if "split" in report:
        s = report["split"]
        lines.append(f"- Split by episode (val_fraction {s['val_fraction']}, seed {s['seed']}): train {s['train']}, "
                     f"validation {s['validation']}")
    if report["episodes"]:
        lines += ["", "| episode | bag | instruction | s | frames | trimmed | rates (Hz) | missing | misaligned | "
                  "recorder drops | rejected commands |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in report["episodes"]:
            rates = ", ".join(f"{t}: {s['rate_hz']}" for t, s in e["streams"].items())
            missing = sum(s["missing"] for s in e["streams"].values())
            lines.append(f"| {e['file']} | {Path(e['bag']).name} | {e['instruction']} | {e['duration_s']} | "
                         f"{e['frames']} | {e['trimmed_frames']} | {rates} | {missing} | "
                         f"{sum(e['misaligned_frames'].values())} | {sum(e['recorder_dropped'].values())} | "
                         f"{sum(e['action']['rejected'].values())} |")
    if report.get("joint_ranges"):
        lines += ["", "| joint | proprio min | proprio max | action min | action max |", "|---|---|---|---|---|"]
        for joint, (lo, hi) in report["joint_ranges"]["proprio"].items():
            alo, ahi = report["joint_ranges"]["actions"][joint]
            lines.append(f"| {joint} | {lo} | {hi} | {alo} | {ahi} |")
    if report["refused"]:
        lines += ["", "## Refused", ""]
        lines += [f"- `{r['bag']}`: " + "; ".join(r["reasons"]) for r in report["refused"]]
    return "\n".join(lines) + "\n"
