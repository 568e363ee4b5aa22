"""Merge several episode datasets into one (for example two `collect` runs, or several recording sessions).

The sources must agree on joint names, ``dt`` and cameras (name and size). Episode files are hard-linked into
the new dataset where the filesystem allows (no extra disk space), copied otherwise, and renumbered in source
order; statistics are recomputed over the merged episodes. An episode whose (task, seed) pair an earlier
source already holds (seed >= 0) is skipped, so overlapping seed ranges do not weigh a scene twice. Phrasings
are united per task; a phrasing that is a training phrasing in one source and held out in another is refused,
because training on it would leak it into the held-out evaluation.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dream_vla_ros.errors import InputError
from dream_vla_ros.train.dataset import DatasetMeta, DatasetWriter, EpisodeEntry, episode_file, load_meta


@dataclass(frozen=True)
class MergeResult:
    """The merged dataset's metadata and the episodes left out as duplicates (source, task, seed)."""

    meta: DatasetMeta
    duplicates: tuple[tuple[str, str, int], ...]


def merge_datasets(
    sources: Sequence[str | Path],
    out: str | Path,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> MergeResult:
    """Write the union of the ``sources`` datasets to ``out``; incompatible sources raise InputError."""
    if len(sources) < 2:
        raise InputError(f"merge: give at least two datasets, got {len(sources)}")
    out_path = Path(out).resolve()
    if any(Path(s).resolve() == out_path for s in sources):
        raise InputError(f"merge: the output {out} is also a source")
    metas = [load_meta(s) for s in sources]
    _check_compatible(sources, metas)
    writer = DatasetWriter(
        out,
        metas[0].joint_names,
        metas[0].dt,
        metas[0].cameras,
        phrasings=_merged_phrasings(sources, metas),
        source={"merged_from": [{"path": str(s), "episodes": len(m.episodes), "source": m.source}
                                for s, m in zip(sources, metas, strict=True)]},
        overwrite=overwrite,
    )
    entries: list[EpisodeEntry] = []
    duplicates: list[tuple[str, str, int]] = []
    seen: set[tuple[str, int]] = set()
    for source, meta in zip(sources, metas, strict=True):
        for entry in meta.episodes:
            key = (entry.task, entry.seed)
            if entry.seed >= 0 and key in seen:
                duplicates.append((str(source), entry.task, entry.seed))
                continue
            seen.add(key)
            target = episode_file(len(entries))
            _link_or_copy(Path(source) / entry.file, writer.root / target)
            entries.append(replace(entry, file=target))
        log(f"{source}: {len(meta.episodes)} episodes")
    if duplicates:
        log(f"skipped {len(duplicates)} episodes whose (task, seed) an earlier source already holds")
    merged = writer.finalize(entries, complete=all(m.complete for m in metas))
    log(f"wrote {len(merged.episodes)} episodes ({merged.num_frames} frames) to {out}")
    return MergeResult(merged, tuple(duplicates))


def _check_compatible(sources: Sequence[str | Path], metas: Sequence[DatasetMeta]) -> None:
    first = metas[0]
    problems = []
    for source, meta in zip(sources[1:], metas[1:], strict=True):
        if meta.joint_names != first.joint_names:
            problems.append(f"{source}: joints {list(meta.joint_names)} differ from {list(first.joint_names)}")
        if not math.isclose(meta.dt, first.dt, rel_tol=1e-9):
            problems.append(f"{source}: dt {meta.dt} differs from {first.dt}")
        if meta.cameras != first.cameras:
            problems.append(f"{source}: cameras {meta.cameras} differ from {first.cameras}")
    if problems:
        raise InputError(f"merge: the datasets do not fit together (first: {sources[0]}): " + "; ".join(problems))


def _merged_phrasings(
    sources: Sequence[str | Path], metas: Sequence[DatasetMeta]
) -> dict[str, dict[str, list[str]]]:
    merged: dict[str, dict[str, list[str]]] = {}
    for meta in metas:
        for task, lists in meta.phrasings.items():
            into = merged.setdefault(task, {"train": [], "heldout": []})
            for split in ("train", "heldout"):
                into[split].extend(p for p in lists.get(split, []) if p not in into[split])
    leaks = [f"{task}: {p!r}" for task, lists in merged.items() for p in lists["train"] if p in lists["heldout"]]
    if leaks:
        raise InputError(
            f"merge: phrasings held out in one of {[str(s) for s in sources]} are training phrasings in another: "
            + ", ".join(leaks)
        )
    return merged


def _link_or_copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise InputError(f"merge: episode file {source} is missing")
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
