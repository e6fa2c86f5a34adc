"""Rebuild resources/demo/corpus/{train,validation,test}.txt.gz from Debian's r-cran-janeaustenr.

Usage: python workflow/scripts/build_demo_corpus.py [--deb-dir DIR] [--out resources/demo/corpus]
"""

from __future__ import annotations

import argparse

from prunebench.demo.corpus import build_corpus
from prunebench.demo.entry import run


def main() -> None:
    """Parse arguments and build the corpus."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--deb-dir", default="resources/demo/.debs", help="folder holding/receiving .deb files"
    )
    parser.add_argument("--out", default="resources/demo/corpus", help="output folder")
    parser.add_argument("--no-download", action="store_true", help="fail instead of running apt-get download")
    args = parser.parse_args()
    for split, path in build_corpus(args.deb_dir, args.out, download=not args.no_download).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    run(main)
