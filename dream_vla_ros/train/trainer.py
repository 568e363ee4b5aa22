"""The training loop: a dataset directory in, a validated checkpoint directory out.

One step = sample a batch of (observation, target chunk) pairs from the training episodes, augment (random
image shift, random exposure per camera, a random phrasing of the episode's task: its own or a generated
paraphrase), compute the
policy objective (the recurrent-depth recipe or masked discrete diffusion, see
:mod:`dream_vla_ros.policy.objectives`), AdamW with warm-up + cosine decay and gradient clipping.

The output directory holds the checkpoint (``config.json``, ``model.safetensors``, ``MODEL_CARD.md``), the
metrics of every logged step (``metrics.jsonl``), a plot of the curves (``training_curves.png``) and, for
``--resume``, the optimiser state (``training_state/``: safetensors + JSON, never pickle).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dream_vla_ros.configuration import require
from dream_vla_ros.errors import ConfigError
from dream_vla_ros.policy.checkpoint import load_checkpoint, save_checkpoint
from dream_vla_ros.policy.config import JointEnvelope, ModelConfig, preset
from dream_vla_ros.policy.envelope import fit_envelope
from dream_vla_ros.policy.model import VlaModel
from dream_vla_ros.policy.normalization import fit_normalization
from dream_vla_ros.policy.objectives import collate, make_objective
from dream_vla_ros.policy.samples import TrainingSample
from dream_vla_ros.train.chunk_samples import ChunkSampler, split_by_episode
from dream_vla_ros.train.dataset import Dataset
from dream_vla_ros.train.instructions import PhrasingPool, goal_config, phrasing_pool
from dream_vla_ros.train.optimizer_state import load_training_state, save_training_state
from dream_vla_ros.train.transfer import transfer_weights

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how.

    dataset: dataset directory (see docs/dataset_format.md); out: checkpoint directory to write.
    preset: model preset (tiny, sim, orin); init: optional checkpoint to start from (fine-tuning).
    cameras: dataset cameras the model reads, in token order (empty: every camera of the dataset).
    decoder: override the preset's decoder kind ("" keeps it).
    steps: optimiser steps (the cosine schedule spans them); minutes: wall-clock budget (0 = none).
    shift_pixels: random-shift augmentation; brightness / contrast: random exposure per camera (offset and
    gain ranges, see ``random_exposure``); vary_phrasing: draw a phrasing of the task per sample, from the
    dataset's own and ``paraphrases`` generated ones per MT10 task (see :mod:`dream_vla_ros.train.instructions`).
    train_only: parameter-name prefixes that train (empty: all); the rest stays as ``init`` left it, e.g.
    ``("trunk.text_words", )`` teaches a new instruction encoder to a model without changing its skills.
    language_teacher: a checkpoint whose instruction tokens the WordLlama encoder first learns to reproduce,
    ``distill_steps`` steps on text alone (:mod:`dream_vla_ros.train.language_distill`), before the steps above.
    val_fraction: episodes held out per task for validation; eval_every / checkpoint_every: in steps.
    threads: torch CPU threads (0 = torch's default).
    """

    dataset: str
    out: str
    preset: str = "sim"
    init: str = ""
    cameras: tuple[str, ...] = ()
    decoder: str = ""
    steps: int = 20000
    minutes: float = 0.0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 300
    grad_clip: float = 1.0
    shift_pixels: int = 4
    brightness: float = 0.03
    contrast: float = 0.05
    vary_phrasing: bool = True
    paraphrases: int = 400
    train_only: tuple[str, ...] = ()
    language_teacher: str = ""
    distill_steps: int = 2000
    val_fraction: float = 0.1
    eval_every: int = 500
    eval_samples: int = 256
    checkpoint_every: int = 1000
    seed: int = 0
    threads: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        require(self.steps >= 1 or (self.steps == 0 and bool(self.language_teacher)), "steps",
                f"must be >= 1 (0 only with language_teacher: the distillation alone), got {self.steps}")
        require(self.minutes >= 0, "minutes", f"must be >= 0, got {self.minutes}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.shift_pixels >= 0, "shift_pixels", f"must be >= 0, got {self.shift_pixels}")
        require(self.brightness >= 0, "brightness", f"must be >= 0, got {self.brightness}")
        require(0 <= self.contrast < 1, "contrast", f"must be in [0, 1), got {self.contrast}")
        require(0 <= self.val_fraction < 1, "val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        require(self.eval_every >= 1 and self.checkpoint_every >= 1, "eval_every", "intervals must be >= 1")
        require(self.decoder in ("", "recurrent", "discrete"), "decoder", "must be recurrent, discrete or empty")
        require(self.paraphrases >= 0, "paraphrases", f"must be >= 0, got {self.paraphrases}")
        require(self.distill_steps >= 1, "distill_steps", f"must be >= 1, got {self.distill_steps}")


@dataclass
class TrainResult:
    """A finished (or interrupted: Ctrl-C, checkpoint saved at ``steps``) training run."""

    out: Path
    steps: int
    seconds: float
    samples_per_second: float
    final: dict[str, float]
    interrupted: bool = False


def trainable_parameters(model: VlaModel, prefixes: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """The parameters whose names start with one of ``prefixes`` (all when empty); the others are frozen."""
    chosen = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not prefixes or name.startswith(prefixes))
        if parameter.requires_grad:
            chosen.append(parameter)
    if not chosen:
        raise ConfigError(f"train_only: no parameter name starts with {', '.join(prefixes)}")
    return chosen


def action_stride(model_dt: float, dataset_dt: float) -> int:
    """Dataset frames per chunk row; the model's dt must be a whole multiple of the dataset's."""
    ratio = model_dt / dataset_dt
    if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
        raise ConfigError(f"dt: the model's dt {model_dt} s is not a whole multiple of the dataset's {dataset_dt} s")
    return round(ratio)


def learning_rate(step: int, config: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak.

    Progress is the larger of ``step / steps`` and, with a time budget, ``elapsed / minutes``, so a run cut
    short by its budget still ends its schedule (on a loaded machine fewer steps fit than planned).
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.minutes:
        progress = max(progress, elapsed_s / (config.minutes * 60))
    progress = min(1.0, progress)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


class SampleBuilder:
    """Sampler indices -> training samples: the model's cameras picked from the dataset's, and (with a
    phrasing pool and an rng) a random phrasing of the sample's task."""

    def __init__(self, sampler: ChunkSampler, cameras: dict[str, str], phrasings: PhrasingPool | None) -> None:
        self.sampler = sampler
        self.cameras = cameras  # model camera name -> dataset camera name
        self.phrasings = phrasings

    def samples(self, indices: np.ndarray, rng: np.random.Generator | None) -> list[TrainingSample]:
        out = []
        for k in indices:
            s = self.sampler[int(k)]
            instruction = s.instruction
            if self.phrasings is not None and rng is not None:
                instruction = self.phrasings.draw(s.task, rng) or instruction
            images = {model_cam: s.images[data_cam] for model_cam, data_cam in self.cameras.items()}
            out.append(TrainingSample(images, s.proprio, instruction, s.actions, s.mask))
        return out


def _model_config(config: TrainConfig, dataset: Dataset) -> ModelConfig:
    model_config = preset(config.preset)
    if config.decoder:
        model_config = dataclasses.replace(
            model_config, decoder=dataclasses.replace(model_config.decoder, kind=config.decoder))
    meta = dataset.meta
    cameras = config.cameras or tuple(meta.cameras)
    missing = [c for c in cameras if c not in meta.cameras]
    if missing:
        raise ConfigError(f"cameras: {', '.join(missing)} not in the dataset (it has {', '.join(meta.cameras)})")
    tokenizer = model_config.tokenizer
    if tokenizer.kind == "wordllama" and not tokenizer.weights_sha256:
        from dream_vla_ros.policy.wordllama import WEIGHTS_SHA256

        tokenizer = dataclasses.replace(tokenizer, weights_sha256=WEIGHTS_SHA256)
    train_phrasings = {task: list(split.get("train", [])) for task, split in meta.phrasings.items()}
    return dataclasses.replace(
        model_config,
        joint_names=tuple(meta.joint_names),
        vision=dataclasses.replace(model_config.vision, cameras=cameras),
        tokenizer=tokenizer,
        goals=goal_config(train_phrasings, config.paraphrases if config.vary_phrasing else 0),
    )


def _same_action_space(a: ModelConfig, b: ModelConfig) -> bool:
    """Same joints, chunk length and action mode: normalisation statistics carry over."""
    return (a.joint_names == b.joint_names and a.chunk_length == b.chunk_length
            and a.normalization.action_mode == b.normalization.action_mode and bool(a.normalization.action_scale))


def _fit_statistics(model_config: ModelConfig, sampler: ChunkSampler, rng: np.random.Generator) -> ModelConfig:
    picks = rng.choice(len(sampler), size=min(len(sampler), 20000), replace=False)
    batch = sampler.batch(picks)
    norm = fit_normalization(batch["proprio"], batch["actions"], action_mode=model_config.normalization.action_mode)
    return dataclasses.replace(model_config, normalization=norm)


def _envelope(model_config: ModelConfig, episodes: list, init: VlaModel | None) -> JointEnvelope:
    """The joint positions of the training episodes (joint states and targets), widened by the envelope of
    the model fine-tuned from (when it drives the same joints): the model keeps what it learned there."""
    envelope = fit_envelope(array for e in episodes for array in (e.proprio, e.actions))
    if init is not None and init.config.joint_names == model_config.joint_names:
        envelope = envelope.union(init.config.envelope)
    return envelope


def train(config: TrainConfig, progress: Callable[[int, dict[str, float]], None] | None = None,
          resume: bool = False, log: Callable[[str], None] = print) -> TrainResult:
    """Train per ``config``; ``progress(step, metrics)`` is called after every step."""
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)

    dataset = Dataset(config.dataset)
    meta = dataset.meta
    train_ids, val_ids = split_by_episode([e.task for e in meta.episodes], config.val_fraction, config.seed)
    log(f"dataset {config.dataset}: {len(meta.episodes)} episodes ({len(train_ids)} train, {len(val_ids)} "
        f"validation), {meta.num_frames} frames")
    resumed = load_training_state(out) if resume else None
    if resumed is not None:
        model = load_checkpoint(out, device=config.device)
        model_config = model.config
        log(f"resuming from step {resumed.step}")
    else:
        model_config = _model_config(config, dataset)
    stride = action_stride(model_config.dt, meta.dt)
    load = list(dataset.episodes(train_ids))
    sampler = ChunkSampler(load, model_config.chunk_length, action_stride=stride)
    val_sampler = ChunkSampler(list(dataset.episodes(val_ids)), model_config.chunk_length, stride) if val_ids else None
    if resumed is None:
        init = load_checkpoint(config.init) if config.init else None
        if init is not None and _same_action_space(init.config, model_config):
            # The weights were trained with these statistics: refitting them on new data shifts every input and
            # output of the model (the shipped stage-6 weights under statistics refitted on 1,000 new episodes:
            # validation loss 0.087 instead of 0.022 on push).
            model_config = dataclasses.replace(model_config, normalization=init.config.normalization)
            log("init: normalisation statistics kept from the initial checkpoint")
        else:
            model_config = _fit_statistics(model_config, sampler, rng)
        model_config = dataclasses.replace(model_config, envelope=_envelope(model_config, load, init))
        model = VlaModel(model_config)
        if init is not None:
            report = transfer_weights(model, init)
            for line in report.lines():
                log(line)
    model.to(config.device).train()
    cameras = {cam: cam for cam in model_config.vision.cameras}
    own = {task: list(split.get("train", [])) for task, split in meta.phrasings.items()}
    pool = phrasing_pool(own, config.paraphrases, config.seed) if config.vary_phrasing else None
    batcher = SampleBuilder(sampler, cameras, pool)
    val_batcher = SampleBuilder(val_sampler, cameras, None) if val_sampler is not None else None
    objective = make_objective(model_config, seed=config.seed)
    trained = trainable_parameters(model, config.train_only)
    decay = [p for p in trained if p.ndim >= 2]
    no_decay = [p for p in trained if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    start_step = 0
    if resumed is not None:
        optimizer.load_state_dict(resumed.optimizer)
        start_step = resumed.step
        rng = np.random.default_rng([config.seed, start_step])
    log(f"model: preset {model_config.preset}, decoder {model_config.decoder.kind}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters; {len(sampler):,} training samples")

    metadata = {"dataset": str(config.dataset), "train_config": dataclasses.asdict(config),
                "train_episodes": len(train_ids), "val_episodes": len(val_ids)}
    if config.language_teacher and resumed is None:
        from dream_vla_ros.train.language_distill import distill_instruction_encoder

        distilled = distill_instruction_encoder(model, load_checkpoint(config.language_teacher),
                                                pool or phrasing_pool(own, config.paraphrases, config.seed),
                                                config.distill_steps, seed=config.seed, log=log)
        metadata["language_distillation"] = dataclasses.asdict(distilled)
        model.train()
    started = time.monotonic()
    step = start_step
    last: dict[str, float] = {}
    interrupted = False
    with (out / METRICS_FILE).open("a") as metrics_file:
        try:
            while step < config.steps:
                if config.minutes and time.monotonic() - started > config.minutes * 60:
                    log(f"time budget of {config.minutes} min reached at step {step}")
                    break
                lr = learning_rate(step, config, time.monotonic() - started)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                picks = rng.integers(len(sampler), size=config.batch_size)
                batch = collate(
                    batcher.samples(picks, rng),
                    model_config,
                    rng=rng,
                    shift_pixels=config.shift_pixels,
                    brightness=config.brightness,
                    contrast=config.contrast,
                )
                loss, metrics = objective(model, batch.to(config.device), step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
                optimizer.step()
                step += 1
                last = {"loss": float(loss.detach()), "lr": lr, "grad_norm": grad_norm, **metrics}
                record: dict[str, Any] = {"step": step, "time_s": round(time.monotonic() - started, 2), **last}
                if val_batcher is not None and (step % config.eval_every == 0 or step == config.steps):
                    record.update(validate(model, val_batcher, objective, config, step))
                    model.train()
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                if progress is not None:
                    progress(step, record)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    _save(model, optimizer, out, step, metadata)
        except KeyboardInterrupt:  # Ctrl-C (or SIGINT from a timeout): keep what was learnt, resumable
            interrupted = True
    _save(model, optimizer, out, step, metadata)
    if interrupted:
        log(f"interrupted at step {step}: checkpoint saved; --resume continues from it")
    seconds = time.monotonic() - started
    done = step - start_step
    _plot(out)
    return TrainResult(out, step, seconds, done * config.batch_size / max(seconds, 1e-9), last, interrupted)


@torch.no_grad()
def validate(model: VlaModel, batcher: SampleBuilder, objective, config: TrainConfig, step: int) -> dict[str, float]:
    """Validation loss with the training objective (fixed seed) on up to ``config.eval_samples`` samples."""
    model.eval()
    count = min(config.eval_samples, len(batcher.sampler))
    picks = np.linspace(0, len(batcher.sampler) - 1, count).astype(np.int64)
    samples = partial(batcher.samples, rng=None)
    return {"val_loss": mean_loss(model, objective, samples, picks, config.batch_size, config.device)}


@torch.no_grad()
def mean_loss(model: VlaModel, objective, samples: Callable[[np.ndarray], list[TrainingSample]], picks: np.ndarray,
              batch_size: int, device: str = "cpu") -> float:
    """The objective's loss at step 0 (fixed noise) over the samples of ``picks``, batch by batch, weighted by
    batch size."""
    total = 0.0
    for begin in range(0, len(picks), batch_size):
        chunk = picks[begin:begin + batch_size]
        loss, _ = objective(model, collate(samples(chunk), model.config).to(device), 0)
        total += float(loss) * len(chunk)
    return total / len(picks)


def _save(model: VlaModel, optimizer: torch.optim.Optimizer, out: Path, step: int, metadata: dict) -> None:
    save_checkpoint(model, out, metadata={**metadata, "step": step})
    save_training_state(out, optimizer, step)


def _plot(out: Path) -> Path | None:
    """Write ``training_curves.png`` from ``metrics.jsonl`` (loss, validation loss, learning rate)."""
    from dream_vla_ros.train.curves import plot_training_curves

    return plot_training_curves(out / METRICS_FILE, out / "training_curves.png")
