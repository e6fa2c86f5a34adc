"""``prunebench import-gguf``: a GGUF file as an ordinary Hugging Face checkpoint, with provenance."""

from __future__ import annotations

import argparse

NAME = "import-gguf"
HELP = "import a GGUF file (llama.cpp) as a float32 Hugging Face checkpoint with provenance.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gguf", required=True, help="the .gguf file (with --package: a file name inside that package)"
    )
    parser.add_argument("--out", required=True, help="output directory for the checkpoint (must not exist)")
    parser.add_argument(
        "--package", help="installed Python distribution that ships the file (recorded with its version)"
    )


def run(args: argparse.Namespace) -> int:
    from prunebench.models.gguf_import import import_gguf

    provenance = import_gguf(args.gguf, args.out, package=args.package)
    types = ", ".join(f"{n} {t}" for t, n in provenance["gguf"]["tensor_types"].items())
    print(f"imported {provenance['source']['file']} ({types}; dequantized to float32) into {args.out}")
    return 0
