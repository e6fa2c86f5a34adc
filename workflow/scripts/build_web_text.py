"""Rebuild resources/texts/web/{validation,test}.txt.gz from Debian's sword-text-web (World English Bible).

Usage: python workflow/scripts/build_web_text.py [--deb-dir DIR] [--out resources/texts/web]
"""

from __future__ import annotations

import argparse

from prunebench.demo.bible import build_text
from prunebench.demo.entry import run


def main() -> None:
    """Parse arguments and build the two splits."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--deb-dir", default="resources/texts/.debs", help="folder holding/receiving .deb files"
    )
    parser.add_argument("--out", default="resources/texts/web", help="output folder")
    parser.add_argument("--no-download", action="store_true", help="fail instead of running apt-get download")
    args = parser.parse_args()
    for split, path in build_text(args.deb_dir, args.out, download=not args.no_download).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    run(main)
