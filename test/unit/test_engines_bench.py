"""``bench backends`` runs every available backend side by side and prints the documented JSON keys (a smoke test
on the tiny preset; the figures themselves come from running the benchmark, not from tests)."""

from __future__ import annotations

import argparse
import json

import pytest

pytest.importorskip("onnxruntime")


def _bench_tiny(capsys) -> dict:
    import torch

    from dream_vla_ros.commands import bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["backends", "--preset", "tiny", "--repeats", "2", "--samples", "1",
                              "--parity-samples", "2", "--json"])
    threads = torch.get_num_threads()
    try:
        assert bench.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(capsys.readouterr().out)


def test_bench_backends_json_keys(capsys):
    import torch

    result = _bench_tiny(capsys)
    assert {"backends", "ort_over_torch_cpu", "same_k_fraction"} <= set(result)
    keys = {"available", "reason", "latency_ms_median", "latency_ms_p90", "k_mean", "max_abs_diff_vs_torch"}
    for name, entry in result["backends"].items():
        assert keys <= set(entry), name
        assert entry["available"] or entry["reason"]
    for name in ("torch_cpu_fp32", "onnxruntime_cpu_fp32", "onnxruntime_cpu_int8"):
        entry = result["backends"][name]
        assert entry["available"] and entry["latency_ms_median"] > 0
        assert {"trunk", "core"} <= set(entry["stages_ms_median"])
    assert result["backends"]["onnxruntime_cpu_fp32"]["max_abs_diff_vs_torch"] < 1e-4
    assert result["ort_over_torch_cpu"] > 0 and result["same_k_fraction"] == 1.0
    if not torch.cuda.is_available():
        assert not result["backends"]["tensorrt_fp16"]["available"]
        assert result["gpu_fastest_over_torch_eager"] is None


def test_a_failing_int8_quantisation_leaves_the_other_backends_running(capsys, monkeypatch):
    """A quantiser failure (onnxruntime 1.30's refused a torch 2.11 export before the export dropped the
    exporter's shape annotations) lists the int8 backend as unavailable with its cause; nothing else is lost."""
    import onnxruntime.quantization

    def refuse(*_args, **_kwargs):
        raise RuntimeError("[ShapeInferenceError] Inferred shape and existing shape differ")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", refuse)
    result = _bench_tiny(capsys)
    int8 = result["backends"]["onnxruntime_cpu_int8"]
    assert not int8["available"]
    assert "int8 quantisation failed" in int8["reason"] and "ShapeInferenceError" in int8["reason"]
    assert result["backends"]["onnxruntime_cpu_fp32"]["available"]
    assert result["ort_over_torch_cpu"] > 0
    assert result["export"]["int8_accuracy"] is None


def test_bench_memory_measures_each_backend_in_its_own_process(tmp_path, capsys):
    """``bench memory`` on a tiny checkpoint: RSS at each stage for the CPU backends (each in a fresh process,
    so the torch backend's import shows and the ONNX Runtime ones stay small), the rest unavailable with the
    reason. The figures themselves come from running the benchmark (docs/jetson_orin.md)."""
    import torch

    from dream_vla_ros.commands import bench
    from dream_vla_ros.policy.checkpoint import save_checkpoint
    from dream_vla_ros.policy.config import preset
    from dream_vla_ros.policy.model import build_model

    torch.manual_seed(0)
    model = save_checkpoint(build_model(preset("tiny"), load_pretrained=False), tmp_path / "model")
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.main(parser.parse_args(["memory", "--model", str(model), "--chunks", "1", "--json"])) == 0
    result = json.loads(capsys.readouterr().out)["backends"]
    for name in ("torch_cpu_fp32", "onnxruntime_cpu_fp32", "onnxruntime_cpu_int8"):
        entry = result[name]
        assert entry["available"], entry
        assert entry["rss_mib_start"] < entry["rss_mib_imported"] <= entry["rss_mib_peak"]
        assert entry["rss_mib_loaded"] <= entry["rss_mib_peak"] and entry["engine"].split()[0] in name
    assert result["onnxruntime_cpu_fp32"]["rss_mib_peak"] < result["torch_cpu_fp32"]["rss_mib_peak"]
    if not torch.cuda.is_available():
        assert not result["tensorrt_fp16"]["available"] and result["tensorrt_fp16"]["reason"]
