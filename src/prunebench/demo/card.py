"""Write the demo model's card (``README.md`` beside the weights) from ``training.json`` and ``metrics.json``.

Every number in the card comes from those two files, which the training and evaluation scripts wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from prunebench.demo.atomic import write_text
from prunebench.errors import PrunebenchError


def _load(path: Path) -> dict:
    if not path.is_file():
        raise PrunebenchError(f"{path} not found: run the training and evaluation scripts first")
    return json.loads(path.read_text())


def _z(diff: float, stderr: float) -> str:
    return f"{diff / stderr:+.1f}" if stderr > 0 else "n/a"


def render_card(config: dict, training: dict, metrics: dict, size_bytes: int) -> str:
    """The model card as Markdown."""
    t, p, cfg = training, metrics["perplexity"], training["config"]
    tokens_per_step = cfg["seqlen"] * cfg["batch_size"]
    replay = (
        f"--max-tokens {t['end_step'] * tokens_per_step} --decay-start {t['decay_start']}"
        if t["decay_start"] is not None
        else f"--max-tokens {cfg['max_tokens']}"
    )
    rows = []
    for task, r in metrics["zero_shot"]["tasks"].items():
        rows.append(
            f"| {task} | {r['n']} | {r['acc']:.3f} ± {r['acc_stderr']:.3f} | "
            f"{r['acc_norm']:.3f} ± {r['acc_norm_stderr']:.3f} | {r['chance']:.2f} | "
            f"{r['acc'] - r['chance']:+.3f} | {_z(r['acc'] - r['chance'], r['acc_stderr'])} |"
        )
    head_dim = config["head_dim"]
    return f"""# prunebench demo Llama ({t["parameters"] / 1e6:.2f} M parameters)

A small `LlamaForCausalLM` trained from scratch by `workflow/scripts/train_demo_model.py` on five of
Jane Austen's novels, so that the offline demo study prunes a network that has learnt something.
It is a test object for pruning methods, not a useful language model.

## Architecture
| | |
|---|---|
| layers | {config["num_hidden_layers"]} |
| hidden size | {config["hidden_size"]} |
| attention | {config["num_attention_heads"]} query heads, {config["num_key_value_heads"]} KV heads (GQA, 2 query heads per KV head), head_dim {head_dim} |
| MLP (SwiGLU) intermediate size | {config["intermediate_size"]} ({config["intermediate_size"] / 128:g} × 128) |
| vocabulary | {config["vocab_size"]} (byte-level BPE, `tokenizer.json`), embeddings tied to the LM head |
| positions | RoPE, max_position_embeddings {config["max_position_embeddings"]} |
| weights | `model.safetensors`, float16 storage ({size_bytes / 2**20:.1f} MiB); `config.json` says float32, computed in float32 |

Tokenizer: adds **no** BOS/EOS by itself; `<|endoftext|>` (id {config["eos_token_id"]}) is BOS, EOS and
padding (as in GPT-2). In training it separates the novels, so lm-eval can use it as prefix token and
stop sequence.

## Data
Train split: Emma, Mansfield Park, Northanger Abbey, Pride and Prejudice, Sense and Sensibility
({t["train_tokens_in_split"]:,} tokens). Validation: first half of *Persuasion*; test: second half
(never seen in training, not used for any choice). See `../NOTICE` and `../README.md`.

## Training
{t["steps_run"]} steps of {cfg["batch_size"]} × {cfg["seqlen"]} tokens = {t["tokens_seen"]:,} tokens seen
({t["tokens_seen"] / t["train_tokens_in_split"]:.2f} epochs), AdamW (β = 0.9, {cfg["beta2"]}, weight decay
{cfg["weight_decay"]} on matrices), peak lr {cfg["lr"]}, {cfg["warmup_steps"]} warm-up steps, constant, then a
linear decay to {cfg["min_lr_rate"]} × peak from step {t["decay_start"]} to step {t["end_step"]}; gradient clip
{cfg["grad_clip"]}; float32 on CPU, {t["threads"]} thread, seed {cfg["seed"]}, {t["elapsed_s"] / 60:.1f} minutes
(torch {t["torch"]}), {t["tokens_seen"] / t["elapsed_s"]:.0f} tokens/s on average (validation passes included,
on a shared 2-core machine). The weights shipped are those of step {t["exported_step"]}
({t["exported_tokens_seen"]:,} tokens), the best validation loss of the run.
{"The wall clock stopped the run before its schedule ended." if t["stopped_by_clock"] else ""}

Command (from the repository root, with the tokenizer already in this folder):

    {t["command"]}

The wall-clock budget chose the step where the decay began; this replays the same schedule and data
order without the clock (same torch build and thread count for identical weights; not re-run):

    python workflow/scripts/train_demo_model.py {replay}

## Results (measured by `workflow/scripts/evaluate_demo_model.py`, stored in `metrics.json`)
Perplexity: {p["protocol"]}.

| split | windows | perplexity |
|---|---|---|
| validation | {p["validation"]["windows"]} | {p["validation"]["ppl"]:.2f} |
| test | {p["test"]["windows"]} | {p["test"]["ppl"]:.2f} |
| test, first {p["test_prefix"]["windows"]} windows (re-checked by `tests/test_demo_model.py`) | {p["test_prefix"]["windows"]} | {p["test_prefix"]["ppl"]:.2f} |
| unigram baseline on test ({p["unigram_protocol"]}) | – | {p["unigram_test_ppl"]:.2f} |

Zero-shot, lm-eval {metrics["zero_shot"]["lm_eval_version"]} (`--include_path resources/demo/tasks`), 4 choices each:

| task | items | acc | acc_norm | chance | acc − chance | in stderrs |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""


def write_card(model_dir: str | Path) -> Path:
    """Render the card from the files in ``model_dir`` and write ``README.md`` there (atomically)."""
    model_dir = Path(model_dir)
    text = render_card(
        _load(model_dir / "config.json"),
        _load(model_dir / "training.json"),
        _load(model_dir / "metrics.json"),
        (model_dir / "model.safetensors").stat().st_size,
    )
    path = model_dir / "README.md"
    write_text(path, text)
    return path
