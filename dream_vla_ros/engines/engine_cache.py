"""The TensorRT engine cache: plans keyed by what makes them valid, written atomically (no TensorRT import).

A plan (serialised engine) is valid only for the exact graph bytes, TensorRT version, GPU and build settings
it was built with. :class:`CacheKey` holds exactly those:

- ``graph_digest``: SHA-256 over the ONNX file and its external data (``manifest.graph_digest``): a retrained
  checkpoint of the same architecture has other weights, hence another digest;
- ``tensorrt``: TensorRT version (plans are not portable across versions);
- the :class:`~.device.DeviceIdentity`: GPU name, compute capability, SM count, memory size, board model and
  L4T release (every Orin module reports the GPU name "Orin" at sm 8.7; an AGX-built plan fails on an NX);
- ``precision``: ``fp32`` / ``fp16``;
- ``profile``: min/opt/max shapes of every dynamic input;
- ``builder``: the builder settings applied (workspace limit, optimisation level, precision constraints);
- ``recipe``: :data:`RECIPE_VERSION`, the version of the build code itself (which layers stay FP32, ...).

Not in the key (changing them must not rebuild): file names and locations, the manifest's other fields,
runtime settings (halting threshold, ``check_every``, seed, threads). Entries live in one directory:
``<role>-<key digest 16>.plan`` plus ``.json`` (the full key, the plan's SHA-256 and size, build time). The
plan is written first, then its JSON, each through a temporary file + rename, so a crash leaves either no
entry or a plan without JSON, which counts as absent. A plan whose SHA-256 no longer matches its JSON is
refused as corrupt (never silently rebuilt). Timing caches are per TensorRT version + device identity.
FP16 engine sets also get a parity record (``parity-<digest 16>.json``, :mod:`.parity`) next to their plans.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dream_vla_ros.engines.device import DeviceIdentity
from dream_vla_ros.engines.manifest import sha256_file, write_atomic
from dream_vla_ros.errors import EngineError

ProfileShapes = tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]

RECIPE_VERSION = 2
"""Bump whenever the build code changes what it builds (so every cached plan is rebuilt)."""

Builder = tuple[tuple[str, int | str], ...]


@dataclass(frozen=True)
class CacheKey:
    graph_digest: str
    tensorrt: str
    gpu: str
    compute_capability: str
    sm_count: int
    memory_mib: int
    module: str
    l4t: str
    precision: str
    profile: ProfileShapes
    builder: Builder = ()
    recipe: int = RECIPE_VERSION

    def canonical(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["profile"] = [[name, list(lo), list(opt), list(hi)] for name, lo, opt, hi in self.profile]
        data["builder"] = dict(self.builder)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CacheKey:
        """Raises KeyError / TypeError / ValueError on an entry written by another recipe's key format."""
        return cls(
            graph_digest=str(data["graph_digest"]),
            tensorrt=str(data["tensorrt"]),
            gpu=str(data["gpu"]),
            compute_capability=str(data["compute_capability"]),
            sm_count=int(data["sm_count"]),
            memory_mib=int(data["memory_mib"]),
            module=str(data["module"]),
            l4t=str(data["l4t"]),
            precision=str(data["precision"]),
            profile=tuple((str(n), tuple(lo), tuple(opt), tuple(hi)) for n, lo, opt, hi in data["profile"]),
            builder=_builder(dict(data["builder"])),
            recipe=int(data["recipe"]),
        )

    def differences(self, other: CacheKey) -> list[str]:
        """Human-readable list of the fields that differ (``field: old -> new``), for rebuild messages."""
        out = []
        for f in dataclasses.fields(self):
            a, b = getattr(other, f.name), getattr(self, f.name)
            if a != b:
                short = (lambda v: v[:12] + "...") if f.name == "graph_digest" else (lambda v: v)
                out.append(f"{f.name}: {short(a)} -> {short(b)}")
        return out


@dataclass(frozen=True)
class CacheEntry:
    role: str
    key: CacheKey
    plan: Path
    info: Mapping[str, Any]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "unknown"


class EngineCache:
    """One cache directory (created on first write)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def plan_path(self, role: str, key: CacheKey) -> Path:
        return self.directory / f"{role}-{key.digest()[:16]}.plan"

    def timing_cache_path(self, tensorrt: str, device: DeviceIdentity) -> Path:
        """One timing cache per TensorRT version and device identity (tactic timings are per GPU)."""
        identity = hashlib.sha256(json.dumps(dataclasses.asdict(device), sort_keys=True).encode()).hexdigest()
        return self.directory / f"timing-trt{_slug(tensorrt)}-{_slug(device.gpu)}-{identity[:12]}.cache"

    def parity_path(self, set_digest: str) -> Path:
        """Where the parity record (:mod:`.parity`) of the engine set named ``set_digest`` lives."""
        return self.directory / f"parity-{set_digest[:16]}.json"

    def entries(self, role: str) -> Iterator[CacheEntry]:
        """Complete entries (plan + readable JSON) for ``role``, newest first."""
        found = []
        for meta in self.directory.glob(f"{role}-*.json"):
            try:
                info = json.loads(meta.read_text())
                key = CacheKey.from_json(info["key"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            plan = meta.with_suffix(".plan")
            if plan.is_file():
                found.append(CacheEntry(role, key, plan, info))
        yield from sorted(found, key=lambda e: float(e.info.get("built_at", 0.0)), reverse=True)

    def lookup(self, role: str, key: CacheKey) -> tuple[CacheEntry | None, str]:
        """(entry, "") on a hit; (None, why) on a miss, naming what changed against the newest other entry.

        A hit's plan is verified against the SHA-256 recorded at build time: a mismatch raises EngineError.
        """
        path = self.plan_path(role, key)
        meta = path.with_suffix(".json")
        if path.is_file() and meta.is_file():
            try:
                info = json.loads(meta.read_text())
                stored = CacheKey.from_json(info["key"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise EngineError(f"{meta}: unreadable cache entry ({exc}); delete it or rebuild with "
                                  "--force") from None
            if stored != key:
                raise EngineError(f"{meta}: cache entry key does not match its file name; delete it or rebuild "
                                  "with --force")
            verify_plan(path, info)
            return CacheEntry(role, key, path, info), ""
        others = list(self.entries(role))
        if not others:
            return None, f"no cached {role} engine in {self.directory}"
        changes = key.differences(others[0].key)
        return None, f"cached {role} engine was built for another key ({'; '.join(changes)})"

    def store(self, role: str, key: CacheKey, plan: bytes, extra: Mapping[str, Any] | None = None) -> CacheEntry:
        """Write plan then JSON, each atomically; returns the new entry."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.plan_path(role, key)
        write_atomic(path, plan)
        info = {
            "key": key.to_json(),
            "plan_sha256": hashlib.sha256(plan).hexdigest(),
            "plan_bytes": len(plan),
            "built_at": time.time(),
            **dict(extra or {}),
        }
        write_atomic(path.with_suffix(".json"), (json.dumps(info, indent=2) + "\n").encode())
        return CacheEntry(role, key, path, info)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock of the cache directory (two builders never write the same entry at once)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def verify_plan(path: Path, info: Mapping[str, Any]) -> None:
    """Refuse a plan whose size or SHA-256 differs from what was recorded when it was built."""
    size = path.stat().st_size
    if "plan_bytes" in info and size != int(info["plan_bytes"]):
        raise EngineError(f"{path}: {size} bytes, built as {info['plan_bytes']}: corrupt engine; rebuild with "
                          "'dream-vla-ros build-engine --force'")
    actual = sha256_file(path)
    if actual != info.get("plan_sha256"):
        raise EngineError(f"{path}: sha256 mismatch (file {actual[:12]}..., cache {str(info.get('plan_sha256'))[:12]}"
                          "...): corrupt engine; rebuild with 'dream-vla-ros build-engine --force'")


def _builder(settings: Mapping[str, int | str]) -> Builder:
    return tuple(sorted((str(k), v if isinstance(v, str) else int(v)) for k, v in settings.items()))


def make_key(graph_digest: str, tensorrt: str, device: DeviceIdentity, precision: str,
             profile: Sequence[tuple[str, Sequence[int], Sequence[int], Sequence[int]]],
             builder: Mapping[str, int | str] | None = None, recipe: int | None = None) -> CacheKey:
    """A :class:`CacheKey` with the profile sorted by input name (input order does not change an engine);
    ``recipe`` defaults to the current :data:`RECIPE_VERSION`."""
    shapes = tuple(sorted((str(n), tuple(map(int, lo)), tuple(map(int, opt)), tuple(map(int, hi)))
                          for n, lo, opt, hi in profile))
    return CacheKey(graph_digest, str(tensorrt), device.gpu, device.compute_capability, device.sm_count,
                    device.memory_mib, device.module, device.l4t, str(precision), shapes,
                    _builder(builder or {}), RECIPE_VERSION if recipe is None else recipe)


def set_digest(keys: Mapping[str, CacheKey], *extra: str) -> str:
    """SHA-256 naming a set of engines (role -> key) plus ``extra`` strings (e.g. the parity samples' hash)."""
    text = "\n".join([*(f"{role}:{keys[role].digest()}" for role in sorted(keys)), *extra])
    return hashlib.sha256(text.encode()).hexdigest()
