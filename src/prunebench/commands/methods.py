"""``prunebench methods``: the registered pruning methods, one line each."""

from __future__ import annotations

import argparse

NAME = "methods"
HELP = "list the registered pruning methods"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--defaults", action="store_true", help="also print each method's default options")
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="also say whether each method scores layer by layer (score --stream) and prunes from CPU memory (prune --stream)",
    )


def run(args: argparse.Namespace) -> int:
    from prunebench.methods import available_methods

    methods = available_methods()
    width = max((len(n) for n in methods), default=0)
    for name, cls in methods.items():
        tags = "" if cls.uses_calibration else " [data-free: no calibration]"
        tags += " [expensive step per ratio]" if cls.ratio_dependent else ""
        print(f"{name:<{width}}  {cls.summary()}{tags}")
        if args.streaming:
            reason, note = cls.no_streaming, cls.streaming_note
            answer = ("yes" + (f", {note}" if note else "")) if reason is None else "no, " + reason
            print(f"{'':<{width}}    streams: {answer}")
            reason = cls.no_streamed_selection
            print(f"{'':<{width}}    prunes from CPU memory: {'yes' if reason is None else 'no, ' + reason}")
        if args.defaults:
            for key, value in cls.Config().to_dict().items():
                print(f"{'':<{width}}    {key} = {value}")
    return 0
