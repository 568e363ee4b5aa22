"""Static ONNX operator coverage of the TensorRT ONNX parser, for checking exported graphs without TensorRT.

Sources (transcribed by hand, op names only):

- ``onnx/onnx-tensorrt`` ``docs/operators.md`` at the TensorRT 8.5 release ("TensorRT 8.5 supports operators up
  to Opset 17"; commit 6d0ab7be), the list shipped with JetPack 5.1.x (TensorRT 8.5.2);
- the ONNX-TensorRT 8.6 release notes (onnx/onnx-tensorrt pull request 904): added ``GroupNormalization``,
  ``LayerNormalization`` and ``IsInf`` (JetPack 6.0 ships TensorRT 8.6.2);
- TensorRT 10.x parser: opsets 9-20 up to 10.8 (JetPack 6.1/6.2 ship 10.3), including the opset-20 ``Gelu``.

Only the ops an exported policy can plausibly contain are listed; anything not in :data:`SUPPORTED_SINCE` is
reported as unsupported (conservative). Restrictions that matter for our graphs: the ``axes`` of
Slice/Squeeze/Unsqueeze must be constants (the exporter's constant folding gives that; :func:`constant_input_problems`
checks it), and integer-quantised ops (``MatMulInteger``, ``DynamicQuantizeLinear``; ORT's dynamic int8) are not
supported at all: the int8 encoder is an ONNX Runtime CPU option only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Version = tuple[int, int]

_SINCE_8_5 = (
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum",
    "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND",
    "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample",
    "GRU", "HardSigmoid", "HardSwish", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsNaN",
    "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN", "LSTM", "LpNormalization", "LpPool",
    "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mod", "Mul", "Neg",
    "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu",
    "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range",
    "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence",
    "RNN", "RoiAlign", "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape",
    "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK",
    "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
)

SUPPORTED_SINCE: dict[str, Version] = {
    **dict.fromkeys(_SINCE_8_5, (8, 5)),
    "GroupNormalization": (8, 6),
    "IsInf": (8, 6),
    "LayerNormalization": (8, 6),
    "Gelu": (10, 0),
}
"""ONNX op (default domain) -> first TensorRT version whose ONNX parser imports it."""

MAX_OPSET: dict[Version, int] = {(8, 5): 17, (8, 6): 17, (10, 0): 20}
"""TensorRT version (at least) -> highest ONNX opset its parser accepts (10.9+ accept more; 20 is kept)."""

CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {"Slice": (3,), "Squeeze": (1,), "Unsqueeze": (1,), "TopK": (1,),
                                                "CumSum": (1,), "Conv": (1,)}
"""Op -> input indices that must be initializers/constants for the parser."""

TARGETS: dict[str, Version] = {"JetPack 5.1 (TensorRT 8.5)": (8, 5), "JetPack 6.0 (TensorRT 8.6)": (8, 6),
                               "JetPack 6.1/6.2 (TensorRT 10.3)": (10, 3)}


def parse_version(text: str) -> Version:
    parts = [int(p) for p in text.split(".")[:2] if p.isdigit()]
    return (parts[0], parts[1] if len(parts) > 1 else 0) if parts else (0, 0)


def max_opset(version: Version) -> int:
    eligible = [v for v in MAX_OPSET if v <= version]
    return MAX_OPSET[max(eligible)] if eligible else 0


def unsupported_ops(ops: Iterable[str], version: Version) -> list[str]:
    """The ops of ``ops`` (``Name`` or ``domain::Name``) the parser of TensorRT ``version`` does not import."""
    out = []
    for op in sorted(set(ops)):
        since = SUPPORTED_SINCE.get(op)
        if since is None or since > version:
            out.append(op)
    return out


def coverage(graph_ops: Mapping[str, Iterable[str]], opset: int, version: Version) -> list[str]:
    """Problems (empty = parsable) of graphs (role -> op types) at ``opset`` for TensorRT ``version``."""
    problems = []
    limit = max_opset(version)
    if opset > limit:
        problems.append(f"opset {opset} > {limit}, the highest TensorRT {version[0]}.{version[1]} accepts")
    for role, ops in graph_ops.items():
        missing = unsupported_ops(ops, version)
        if missing:
            problems.append(f"{role}: unsupported op(s) {', '.join(missing)}")
    return problems


def coverage_report(graph_ops: Mapping[str, Iterable[str]], opset: int) -> dict[str, list[str]]:
    """Target name -> problems, for every JetPack TensorRT in :data:`TARGETS`."""
    return {name: coverage(graph_ops, opset, version) for name, version in TARGETS.items()}


def constant_input_problems(model) -> list[str]:
    """Nodes of an ``onnx.ModelProto`` whose inputs listed in :data:`CONSTANT_INPUTS` are not constants."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    problems = []
    for node in model.graph.node:
        for index in CONSTANT_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] and node.input[index] not in constants:
                problems.append(f"{node.op_type} {node.name or node.output[0]}: input {index} is not a constant")
    return problems
