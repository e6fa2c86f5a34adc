"""The demo model's architecture and its save/load helpers.

Shape chosen so every pruning method has something to do: 12 layers (depth pruning), GQA with 4 KV
heads of 2 query heads each and head_dim 32 (head-group pruning), MLP width 512 = 4 x 128 (CFSP rounds
widths to 128). Weights are stored as float16 safetensors to stay under 30 MB; the config says
float32, so ``from_pretrained`` computes in float32 on the CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from prunebench.demo.atomic import updated_dir
from prunebench.errors import PrunebenchError

STORAGE_DTYPE = torch.float16


def demo_config(vocab_size: int, special_token_id: int) -> LlamaConfig:
    """The demo Llama config (≈8.1 M parameters with a 4096 vocabulary, tied embeddings)."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=12,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=special_token_id,
        eos_token_id=special_token_id,
        pad_token_id=special_token_id,
    )


def save_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> None:
    """Write model (float16 safetensors, float32 config) and tokenizer to ``out_dir`` atomically.

    Files in ``out_dir`` that are not written here (model card, metrics) are carried over.
    """
    with updated_dir(out_dir) as tmp:
        copy.deepcopy(model).to(STORAGE_DTYPE).save_pretrained(tmp, safe_serialization=True)
        config = copy.deepcopy(model.config)
        config.dtype = torch.float32  # save_pretrained wrote the storage dtype; loading should upcast
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def load_model(path: str | Path) -> LlamaForCausalLM:
    """Load the demo model in float32, in eval mode; a clear error when the folder is not a model."""
    if not Path(path, "config.json").is_file() or not Path(path, "model.safetensors").is_file():
        raise PrunebenchError(f"no demo model (config.json + model.safetensors) in {path}")
    model = LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return model.eval()
