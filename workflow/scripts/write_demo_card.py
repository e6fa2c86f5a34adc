"""Write resources/demo/model/README.md (the model card) from training.json and metrics.json.

Usage: python workflow/scripts/write_demo_card.py [--model-dir DIR]
"""

from __future__ import annotations

import argparse

from prunebench.demo.card import write_card
from prunebench.demo.entry import run


def main() -> None:
    """Parse arguments and write the card."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="resources/demo/model")
    print(write_card(parser.parse_args().model_dir))


if __name__ == "__main__":
    run(main)
