"""``prunebench info``: family, layers, heads and parameter counts of a model."""

from __future__ import annotations

import argparse
import json

from prunebench.commands.common import add_model_arguments, device_of, dtype_of

NAME = "info"
HELP = "show a model's family, layer shapes and parameter counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def describe(model) -> dict:
    from prunebench.models import get_adapter
    from prunebench.models.counting import decoder_params, total_params

    adapter = get_adapter(model)
    return {
        "family": adapter.family,
        "layers": adapter.num_layers,
        "hidden_size": adapter.hidden_size,
        "heads": adapter.num_heads,
        "kv_heads": adapter.num_kv_heads,
        "head_dim": adapter.head_dim,
        "intermediate_size": adapter.intermediate_size,
        "per_layer": [
            {"kv_heads": adapter.kv_heads(i), "mlp_channels": adapter.mlp_channels(i)}
            for i in range(adapter.num_layers)
        ],
        "decoder_params": decoder_params(model),
        "total_params": total_params(model),
        "pruned": not adapter.is_dense(),
    }


def run(args: argparse.Namespace) -> int:
    from prunebench.models import load_pretrained

    model, _ = load_pretrained(args.model, dtype=dtype_of(args), device=device_of(args))
    facts = describe(model)
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    print(f"family            {facts['family']}")
    print(f"layers            {facts['layers']}")
    print(f"heads / KV heads  {facts['heads']} / {facts['kv_heads']} (head_dim {facts['head_dim']})")
    print(f"intermediate      {facts['intermediate_size']}")
    print(f"decoder params    {facts['decoder_params']:,}")
    print(f"total params      {facts['total_params']:,}")
    if facts["pruned"]:
        for i, layer in enumerate(facts["per_layer"]):
            print(f"  layer {i:3d}: {layer['kv_heads']} KV heads, {layer['mlp_channels']} channels")
    return 0
