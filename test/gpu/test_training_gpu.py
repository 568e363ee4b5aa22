"""The training loop on CUDA (marked ``gpu``: skipped with a printed reason without CUDA): it learns, and the
checkpoint it writes loads on the CPU and decodes the same chunks there as on the GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from synthetic_data import synthetic_dataset  # noqa: E402

from dream_vla_ros.engines.loader import load_engine  # noqa: E402
from dream_vla_ros.policy.checkpoint import load_checkpoint  # noqa: E402
from dream_vla_ros.policy.observation import Observation  # noqa: E402
from dream_vla_ros.train.trainer import TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.gpu


def test_training_on_cuda_learns_and_its_checkpoint_runs_on_cpu(tmp_path):
    torch.manual_seed(0)
    dataset = synthetic_dataset(tmp_path / "data")
    config = TrainConfig(dataset=str(dataset), out=str(tmp_path / "run"), preset="tiny", steps=120, batch_size=16,
                         lr=3e-3, warmup_steps=10, eval_every=60, eval_samples=32, checkpoint_every=60,
                         val_fraction=0.25, device="cuda")
    result = train(config, log=lambda _: None)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = np.mean([r["loss"] for r in records[:10]])
    last = np.mean([r["loss"] for r in records[-10:]])
    assert last < 0.5 * first, (first, last)
    assert all(np.isfinite(r["val_loss"]) for r in records if "val_loss" in r)
    print(f"\ncuda training: {result.samples_per_second:.0f} samples/s, loss {first:.3f} -> {last:.3f}")

    model = load_checkpoint(result.out)
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in model.parameters())
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 200
    observation = Observation({"cam": image}, np.zeros(3), "move up")
    cpu = load_engine(result.out, "torch", device="cpu").infer(observation)
    gpu = load_engine(result.out, "torch", device="cuda", cuda_graphs=False).infer(observation)
    assert np.abs(cpu.positions - gpu.positions).max() <= 1e-4
