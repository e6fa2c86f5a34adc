"""Rebuild the demo tokenizer (byte-level BPE, 4096 entries) from the train split into resources/demo/model.

Usage: python workflow/scripts/build_demo_tokenizer.py [--corpus DIR] [--out DIR] [--vocab-size N]
"""

from __future__ import annotations

import argparse

from prunebench.demo.corpus import load_split
from prunebench.demo.entry import run
from prunebench.demo.tokenizer import VOCAB_SIZE, build_tokenizer


def main() -> None:
    """Parse arguments and build the tokenizer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="resources/demo/corpus", help="folder of the corpus splits")
    parser.add_argument("--out", default="resources/demo/model", help="model folder receiving the tokenizer")
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args()
    print(build_tokenizer(load_split(args.corpus, "train"), args.out, args.vocab_size))


if __name__ == "__main__":
    run(main)
