"""The on-disk episode dataset: round trip, chunk targets, samples, statistics, splits (synthetic data)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dream_vla_ros.errors import InputError
from dream_vla_ros.train.chunk_samples import ChunkSampler, chunk_targets, split_by_episode
from dream_vla_ros.train.dataset import (
    META_FILE,
    Dataset,
    DatasetWriter,
    Episode,
    compute_stats,
    load_meta,
)
from dream_vla_ros.train.dataset_merge import merge_datasets

JOINTS = ("j0", "j1", "gripper")
CAMERAS = {"front": (8, 10), "wrist": (6, 6)}
DT = 0.05


def make_episode(rng: np.random.Generator, steps: int, task: str = "push", seed: int = 0) -> Episode:
    return Episode(
        images={name: rng.integers(0, 256, (steps, h, w, 3), dtype=np.uint8) for name, (h, w) in CAMERAS.items()},
        proprio=rng.normal(size=(steps, len(JOINTS))).astype(np.float32),
        actions=rng.normal(size=(steps, len(JOINTS))).astype(np.float32),
        task=task,
        instruction=f"do {task}",
        seed=seed,
        success=True,
    )


def make_writer(root, **kwargs) -> DatasetWriter:
    return DatasetWriter(
        root,
        JOINTS,
        DT,
        CAMERAS,
        phrasings={"push": {"train": ["do push"], "heldout": ["x"]}},
        source={"generator": "test"},
        **kwargs,
    )


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [make_episode(rng, n, task, seed) for n, task, seed in [(5, "push", 1), (1, "reach", 2), (9, "push", 3)]]
    writer = make_writer(tmp_path / "ds")
    entries = [writer.write(ep, i) for i, ep in enumerate(episodes)]
    meta = writer.finalize(list(reversed(entries)))

    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 3 and ds.meta.to_json() == load_meta(tmp_path / "ds").to_json() == meta.to_json()
    assert ds.meta.joint_names == JOINTS and ds.meta.dt == DT and ds.meta.cameras == CAMERAS
    assert ds.meta.tasks == ("push", "reach") and ds.meta.num_frames == 15 == meta.num_frames
    assert ds.meta.phrasings["push"]["heldout"] == ["x"] and ds.meta.phrasings["reach"] == {"train": [], "heldout": []}
    for original, loaded in zip(episodes, ds.episodes(), strict=True):
        for name in CAMERAS:
            np.testing.assert_array_equal(loaded.images[name], original.images[name])
            assert loaded.images[name].flags.c_contiguous
        np.testing.assert_array_equal(loaded.proprio, original.proprio)
        np.testing.assert_array_equal(loaded.actions, original.actions)
        np.testing.assert_allclose(loaded.timestamps, np.arange(original.length) * DT)
        assert (loaded.task, loaded.instruction, loaded.seed, loaded.success) == (
            original.task,
            original.instruction,
            original.seed,
            original.success,
        )
    only_front = ds.episode(0, cameras=["front"])
    assert set(only_front.images) == {"front"}

    stats = ds.meta.stats["actions"]
    all_actions = np.concatenate([e.actions for e in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats.mean, all_actions.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.std, all_actions.std(0), rtol=1e-6)
    np.testing.assert_allclose(stats.max, all_actions.max(0))
    raw = json.loads((tmp_path / "ds" / META_FILE).read_text())
    assert raw["format"] == "dream_vla_ros.episodes" and raw["version"] == 1 and raw["complete"] is True


def test_writer_refuses_existing_dataset_and_bad_episodes(tmp_path):
    rng = np.random.default_rng(1)
    writer = make_writer(tmp_path)
    writer.finalize([writer.write(make_episode(rng, 3), 0)])
    with pytest.raises(InputError, match="already holds a dataset"):
        make_writer(tmp_path)
    writer = make_writer(tmp_path, overwrite=True)
    assert not (tmp_path / META_FILE).exists() and not list((tmp_path / "episodes").iterdir())
    good = make_episode(rng, 4)
    with pytest.raises(InputError, match="proprio"):
        writer.write(Episode(**{**good.__dict__, "proprio": good.proprio[:, :2]}), 0)
    with pytest.raises(InputError, match="cameras"):
        writer.write(Episode(**{**good.__dict__, "images": {"front": good.images["front"]}}), 0)
    with pytest.raises(InputError, match="uint8"):
        writer.write(Episode(**{**good.__dict__, "images": {**good.images, "wrist": good.images["wrist"] * 1.0}}), 0)
    with pytest.raises(InputError, match="finite"):
        writer.write(Episode(**{**good.__dict__, "actions": good.actions * np.nan}), 0)
    with pytest.raises(InputError, match="no episode"):
        writer.finalize([])
    with pytest.raises(InputError, match="camera"):
        DatasetWriter(tmp_path / "x", JOINTS, DT, {"bad name": (4, 4)})


def test_writer_is_picklable_for_worker_processes(tmp_path):
    writer = pickle.loads(pickle.dumps(make_writer(tmp_path)))
    episode = make_episode(np.random.default_rng(2), 2)
    entry = writer.write_record(7, dict(episode.__dict__))
    assert entry.file == "episodes/episode_000007.npz" and entry.length == 2


def test_reader_rejects_other_directories(tmp_path):
    with pytest.raises(InputError, match=r"meta\.json"):
        Dataset(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match=r"not a dream_vla_ros\.episodes dataset"):
        Dataset(tmp_path)


@given(
    steps=st.integers(1, 30),
    data=st.data(),
    horizon=st.integers(1, 12),
    action_stride=st.integers(1, 4),
)
def test_chunk_targets_follow_frame_and_pad_with_last_action(steps, data, horizon, action_stride):
    actions = np.arange(steps * 2, dtype=np.float64).reshape(steps, 2)
    t = data.draw(st.integers(0, steps - 1))
    chunk, mask = chunk_targets(actions, t, horizon, action_stride)
    assert chunk.shape == (horizon, 2) and mask.shape == (horizon,) and mask.dtype == bool
    for i in range(horizon):
        row = t + (i + 1) * action_stride - 1
        assert mask[i] == (row < steps)
        np.testing.assert_array_equal(chunk[i], actions[min(row, steps - 1)])
    assert mask[0] or t + action_stride - 1 >= steps
    valid = int(mask.sum())
    assert mask[:valid].all() and not mask[valid:].any(), "valid rows form a prefix"


def test_chunk_targets_rejects_out_of_range():
    with pytest.raises(InputError):
        chunk_targets(np.zeros((3, 2)), 3, 4)
    with pytest.raises(InputError):
        chunk_targets(np.zeros((3, 2)), 0, 0)


def test_chunk_sampler_and_batches():
    rng = np.random.default_rng(3)
    episodes = [make_episode(rng, 5, "push"), make_episode(rng, 2, "reach")]
    sampler = ChunkSampler(episodes, horizon=4, sample_stride=2)
    assert len(sampler) == 3 + 1
    sample = sampler[1]
    np.testing.assert_array_equal(sample.images["front"], episodes[0].images["front"][2])
    np.testing.assert_array_equal(sample.proprio, episodes[0].proprio[2])
    np.testing.assert_array_equal(sample.actions[:3], episodes[0].actions[2:5])
    np.testing.assert_array_equal(sample.actions[3], episodes[0].actions[4])
    assert sample.mask.tolist() == [True, True, True, False]
    batch = sampler.batch([0, 3])
    assert batch["image_front"].shape == (2, 8, 10, 3) and batch["image_wrist"].shape == (2, 6, 6, 3)
    assert batch["actions"].shape == (2, 4, 3) and batch["mask"].shape == (2, 4)
    assert batch["task"] == ["push", "reach"] and batch["instruction"] == ["do push", "do reach"]


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=40), st.floats(0.0, 0.9), st.integers(0, 5))
def test_split_by_episode_is_a_stratified_partition(tasks, fraction, seed):
    train, val = split_by_episode(tasks, fraction, seed)
    assert sorted(train + val) == list(range(len(tasks))) and not set(train) & set(val)
    assert (train, val) == split_by_episode(tasks, fraction, seed)
    for task in set(tasks):
        count = tasks.count(task)
        in_val = sum(tasks[i] == task for i in val)
        assert count - in_val >= 1, "every task keeps a training episode"
        if fraction > 0 and count >= 2:
            assert in_val >= 1, "every task with two episodes is validated"
    if fraction == 0:
        assert val == []


def test_stats_normalize_round_trip_and_constant_columns():
    data = np.column_stack([np.linspace(-2, 3, 50), np.full(50, 0.7)])
    stats = compute_stats([data[:20], data[20:]])
    normalized = stats.normalize(data)
    assert np.all(np.isfinite(normalized))
    np.testing.assert_allclose(normalized[:, 0].mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(stats.denormalize(normalized), data)
    assert stats.q01[0] < stats.q99[0] and stats.min[1] == stats.max[1] == 0.7


def write_dataset(root, episodes, phrasings=None, cameras=CAMERAS) -> None:
    writer = DatasetWriter(root, JOINTS, DT, cameras,
                           phrasings=phrasings or {"push": {"train": ["do push"], "heldout": ["x"]}})
    writer.finalize([writer.write(ep, i) for i, ep in enumerate(episodes)])


def test_merge_unites_episodes_recomputes_stats_and_skips_repeated_seeds(tmp_path):
    rng = np.random.default_rng(3)
    first = [make_episode(rng, 4, "push", 0), make_episode(rng, 6, "reach", 1)]
    second = [make_episode(rng, 5, "push", 0), make_episode(rng, 3, "push", 7), make_episode(rng, 2, "reach", -1)]
    write_dataset(tmp_path / "a", first)
    write_dataset(tmp_path / "b", second, phrasings={"push": {"train": ["push it"], "heldout": ["y"]}})
    lines = []
    result = merge_datasets([tmp_path / "a", tmp_path / "b"], tmp_path / "ab", log=lines.append)

    kept = [first[0], first[1], second[1], second[2]]
    assert result.duplicates == ((str(tmp_path / "b"), "push", 0),)
    assert any("skipped 1 episodes" in line for line in lines)
    merged = Dataset(tmp_path / "ab")
    assert [e.seed for e in merged.meta.episodes] == [0, 1, 7, -1]
    for index, expected in enumerate(kept):
        episode = merged.episode(index)
        np.testing.assert_array_equal(episode.actions, expected.actions)
        np.testing.assert_array_equal(episode.images["wrist"], expected.images["wrist"])
    expected_stats = compute_stats([e.actions for e in kept])
    np.testing.assert_allclose(merged.meta.stats["actions"].mean, expected_stats.mean)
    assert merged.meta.phrasings["push"] == {"train": ["do push", "push it"], "heldout": ["x", "y"]}
    assert merged.meta.tasks == ("push", "reach")
    assert [s["episodes"] for s in merged.meta.source["merged_from"]] == [2, 3]
    # The sources are untouched.
    assert len(Dataset(tmp_path / "b")) == 3


def test_merge_refuses_incompatible_sources_leaked_phrasings_and_its_own_source(tmp_path):
    rng = np.random.default_rng(4)
    write_dataset(tmp_path / "a", [make_episode(rng, 3)])
    front_only = make_episode(rng, 3)
    front_only = Episode(**{**front_only.__dict__, "images": {"front": front_only.images["front"]}})
    write_dataset(tmp_path / "other_cams", [front_only], cameras={"front": (8, 10)})
    write_dataset(tmp_path / "leak", [make_episode(rng, 3)], phrasings={"push": {"train": ["x"], "heldout": []}})
    with pytest.raises(InputError, match=r"do not fit together.*cameras"):
        merge_datasets([tmp_path / "a", tmp_path / "other_cams"], tmp_path / "out")
    with pytest.raises(InputError, match=r"held out .* training phrasings.*push: 'x'"):
        merge_datasets([tmp_path / "a", tmp_path / "leak"], tmp_path / "out")
    with pytest.raises(InputError, match="also a source"):
        merge_datasets([tmp_path / "a", tmp_path / "leak"], tmp_path / "a")
    with pytest.raises(InputError, match="at least two"):
        merge_datasets([tmp_path / "a"], tmp_path / "out")
    assert not (tmp_path / "out" / META_FILE).exists()
