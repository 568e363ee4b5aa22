"""GPU backends against the CPU torch reference (marked ``gpu``: skipped with a printed reason without CUDA).

torch CUDA fp32 (eager and CUDA graphs) matches CPU within 1e-4 with the same k away from the threshold;
fp16/bf16 stay within FP16_TOLERANCE; the shipped model's torch fp16 decode is judged by the FP16 parity rule;
ONNX Runtime's CUDA provider and the TensorRT backend (build with progress, FP16 parity record, cache hits,
corrupt plans refused) run when this machine has them (each skips with the reason otherwise). Timings,
including the halting loop's cost per iteration per backend, are printed (run with -s to see them).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dream_vla_ros.engines.loader import load_engine  # noqa: E402
from dream_vla_ros.errors import EngineError  # noqa: E402
from dream_vla_ros.policy.checkpoint import save_checkpoint  # noqa: E402
from dream_vla_ros.policy.config import HaltingConfig, preset  # noqa: E402
from dream_vla_ros.policy.model import build_model  # noqa: E402
from dream_vla_ros.policy.synthetic import fit, synthetic_samples  # noqa: E402

pytestmark = pytest.mark.gpu

DELTA = 3e-5
FP16_TOLERANCE = 0.05  # physical units of the tiny model's targets (|targets| <= ~2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = preset("tiny", halting=HaltingConfig(delta=DELTA, k_max=12, k_min=2))
    model = build_model(config, load_pretrained=False)
    fit(model, synthetic_samples(config, 256, np.random.default_rng(0)), 40, batch_size=32)
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp("gpu") / "model")


@pytest.fixture(scope="module")
def observations(model_dir):
    from dream_vla_ros.policy.checkpoint import load_model_config

    config = load_model_config(model_dir)
    return [s.observation() for s in synthetic_samples(config, 20, np.random.default_rng(5))]


@pytest.fixture(scope="module")
def reference(model_dir, observations):
    engine = load_engine(model_dir, "torch", device="cpu", threads=1)
    return [engine.infer(o) for o in observations]


def _median_ms(engine, observation, runs: int = 20) -> float:
    engine.infer(observation)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        engine.infer(observation)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _compare(engine, observations, reference, atol: float, same_k: float) -> float:
    got = [engine.infer(o) for o in observations]
    diffs = [np.abs(g.positions - r.positions).max() for g, r in zip(got, reference, strict=True)]
    k_same = np.mean([g.iterations == r.iterations for g, r in zip(got, reference, strict=True)])
    assert max(diffs) <= atol, f"{engine.name}: max diff {max(diffs):.2e}"
    assert k_same >= same_k, f"{engine.name}: same k for {k_same:.0%}"
    return float(max(diffs))


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "cuda-graphs"])
def test_torch_cuda_fp32_matches_cpu(model_dir, observations, reference, graphs):
    engine = load_engine(model_dir, "torch", device="cuda", cuda_graphs=graphs)
    assert ("cuda-graphs" in engine.name) == graphs
    diff = _compare(engine, observations, reference, atol=1e-4, same_k=0.95)
    print(f"\n{engine.name}: max diff {diff:.2e}, {_median_ms(engine, observations[0]):.2f} ms/chunk")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_torch_cuda_reduced_precision(model_dir, observations, reference, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    engine = load_engine(model_dir, "torch", device="cuda", precision=precision)
    diff = _compare(engine, observations, reference, atol=FP16_TOLERANCE, same_k=0.8)
    print(f"\n{engine.name}: max diff {diff:.2e}, {_median_ms(engine, observations[0]):.2f} ms/chunk")


def test_shipped_model_cuda_fp32_matches_cpu():
    """The shipped sim model (convolutional stem: TF32 convolutions would move it by ~2e-4) within 1e-4."""
    from dream_vla_ros.paths import resolve_model
    from dream_vla_ros.policy.checkpoint import load_model_config

    model = "metaworld_mt10"
    config = load_model_config(resolve_model(model))
    observations = [s.observation() for s in synthetic_samples(config, 8, np.random.default_rng(11))]
    cpu = load_engine(model, "torch", device="cpu", threads=1)
    reference = [cpu.infer(o) for o in observations]
    for graphs in (False, True):
        engine = load_engine(model, "torch", device="cuda", cuda_graphs=graphs)
        diff = _compare(engine, observations, reference, atol=1e-4, same_k=1.0)
        print(f"\nshipped model, {engine.name}: max diff {diff:.2e}")


def test_cuda_graphs_replay_is_reused_and_deterministic(model_dir, observations):
    engine = load_engine(model_dir, "torch", device="cuda")
    a, b = engine.infer(observations[0]), engine.infer(observations[0])
    np.testing.assert_array_equal(a.positions, b.positions)
    c = engine.infer(observations[1])
    assert not np.array_equal(a.positions, c.positions)


def test_onnxruntime_cuda_provider(model_dir, observations, reference, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has no CUDA provider ({', '.join(ort.get_available_providers())})")
    from dream_vla_ros.engines.export import export_model

    export_model(model_dir, tmp_path / "onnx")
    engine = load_engine(tmp_path / "onnx", "onnxruntime", device="cuda", fallback=False)
    assert engine.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    diff = _compare(engine, observations, reference, atol=1e-3, same_k=0.9)
    print(f"\n{engine.name}: max diff {diff:.2e}, {_median_ms(engine, observations[0]):.2f} ms/chunk")


def _shipped_export(tmp_path: Path) -> Path:
    from dream_vla_ros.engines.export import export_model
    from dream_vla_ros.paths import resolve_model

    export_model(resolve_model("metaworld_mt10"), tmp_path / "mt10_onnx")
    return tmp_path / "mt10_onnx"


def test_shipped_model_torch_fp16_against_the_fp32_parity_samples(tmp_path):
    """torch CUDA fp16 (CUDA graphs) on the shipped model's parity samples, judged by the rule FP16 TensorRT
    engines must pass (printed; the chunk bound is asserted, the full rule is the TensorRT test's)."""
    from dream_vla_ros.engines import parity

    samples = parity.load_samples(_shipped_export(tmp_path) / parity.SAMPLES_FILE)
    engine = load_engine("metaworld_mt10", "torch", device="cuda", precision="fp16")
    graphs, host, halting = engine._graphs, engine._host, engine._policy.halting

    def decode(inputs, seeds):
        return graphs.decode(inputs, host.noise(seeds), halting)

    got = parity.decode_samples(samples.observations, samples.seeds, host.prepare, decode, 1)
    result = parity.compare(samples.reference, got, halting.delta)
    print(f"\nshipped model, torch cuda fp16 cuda-graphs vs ONNX Runtime CPU fp32: {result.summary()}")
    assert result.max_action_error <= parity.ACTION_TOLERANCE


def test_halting_loop_cost_per_iteration(tmp_path):
    """Per-iteration cost of the core loop (core stage ms / k) on the shipped model, every GPU backend here."""
    from dream_vla_ros.engines.base import dummy_observation

    export = _shipped_export(tmp_path)
    candidates = [("torch", "metaworld_mt10", {"device": "cuda", "cuda_graphs": False}),
                  ("torch", "metaworld_mt10", {"device": "cuda"}),
                  ("torch", "metaworld_mt10", {"device": "cuda", "precision": "fp16"}),
                  ("onnxruntime", export, {"device": "cuda", "fallback": False}),
                  ("tensorrt", export, {"precision": "fp16", "cache_dir": str(tmp_path / "trt")})]
    ran = 0
    for backend, source, settings in candidates:
        try:
            engine = load_engine(source, backend, **settings)
        except EngineError as exc:
            print(f"\n{backend} {settings}: unavailable ({str(exc).splitlines()[0][:160]})")
            continue
        observation = dummy_observation(engine.metadata, "open the drawer")
        for _ in range(3):
            engine.infer(observation)
        runs = [engine.infer(observation) for _ in range(30)]
        core = float(np.median([r.timings_ms["core"] for r in runs]))
        k = float(np.mean([r.iterations for r in runs]))
        total = float(np.median([r.timings_ms["total"] for r in runs]))
        print(f"\n{engine.name}: total {total:.2f} ms, core {core:.3f} ms for k {k:.1f}: {core / k * 1e3:.0f} us "
              "per iteration")
        ran += 1
    assert ran >= 2  # torch CUDA eager and graphs run wherever this test runs


def test_tensorrt_build_cache_and_run(model_dir, observations, reference, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"TensorRT is not installed here ({type(exc).__name__}: {exc})")
    from dream_vla_ros.engines.export import export_model

    export_model(model_dir, tmp_path / "onnx")
    cache = tmp_path / "cache"
    progress: list[str] = []
    for precision, atol in (("fp32", 1e-3), ("fp16", FP16_TOLERANCE)):
        engine = load_engine(tmp_path / "onnx", "tensorrt", precision=precision, cache_dir=str(cache),
                             progress=progress.append)
        diff = _compare(engine, observations, reference, atol=atol, same_k=0.8)
        print(f"\n{engine.name}: max diff {diff:.2e}, {_median_ms(engine, observations[0]):.2f} ms/chunk, "
              f"{engine.status}")
    assert any(m.startswith("built the step engine in") for m in progress)
    assert engine.status["engine parity"].startswith("passed"), engine.status
    assert len(list(cache.glob("parity-*.json"))) == 1
    plans = sorted(cache.glob("*.plan"))
    assert len(plans) == 4  # encode + step, two precisions
    again = load_engine(tmp_path / "onnx", "tensorrt", precision="fp16", cache_dir=str(cache), on_miss="error")
    assert sorted(cache.glob("*.plan")) == plans  # the launch used the cache
    assert again.status["engine cache"].startswith("cached")
    sparse = load_engine(tmp_path / "onnx", "tensorrt", precision="fp16", cache_dir=str(cache), check_every=2)
    assert sparse.infer(observations[0]).iterations >= again.infer(observations[0]).iterations
    for plan in plans:
        plan.write_bytes(plan.read_bytes()[:-1] + bytes([plan.read_bytes()[-1] ^ 0xFF]))
    with pytest.raises(EngineError, match="corrupt engine"):
        load_engine(tmp_path / "onnx", "tensorrt", precision="fp16", cache_dir=str(cache))
