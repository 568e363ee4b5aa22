"""The export manifest (``manifest.json`` next to the ONNX files) and its validation (json + hashlib only).

An export directory holds the split graphs of one checkpoint and ``manifest.json``:

- ``format`` / ``format_version``, ``package_version``, the tool versions that wrote it, ``opset``;
- ``model``: the full :class:`ModelConfig` (so engines need no checkpoint), ``source``: the checkpoint's
  weights SHA-256 it was exported from;
- ``halting``: the change metric baked into the step graph (``metric``, ``relative``);
- ``batch``: the batch range of the optimisation profiles (``min``, ``opt``, ``max``);
- ``graphs``: role -> file, input and output specs (name, dtype, shape with ``"batch"`` for the dynamic
  dimension), the ONNX op types used, the external data files, a digest of the graph bytes (ONNX file plus
  its external data, the TensorRT cache key's first part), and notes (simplification, parity, int8 accuracy);
- ``parity``: the sample set FP16 engines are checked against (``engines.parity``: observations and their
  ONNX Runtime FP32 decode);
- ``files``: every file of the export -> sha256 and size.

:func:`load_export` refuses, with an :class:`EngineError` that names the file and the problem, a missing or
unreadable manifest, an unknown format, an invalid model config, a missing file, a file whose SHA-256 or size
differs (corrupt or replaced), a graph spec that does not match the model config, or an export whose source
weights differ from the checkpoint next to it (stale export).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dream_vla_ros.errors import ConfigError, EngineError
from dream_vla_ros.files import sha256_file
from dream_vla_ros.policy.config import ModelConfig, model_config_from_mapping

FORMAT = "dream_vla_ros.onnx_export"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
EXPORT_SUBDIR = "onnx"
BATCH = "batch"

DTYPES = ("float32", "float16", "int64", "int32", "bool")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync'd, then renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: ``shape`` has ints and ``"batch"`` for the dynamic batch dimension."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> TensorSpec:
        try:
            name, dtype, shape = str(data["name"]), str(data["dtype"]), tuple(data["shape"])
        except (KeyError, TypeError) as exc:
            raise EngineError(f"{where}: tensor spec needs name, dtype and shape ({exc})") from None
        if dtype not in DTYPES:
            raise EngineError(f"{where}: tensor {name!r} has unknown dtype {dtype!r}")
        if not all((isinstance(d, int) and d >= 1) or d == BATCH for d in shape):
            raise EngineError(f"{where}: tensor {name!r} has invalid shape {list(shape)}")
        return cls(name, dtype, shape)

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else int(d) for d in self.shape)

    @property
    def dynamic(self) -> bool:
        return BATCH in self.shape


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: ``role`` (encode, step, coda, encode_int8), file, specs, ops, digest, notes."""

    role: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ops: tuple[str, ...]
    external_data: tuple[str, ...]
    digest: str
    notes: Mapping[str, Any]

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    def profile(self, batch: BatchRange) -> list[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """(input, min, opt, max) shapes of every dynamic input for an optimisation profile."""
        return [
            (t.name, t.concrete(batch.min), t.concrete(batch.opt), t.concrete(batch.max))
            for t in self.inputs
            if t.dynamic
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "ops": list(self.ops),
            "external_data": list(self.external_data),
            "digest": self.digest,
            "notes": dict(self.notes),
        }


@dataclass(frozen=True)
class BatchRange:
    min: int = 1
    opt: int = 1
    max: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise EngineError(f"batch range must satisfy 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")


@dataclass(frozen=True)
class Export:
    """A validated export directory."""

    directory: Path
    document: Mapping[str, Any]
    config: ModelConfig
    opset: int
    metric: str
    relative: bool
    batch: BatchRange
    graphs: Mapping[str, GraphSpec]

    def graph(self, role: str, hint: str = "") -> GraphSpec:
        if role not in self.graphs:
            extra = f" ({hint})" if hint else ""
            raise EngineError(f"{self.directory}: the export has no {role!r} graph{extra}")
        return self.graphs[role]

    def path(self, spec: GraphSpec) -> Path:
        return self.directory / spec.file

    @property
    def parity_samples(self) -> Path | None:
        """The parity sample set (``.parity``) of this export, or None for an export written without one."""
        entry = self.document.get("parity")
        return self.directory / str(entry["file"]) if isinstance(entry, Mapping) and "file" in entry else None


def graph_digest(directory: Path, file: str, external_data: Sequence[str]) -> str:
    """SHA-256 over the ONNX file and its external data files (in order), names included."""
    digest = hashlib.sha256()
    for name in (file, *external_data):
        digest.update(name.encode() + b"\0" + sha256_file(directory / name).encode() + b"\n")
    return digest.hexdigest()


def file_entries(directory: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {n: {"sha256": sha256_file(directory / n), "bytes": (directory / n).stat().st_size} for n in sorted(names)}


def find_export(model_dir: str | Path) -> Path:
    """The export directory for ``model_dir``: itself when it holds a manifest, else its ``onnx/`` subfolder."""
    path = Path(model_dir)
    if (path / MANIFEST_FILE).is_file():
        return path
    if (path / EXPORT_SUBDIR / MANIFEST_FILE).is_file():
        return path / EXPORT_SUBDIR
    raise EngineError(
        f"{path}: no ONNX export found (expected {MANIFEST_FILE} there or in {EXPORT_SUBDIR}/); create one with "
        f"'dream-vla-ros export --model {path}'"
    )


def load_export(model_dir: str | Path, *, verify_hashes: bool = True) -> Export:
    """Find, read and validate an export (see the module doc for what is refused)."""
    directory = find_export(model_dir)
    path = directory / MANIFEST_FILE
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(document, dict):
        raise EngineError(f"{path}: expected a JSON object")
    if document.get("format") != FORMAT:
        raise EngineError(f"{path}: format is {document.get('format')!r}, expected {FORMAT!r}")
    if document.get("format_version") != FORMAT_VERSION:
        raise EngineError(
            f"{path}: format_version {document.get('format_version')!r} is not supported (this package reads "
            f"{FORMAT_VERSION}); re-export the model"
        )
    try:
        config = model_config_from_mapping(dict(document["model"]))
    except (KeyError, TypeError, ConfigError) as exc:
        raise EngineError(f"{path}: invalid model config: {exc}") from None
    try:
        opset = int(document["opset"])
        metric, relative = str(document["halting"]["metric"]), bool(document["halting"]["relative"])
        batch = BatchRange(**{k: int(document["batch"][k]) for k in ("min", "opt", "max")})
        files = dict(document["files"])
        graphs_doc = dict(document["graphs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineError(f"{path}: incomplete manifest: missing or invalid {exc}") from None
    for name, entry in files.items():
        _check_file(directory, name, entry, verify_hashes)
    graphs = {role: _graph(directory, role, entry, files, path) for role, entry in graphs_doc.items()}
    parity = document.get("parity")
    if parity is not None and (not isinstance(parity, Mapping) or str(parity.get("file")) not in files):
        raise EngineError(f"{path}: the 'parity' entry names no file listed under 'files'")
    export = Export(directory, document, config, opset, metric, relative, batch, graphs)
    check_specs(export)
    _check_source(export)
    return export


def _check_file(directory: Path, name: str, entry: Any, verify: bool) -> None:
    target = directory / name
    if Path(name).name != name:
        raise EngineError(f"{directory / MANIFEST_FILE}: file {name!r} must be a plain name in the directory")
    if not target.is_file():
        raise EngineError(f"{target}: missing (listed in {MANIFEST_FILE}); re-export the model")
    if not isinstance(entry, Mapping) or "sha256" not in entry:
        raise EngineError(f"{directory / MANIFEST_FILE}: file {name!r} has no sha256")
    if "bytes" in entry and target.stat().st_size != int(entry["bytes"]):
        raise EngineError(
            f"{target}: size {target.stat().st_size} bytes, manifest says {entry['bytes']}: corrupt or replaced"
        )
    if verify:
        actual = sha256_file(target)
        if actual != entry["sha256"]:
            raise EngineError(
                f"{target}: sha256 mismatch (file {actual[:12]}..., manifest {str(entry['sha256'])[:12]}...): "
                "corrupt or replaced; re-export the model"
            )


def _graph(directory: Path, role: str, entry: Any, files: Mapping[str, Any], where: Path) -> GraphSpec:
    try:
        spec = GraphSpec(
            role=role,
            file=str(entry["file"]),
            inputs=tuple(TensorSpec.from_json(t, f"{where} graph {role}") for t in entry["inputs"]),
            outputs=tuple(TensorSpec.from_json(t, f"{where} graph {role}") for t in entry["outputs"]),
            ops=tuple(entry.get("ops", ())),
            external_data=tuple(entry.get("external_data", ())),
            digest=str(entry["digest"]),
            notes=dict(entry.get("notes", {})),
        )
    except (KeyError, TypeError) as exc:
        raise EngineError(f"{where}: graph {role!r} entry is incomplete ({exc})") from None
    for name in (spec.file, *spec.external_data):
        if name not in files:
            raise EngineError(f"{where}: graph {role!r} uses {name!r}, which is not listed under 'files'")
    return spec


def expected_specs(config: ModelConfig, metric: str) -> dict[str, tuple[dict[str, tuple], dict[str, tuple]]]:
    """Role -> (inputs, outputs): name -> (dtype, shape) the model config implies for each graph."""
    b, h, j, w = BATCH, config.chunk_length, config.num_joints, config.decoder.width
    c, s, tokens = len(config.vision.cameras), config.vision.image_size, config.tokenizer.max_tokens
    heads, width = config.decoder.heads, config.decoder.width
    images = {"images": ("float32", (b, c, 3, s, s)), "tokens": ("int64", (b, tokens)), "proprio": ("float32", (b, j))}
    if config.decoder.kind == "recurrent":
        layers, context = config.decoder.core_layers, config.num_context_tokens + 1
        kv = {f"{x}{i}": ("float32", (b, heads, context, width // heads)) for i in range(layers) for x in "kv"}
        state = {"prelude_state": ("float32", (b, h, w))}
        encode_out = {**state, "scratchpad0": ("float32", (b, h, w)), **kv}
        step_in = {"scratchpad": ("float32", (b, h, w)), **state, **kv}
        if metric == "action":
            step_in["actions"] = ("float32", (b, h, j))
        step_out = {
            "next_scratchpad": ("float32", (b, h, w)),
            "next_actions": ("float32", (b, h, j)),
            "change": ("float32", (b,)),
        }
        return {
            "encode": ({**images, "noise": ("float32", (b, h, w))}, encode_out),
            "step": (step_in, step_out),
            "coda": ({"scratchpad": ("float32", (b, h, w))}, {"actions": ("float32", (b, h, j))}),
        }
    layers, context = config.decoder.discrete_layers, config.num_context_tokens + 1
    kv = {f"{x}{i}": ("float32", (b, heads, context, width // heads)) for i in range(layers) for x in "kv"}
    rows = {"rows": ("float32", (b, h, w))}
    return {
        "encode": (images, {**rows, **kv}),
        "step": (
            {"values": ("int64", (b, h, j)), **rows, **kv},
            {"logits": ("float32", (b, h, j, config.decoder.bins))},
        ),
    }


def check_specs(export: Export) -> None:
    """Every graph's inputs/outputs must be exactly what the manifest's model config implies."""
    expected = expected_specs(export.config, export.metric)
    where = export.directory / MANIFEST_FILE
    for role in expected:
        export.graph(role, "re-export the model")
    for role, spec in export.graphs.items():
        base = role.removesuffix("_int8")
        if base not in expected:
            raise EngineError(f"{where}: unknown graph role {role!r}")
        sides = (("input", spec.inputs, expected[base][0]), ("output", spec.outputs, expected[base][1]))
        for kind, tensors, want in sides:
            got = {t.name: (t.dtype, tuple(t.shape)) for t in tensors}
            if got != want:
                diff = sorted(set(got.items()) ^ set(want.items()))
                raise EngineError(
                    f"{where}: graph {role!r} {kind}s do not match the model config (first difference: "
                    f"{diff[0] if diff else 'order'}); the export and the config disagree"
                )


def _check_source(export: Export) -> None:
    """An export inside a checkpoint directory must come from that checkpoint's weights."""
    parent = export.directory.parent
    checkpoint = parent / "config.json"
    if export.directory.name != EXPORT_SUBDIR or not checkpoint.is_file():
        return
    try:
        weights = json.loads(checkpoint.read_text())["weights"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # the checkpoint itself is checked by the torch loader; the export stands on its own manifest
    source = (export.document.get("source") or {}).get("weights_sha256")
    if source != weights:
        raise EngineError(
            f"{export.directory}: stale export: exported from weights {str(source)[:12]}..., but {checkpoint} has "
            f"{str(weights)[:12]}...; re-export with 'dream-vla-ros export --model {parent}'"
        )


def check_session_io(spec: GraphSpec, inputs: Sequence[tuple[str, str, Sequence[Any]]],
                     outputs: Sequence[tuple[str, str, Sequence[Any]]], what: str) -> None:
    """Compare a loaded graph's (name, dtype, shape) inputs/outputs with the manifest (dynamic dims as any)."""
    for kind, actual, want in (("inputs", inputs, spec.inputs), ("outputs", outputs, spec.outputs)):
        got = {name: (dtype, len(shape)) for name, dtype, shape in actual}
        expected = {t.name: (t.dtype, len(t.shape)) for t in want}
        if got != expected:
            raise EngineError(
                f"{what}: {kind} {sorted(got.items())} do not match the manifest's {sorted(expected.items())}: "
                "the graph file does not belong to this manifest"
            )
        for name, _, shape in actual:
            spec_shape = next(t.shape for t in want if t.name == name)
            for d, e in zip(shape, spec_shape, strict=True):
                if isinstance(d, int) and isinstance(e, int) and d != e:
                    raise EngineError(
                        f"{what}: {name} has shape {list(shape)}, the manifest says {list(spec_shape)}: "
                        "mismatched graph"
                    )
