"""Demonstration collection: in-process and through the CLI with spawned workers, into the dataset format."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("metaworld")

from dream_vla_ros.cli import main
from dream_vla_ros.sim.collect import CollectConfig, collect, job_seeds, make_jobs
from dream_vla_ros.sim.joint_arm import JOINT_NAMES, SimArmConfig
from dream_vla_ros.sim.tasks import task_spec
from dream_vla_ros.train.dataset import Dataset

pytestmark = pytest.mark.sim

TASKS = ("reach", "drawer-close")


def test_jobs_go_task_by_task():
    jobs = make_jobs(CollectConfig(tasks=TASKS, episodes_per_task=2, workers=3))
    assert [(j.index, j.task, j.demo) for j in jobs] == [
        (0, "reach", 0),
        (1, "reach", 1),
        (2, "drawer-close", 0),
        (3, "drawer-close", 1),
    ]


def test_seeds_of_a_job_never_collide_with_another_job_or_the_evaluation_seeds():
    from dream_vla_ros.evaluation.config import DEFAULT_SEED

    config = CollectConfig(tasks=TASKS, episodes_per_task=5, seed=7, max_attempts=4)
    jobs = [j for j in make_jobs(config) if j.task == "reach"]
    seeds = [job_seeds(config, j) for j in jobs]
    assert seeds[0] == [7, 12, 17, 22] and seeds[4] == [11, 16, 21, 26]  # seed + demo + attempt * episodes
    flat = [s for row in seeds for s in row]
    assert len(set(flat)) == len(flat) and max(flat) < DEFAULT_SEED


def test_ros_demo_config_refuses_what_it_cannot_record():
    from dream_vla_ros.errors import ConfigError
    from dream_vla_ros.evaluation.ros_demos import RosDemoConfig

    for bad in ({"out": ""}, {"out": "x", "image_size": 8}, {"out": "x", "idle": -1.0}, {"out": "x", "max_steps": 5}):
        with pytest.raises(ConfigError):
            RosDemoConfig(**bad)


def test_collect_in_process_then_cli_with_workers_gives_the_same_episodes(tmp_path):
    records = {}

    def sink(index, record):
        records[index] = record
        return index

    config = CollectConfig(
        tasks=TASKS, episodes_per_task=1, workers=1, arm=SimArmConfig(cameras=("corner",), width=32, height=32)
    )
    results = list(collect(config, sink, progress=False))
    assert sorted(r.stored for r in results) == [0, 1]
    for index, record in records.items():
        steps = len(record["actions"])
        assert record["images"]["corner"].shape == (steps, 32, 32, 3)
        assert record["proprio"].shape == record["actions"].shape == (steps, len(JOINT_NAMES))
        assert record["success"] and record["instruction"] in task_spec(record["task"]).train
        assert record["task"] == TASKS[index]

    out = tmp_path / "ds"
    argv = ["collect", "--out", str(out), "--tasks", ",".join(TASKS), "--episodes-per-task", "1"]
    assert main([*argv, "--workers", "2", "--image-size", "32", "--no-progress"]) == 0
    dataset = Dataset(out)
    assert dataset.meta.joint_names == JOINT_NAMES and dataset.meta.cameras == {"corner": (32, 32)}
    assert dataset.meta.dt == pytest.approx(0.0125) and dataset.meta.tasks == TASKS
    assert set(dataset.meta.phrasings["reach"]) == {"train", "heldout"}
    for index, episode in enumerate(dataset.episodes()):
        record = records[index]
        np.testing.assert_array_equal(episode.actions, record["actions"])
        np.testing.assert_array_equal(episode.images["corner"], record["images"]["corner"])
        assert (episode.task, episode.instruction, episode.seed) == (record["task"], record["instruction"], 0)
    assert main([*argv, "--workers", "1"]) == 2, "an existing dataset is not overwritten silently"


def test_cli_interrupted_keeps_the_episodes_so_far_and_says_so(tmp_path, monkeypatch, capsys):
    import dream_vla_ros.sim.collect as collect_module

    real = collect_module.collect

    def one_then_ctrl_c(config, sink, progress=True):
        for result in real(config, sink, progress):
            yield result
            raise KeyboardInterrupt

    monkeypatch.setattr(collect_module, "collect", one_then_ctrl_c)
    out = tmp_path / "ds"
    code = main(["collect", "--out", str(out), "--tasks", ",".join(TASKS), "--episodes-per-task", "1",
                 "--workers", "1", "--image-size", "32", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 130 and "wrote 1 episodes" in printed and "interrupted, marked incomplete" in printed
    dataset = Dataset(out)
    assert len(dataset) == 1 and not dataset.meta.complete
