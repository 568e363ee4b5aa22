"""Train a policy on a dataset directory and write a checkpoint directory.

The checkpoint (config.json, model.safetensors, MODEL_CARD.md) is written every --checkpoint-every steps
and at the end, with metrics.jsonl and training_curves.png next to it; Ctrl-C (SIGINT) saves it at the
current step and exits with 130. --resume continues from the optimiser state saved there. Images are
augmented by random shifts and a random exposure (brightness offset, contrast gain) per camera, so a model
does not depend on one renderer's or camera's exposure. --init starts from another checkpoint
(fine-tuning); layers whose shapes do not fit (another joint set or image size) are re-initialised and
listed; with other cameras, the cameras both models share keep their learned embedding and the new ones
start fresh.

examples:
  dream-vla-ros train --dataset data/mt10 --out models/metaworld_mt10 --preset sim --minutes 45
  dream-vla-ros train --dataset data/my_arm --out runs/my_arm --init models/metaworld_mt10 --steps 5000
  dream-vla-ros train --dataset data/mt10 --out runs/tiny --preset tiny --steps 200
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset directory (see docs/dataset_format.md)")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--preset", default="sim", help="model preset: tiny, sim or orin")
    parser.add_argument("--decoder", default="", choices=["", "recurrent", "discrete"], help="override the decoder")
    parser.add_argument("--init", default="", help="checkpoint to start from (fine-tuning)")
    parser.add_argument("--cameras", default="", metavar="NAMES",
                        help="comma list of dataset cameras the model reads, in order (default: all of them)")
    parser.add_argument("--steps", type=int, default=20000, help="optimiser steps (the LR schedule spans them)")
    parser.add_argument("--minutes", type=float, default=0.0, help="stop after this many minutes (0: no limit)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=300, help="linear learning-rate warm-up, in steps")
    parser.add_argument("--shift-pixels", type=int, default=4, help="random-shift augmentation in px (0: off)")
    parser.add_argument("--brightness", type=float, default=0.03,
                        help="random brightness offset per camera, +- this fraction of full scale (0: off)")
    parser.add_argument("--contrast", type=float, default=0.05,
                        help="random contrast gain per camera, 1 +- this (0: off)")
    parser.add_argument("--paraphrases", type=int, default=400, metavar="N",
                        help="generated phrasings per MT10 task that samples may carry besides the dataset's own "
                             "(0: only the dataset's; held-out phrasings are never generated)")
    parser.add_argument("--train-only", default="", metavar="PREFIXES",
                        help="comma list of parameter-name prefixes that train, the rest frozen (e.g. "
                             "trunk.text_words: a new instruction encoder for an --init model, its skills kept)")
    parser.add_argument("--language-teacher", default="", metavar="CKPT",
                        help="first teach the WordLlama instruction encoder to reproduce this checkpoint's "
                             "instruction tokens, on text alone (with --init CKPT --train-only trunk.text_words: "
                             "a new encoder for a trained model, its skills kept)")
    parser.add_argument("--distill-steps", type=int, default=2000, help="steps of --language-teacher")
    parser.add_argument("--eval-every", type=int, default=500, help="validation interval in steps")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="checkpoint interval in steps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the state saved in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dream_vla_ros.train.trainer import TrainConfig, train

    config = TrainConfig(
        dataset=args.dataset, out=args.out, preset=args.preset, init=args.init, decoder=args.decoder,
        cameras=tuple(c.strip() for c in args.cameras.split(",") if c.strip()),
        steps=args.steps, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup_steps, shift_pixels=args.shift_pixels, brightness=args.brightness,
        contrast=args.contrast, paraphrases=args.paraphrases, eval_every=args.eval_every,
        train_only=tuple(p.strip() for p in args.train_only.split(",") if p.strip()),
        language_teacher=args.language_teacher, distill_steps=args.distill_steps,
        checkpoint_every=args.checkpoint_every, seed=args.seed, threads=args.threads, device=args.device,
    )
    bar = tqdm(total=config.steps, disable=args.no_progress, unit="step", dynamic_ncols=True)

    def progress(step: int, record: dict) -> None:
        bar.n = step
        shown = {"loss": f"{record['loss']:.4f}"}
        if "val_loss" in record:
            shown["val"] = f"{record['val_loss']:.4f}"
        bar.set_postfix(shown, refresh=False)
        bar.refresh()
        if args.no_progress and (step % config.eval_every == 0):
            print(f"step {step}: " + ", ".join(f"{k} {v}" for k, v in shown.items()), flush=True)

    result = train(config, progress=progress, resume=args.resume, log=tqdm.write)
    bar.close()
    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min ({result.samples_per_second:.0f} "
          f"samples/s); checkpoint: {result.out}" + (" (interrupted)" if result.interrupted else ""))
    return 130 if result.interrupted else 0
