"""Markdown tables of a ``bench_latency.py`` JSON: measured vs ideal speed-up per engine, plan and cell.

    python benchmarks/latency_tables.py docs/measurements/latency-demo-cpu.json

One table of speed-ups (measured: ratio of medians, with the p10-p90 of the paired per-round ratios;
ideal: ratio of roofline times, with the bound) and one of the dense model's own figures per engine and
cell (median times, compile time, achieved fractions of the measured peaks).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def speedup_table(bench: dict) -> list[str]:
    lines = [
        "| engine | plan | decoder params removed | batch | prompt | prefill: measured [p10-p90] / ideal "
        "| decode: measured [p10-p90] / ideal |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in bench["runs"]:
        variant = run["variant"]
        for s in run["speedups"]:
            head = (
                f"| {s['engine']} | {variant['plan']} {variant['target_ratio']} | {variant['decoder_ratio']:.3f} "
                f"| {s['batch_size']} | {s['prompt_length']} |"
            )
            if s["status"] != "ok":
                lines.append(f"{head} {s['status']} | {s['status']} |")
                continue
            cells = [
                f"{s[f'measured_{p}']:.2f}× [{s[f'measured_{p}_paired_p10']:.2f}-{s[f'measured_{p}_paired_p90']:.2f}]"
                f" / {s[f'ideal_{p}']:.2f}× ({s[f'{p}_bound']})"
                for p in ("prefill", "decode")
            ]
            lines.append(f"{head} {cells[0]} | {cells[1]} |")
    return lines


def dense_table(bench: dict) -> list[str]:
    """The dense model's figures, from the first run (it is the base of every run)."""
    lines = [
        "| engine | batch | prompt | prefill median [p10-p90] | decode median [p10-p90] per token "
        "| compile | prefill of peak FLOP/s | decode of peak bandwidth | decode of roofline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in bench["runs"][0]["measurements"]:
        if row["model"] != "base":
            continue
        head = f"| {row['engine']} | {row['batch_size']} | {row['prompt_length']} |"
        if row["status"] != "ok":
            lines.append(f"{head} {row['status']} | | | | | |")
            continue
        ms = {
            p: f"{row[f'{p}_median_{u}'] * 1e3:.2f} ms [{row[f'{p}_p10_{u}'] * 1e3:.2f}-{row[f'{p}_p90_{u}'] * 1e3:.2f}]"
            for p, u in (("prefill", "s"), ("decode", "s_per_token"))
        }
        compile_s = "-" if row["compile_s"] is None else f"{row['compile_s']:.0f} s"
        lines.append(
            f"{head} {ms['prefill']} | {ms['decode']} | {compile_s} | {row['prefill_fraction_of_peak_flops']:.3f} "
            f"| {row['decode_fraction_of_peak_bandwidth']:.3f} | {row['decode_fraction_of_roofline']:.3f} |"
        )
    return lines


def main(argv: list[str]) -> int:
    for path in argv:
        bench = json.loads(Path(path).read_text())
        peaks = bench["runs"][0]["peaks"]
        print(f"## {path}\n\n`{bench['command']}`\n")
        print(
            f"Measured peaks (first run): copy {peaks['bytes_per_s'] / 1e9:.1f} GB/s, "
            f"GEMM {peaks['flops_per_s'] / 1e9:.1f} GFLOP/s ({peaks['gemm_dtype']}, n={peaks['gemm_n']}).\n"
        )
        print("\n".join(dense_table(bench)) + "\n")
        print("\n".join(speedup_table(bench)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
