"""Build tests/data/tiny-model: a random 4-layer GQA Llama with the demo tokenizer (pipeline tests only).

Run from the repository root: ``python tests/data/make_tiny_model.py``. Deterministic (seed 0).
"""

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from prunebench.models import save_pretrained

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "resources" / "demo" / "model")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    save_pretrained(model, ROOT / "tests" / "data" / "tiny-model", tokenizer=tokenizer)


if __name__ == "__main__":
    main()
