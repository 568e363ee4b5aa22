"""Offline evaluation: the trainer's validation loss reproduced, exposure shifts, per-task losses, errors, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_data import TASKS, synthetic_dataset

from dream_vla_ros.cli import main as cli_main
from dream_vla_ros.errors import ConfigError, InputError
from dream_vla_ros.train.offline_eval import OfflineEvalConfig, offline_eval, shift_exposure, summary
from dream_vla_ros.train.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    data = synthetic_dataset(root / "data")
    config = TrainConfig(dataset=str(data), out=str(root / "model"), preset="tiny", steps=20, batch_size=8,
                         lr=3e-3, warmup_steps=5, eval_every=20, eval_samples=24, checkpoint_every=20, threads=1,
                         val_fraction=0.25)
    train(config, log=lambda _: None)
    return data, root / "model", config


def test_level_zero_reproduces_the_trainers_validation_loss(trained):
    data, model, cfg = trained
    logged = [json.loads(line) for line in (model / "metrics.jsonl").read_text().splitlines()][-1]
    result = offline_eval(OfflineEvalConfig(model=str(model), dataset=str(data), val_fraction=cfg.val_fraction,
                                            samples=cfg.eval_samples, batch_size=cfg.batch_size))
    assert logged["step"] == cfg.steps
    assert result["loss_by_exposure"]["0"] == pytest.approx(logged["val_loss"], rel=1e-5)
    assert result["split"] == "val" and result["episodes"] == 2 and result["samples"] == cfg.eval_samples
    assert sorted(result["loss_by_task"]) == sorted(TASKS)


def test_exposure_levels_change_the_loss_and_the_summary_shows_them(trained):
    data, model, _ = trained
    result = offline_eval(OfflineEvalConfig(model=str(model), dataset=str(data), split="all", samples=32,
                                            exposure_levels=(-64, 0, 64)))
    losses = result["loss_by_exposure"]
    assert list(losses) == ["-64", "0", "64"] and result["episodes"] == 8
    assert all(np.isfinite(v) for v in losses.values())
    assert losses["-64"] != losses["0"] and losses["64"] != losses["0"]
    assert result["task_exposure_level"] == 0
    text = summary(result)
    assert "-64 |" in text and "+64 |" in text and "(1.00x)" in text and "up |" in text


def test_shift_exposure_clips_and_zero_is_identity():
    image = np.array([[[0, 100, 250]]], np.uint8)
    assert shift_exposure({"c": image}, 10)["c"].tolist() == [[[10, 110, 255]]]
    assert shift_exposure({"c": image}, -10)["c"].tolist() == [[[0, 90, 240]]]
    assert shift_exposure({"c": image}, 0)["c"] is image


def test_refuses_a_dataset_without_the_models_cameras_and_bad_settings(trained, tmp_path):
    _, model, _ = trained
    other = synthetic_dataset(tmp_path / "other", camera="wrist")
    with pytest.raises(InputError, match="no camera 'cam'"):
        offline_eval(OfflineEvalConfig(model=str(model), dataset=str(other)))
    with pytest.raises(ConfigError, match="split"):
        OfflineEvalConfig(model="m", dataset="d", split="train")
    with pytest.raises(ConfigError, match="exposure_levels"):
        OfflineEvalConfig(model="m", dataset="d", exposure_levels=(300,))


def test_cli_prints_one_json_object(trained, capsys):
    data, model, _ = trained
    code = cli_main(["offline-eval", "--model", str(model), "--dataset", str(data), "--split", "all",
                     "--samples", "16", "--exposure", "-8", "0", "8", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and list(result["loss_by_exposure"]) == ["-8", "0", "8"] and result["samples"] == 16
