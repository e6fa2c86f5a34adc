"""Random-structure baseline, written as an outside method would be: only the plan format, no prunebench.

Reads the base model's config.json, removes the same number of KV groups and MLP channels from every
layer (chosen at random with a seed) and writes plan.json (docs/plan-format.md). The counts follow the
official Wanda-sp rule, as prunebench's uniform baselines do: a native ratio r removes int(r * kv) KV
groups and int(channels * r) channels per layer (floor), with r chosen so that the removed decoder
parameters come closest to the target ratio; a target missed by more than 0.02 is refused.
"""

import json
import math
import random
import sys
import traceback
from pathlib import Path


def layer_costs(cfg: dict) -> tuple[int, int, int]:
    """Decoder parameters per layer, per KV group and per MLP channel (no biases, as in Llama)."""
    hidden, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or hidden // heads
    group = heads // kv
    per_group = 2 * group * head_dim * hidden + 2 * head_dim * hidden
    per_channel = 3 * hidden
    per_layer = kv * per_group + cfg["intermediate_size"] * per_channel + 2 * hidden
    return per_layer, per_group, per_channel


def uniform_counts(cfg: dict, ratio: float) -> tuple[float, int, int]:
    """(r, KV groups removed, channels removed) per layer: the floored counts closest to ``ratio``."""
    per_layer, per_group, per_channel = layer_costs(cfg)
    kv, channels = cfg["num_key_value_heads"], cfg["intermediate_size"]
    steps = {0.0}
    for units in (kv, channels):
        for count in range(1, units):
            r = count / units
            while int(r * units) < count:
                r = math.nextafter(r, 1.0)
            steps.add(r)
    options = [(r, int(r * kv), int(channels * r)) for r in sorted(steps)]
    r, groups, drop = min(
        options, key=lambda o: abs((o[1] * per_group + o[2] * per_channel) / per_layer - ratio)
    )
    achieved = (groups * per_group + drop * per_channel) / per_layer
    if abs(achieved - ratio) > 0.02:
        raise ValueError(
            f"random-structure: uniform counts reach a decoder ratio of {achieved:.3f}, not {ratio}"
        )
    return r, groups, drop


def plan_for(cfg: dict, ratio: float, seed: int, base_model: str) -> dict:
    kv, channels, layers = cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    r, drop_groups, drop_channels = uniform_counts(cfg, ratio)
    rng = random.Random(seed)
    plan_layers = {}
    for layer in range(layers):
        plan_layers[str(layer)] = {
            "kv_heads": sorted(rng.sample(range(kv), kv - drop_groups)),
            "mlp_channels": sorted(rng.sample(range(channels), channels - drop_channels)),
        }
    return {
        "format": "prunebench-plan/1",
        "base_model": base_model,
        "method": "random-structure",
        "params": {"seed": seed},
        "target_ratio": ratio,
        "layers": plan_layers,
        "notes": {
            "native_pruning_ratio": r,
            "removed_kv_groups_per_layer": drop_groups,
            "removed_channels_per_layer": drop_channels,
        },
    }


def main(model_dir: str, ratio: float, seed: int, out: str, log: str) -> None:
    with open(log, "w") as log_file:
        try:
            cfg = json.loads((Path(model_dir) / "config.json").read_text())
            plan = plan_for(cfg, ratio, seed, model_dir)
            tmp = Path(out).with_suffix(".tmp")
            tmp.write_text(json.dumps(plan, indent=2))
            tmp.replace(out)
        except Exception:
            traceback.print_exc(file=log_file)  # the log keeps the reason; the exception still fails the job
            raise
        print(f"wrote {out}", file=log_file)


if __name__ == "__main__" and "snakemake" not in globals():
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], "/dev/null")
else:
    sm = snakemake  # noqa: F821 (the snakemake object is injected by Snakemake)
    main(sm.params.model, float(sm.params.ratio), int(sm.params.seed), sm.output[0], sm.log[0])
