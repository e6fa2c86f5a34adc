"""Train the demo Llama on the demo corpus; writes safetensors + config into the model folder.

The tokenizer must already be in the model folder (build_demo_tokenizer.py). Resumes from
--checkpoint when it exists. Example (the command that trained the shipped model is in its card):
  nohup nice -n 5 python workflow/scripts/train_demo_model.py --max-tokens 20000000 --minutes 65 > train.log &
"""

from __future__ import annotations

import argparse
import shlex
import sys

from prunebench.demo.corpus import load_split
from prunebench.demo.entry import run
from prunebench.demo.tokenizer import load_tokenizer
from prunebench.demo.train import TrainConfig, train


def main() -> None:
    """Parse arguments and train."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="resources/demo/corpus")
    parser.add_argument("--model-dir", default="resources/demo/model")
    parser.add_argument("--checkpoint", default="resources/demo/.train/checkpoint.pt")
    parser.add_argument("--max-tokens", type=int, required=True, help="token budget (sets the schedule)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget; stops early")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument(
        "--decay-frac", type=float, default=0.2, help="share of the run spent decaying the lr"
    )
    parser.add_argument("--decay-start", type=int, default=None, help="replay a recorded decay start step")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="1 beats 2 on a shared 2-core machine")
    args = parser.parse_args()
    cfg = TrainConfig(
        max_tokens=args.max_tokens,
        minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        decay_frac=args.decay_frac,
        decay_start=args.decay_start,
        eval_every=args.eval_every,
        seed=args.seed,
        threads=args.threads,
    )
    cfg.check()
    tokenizer = load_tokenizer(args.model_dir)
    command = shlex.join(["python", *sys.argv])
    train(
        load_split(args.corpus, "train"),
        load_split(args.corpus, "validation"),
        tokenizer,
        cfg,
        args.model_dir,
        args.checkpoint,
        command,
    )


if __name__ == "__main__":
    run(main)
