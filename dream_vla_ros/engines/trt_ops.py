"""Static ONNX operator coverage of the TensorRT 10 ONNX parser, for checking exported graphs without TensorRT.

Source (transcribed by hand, op names only): ``onnx/onnx-tensorrt`` ``docs/operators.md`` for TensorRT 10.x
(opsets 9-20 up to 10.8; JetPack 6.1/6.2 ship 10.3), the only TensorRT this package supports.

Only the ops an exported policy can plausibly contain are listed; anything not in :data:`SUPPORTED_OPS` is
reported as unsupported (conservative). Restrictions that matter for our graphs: the ``axes`` of
Slice/Squeeze/Unsqueeze must be constants (the exporter's constant folding gives that; :func:`constant_input_problems`
checks it), and integer-quantised ops (``MatMulInteger``, ``DynamicQuantizeLinear``; ORT's dynamic int8) are not
supported at all: the int8 encoder is an ONNX Runtime CPU option only. Opsets below 17 decompose
LayerNormalization into primitive ops that an FP16 build cannot keep in FP32: refused too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Version = tuple[int, int]

_OPS = (
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

SUPPORTED_OPS = frozenset((*_OPS, "GroupNormalization", "IsInf", "LayerNormalization", "Gelu"))
"""ONNX ops (default domain) the TensorRT 10 ONNX parser imports."""

OPSETS = range(17, 21)
"""Opsets accepted: 17 (LayerNormalization as one op) up to 20, the highest TensorRT 10.3's parser takes."""

CONSTANT_INPUTS: dict[str, tuple[int, ...]] = {"Slice": (3,), "Squeeze": (1,), "Unsqueeze": (1,), "TopK": (1,),
                                                "CumSum": (1,), "Conv": (1,)}
"""Op -> input indices that must be initializers/constants for the parser."""

TARGET = "JetPack 6.1/6.2 (TensorRT 10.3)"


def parse_version(text: str) -> Version:
    parts = [int(p) for p in text.split(".")[:2] if p.isdigit()]
    return (parts[0], parts[1] if len(parts) > 1 else 0) if parts else (0, 0)


def unsupported_ops(ops: Iterable[str]) -> list[str]:
    """The ops of ``ops`` (``Name`` or ``domain::Name``) the TensorRT 10 parser does not import."""
    return sorted(set(ops) - SUPPORTED_OPS)


def coverage(graph_ops: Mapping[str, Iterable[str]], opset: int) -> list[str]:
    """Problems (empty = parsable and FP16-safe) of graphs (role -> op types) exported at ``opset``."""
    problems = []
    if opset not in OPSETS:
        problems.append(f"opset {opset} is outside {OPSETS.start}..{OPSETS.stop - 1} (below 17 LayerNorm is "
                        "decomposed and cannot stay FP32; above 20 the TensorRT 10.3 parser refuses it)")
    for role, ops in graph_ops.items():
        missing = unsupported_ops(ops)
        if missing:
            problems.append(f"{role}: unsupported op(s) {', '.join(missing)}")
    return problems


def coverage_report(graph_ops: Mapping[str, Iterable[str]], opset: int) -> dict[str, list[str]]:
    """{:data:`TARGET`: problems}, as the export's manifest records it."""
    return {TARGET: coverage(graph_ops, opset)}


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
