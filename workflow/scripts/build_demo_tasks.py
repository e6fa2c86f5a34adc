"""Rebuild the local zero-shot task data resources/demo/tasks/*.jsonl (test split + Debian wordnet-base).

Usage: python workflow/scripts/build_demo_tasks.py [--corpus DIR] [--deb-dir DIR] [--out DIR] [--items N]
"""

from __future__ import annotations

import argparse

from prunebench.demo.entry import run
from prunebench.demo.tasks import build_tasks


def main() -> None:
    """Parse arguments and build the task files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="resources/demo/corpus", help="folder of the corpus splits")
    parser.add_argument(
        "--deb-dir", default="resources/demo/.debs", help="folder holding/receiving .deb files"
    )
    parser.add_argument("--out", default="resources/demo/tasks", help="task folder (YAML files live there)")
    parser.add_argument("--items", type=int, default=500, help="items per task")
    parser.add_argument("--no-download", action="store_true", help="fail instead of running apt-get download")
    args = parser.parse_args()
    for task, path in build_tasks(
        args.corpus, args.deb_dir, args.out, args.items, not args.no_download
    ).items():
        print(f"{task}: {path}")


if __name__ == "__main__":
    run(main)
