"""The demo tokenizer: byte-level BPE trained on the train split, saved as a Hugging Face fast tokenizer.

It adds **no** special token by itself (lm-eval prepends its own prefix token; a tokenizer that adds
one too would make rolling log-likelihoods see "BOS after BOS"). One special token,
``<|endoftext|>``, serves as BOS, EOS and padding, as in GPT-2: in training it separates the novels,
so the model has seen it before a document start (lm-eval's prefix) and after a document end
(lm-eval's stop sequence).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from prunebench.errors import PrunebenchError

SPECIAL = "<|endoftext|>"
VOCAB_SIZE = 4096


def train_tokenizer(text: str, vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with ``vocab_size`` entries (256 bytes + merges + the special token)."""
    if vocab_size < 257 + 1:
        raise PrunebenchError(f"vocab_size must exceed 257 (bytes + special token), got {vocab_size}")
    if not text.strip():
        raise PrunebenchError("cannot train a tokenizer on empty text")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # offsets only; adds no token
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL,
        eos_token=SPECIAL,
        pad_token=SPECIAL,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a saved demo tokenizer and check that it adds no special token to plain text."""
    if not Path(path, "tokenizer.json").is_file():
        raise PrunebenchError(f"no tokenizer.json in {path}")
    tok = AutoTokenizer.from_pretrained(str(path))
    probe = tok("Anne smiled.")["input_ids"]
    if probe != tok("Anne smiled.", add_special_tokens=False)["input_ids"]:
        raise PrunebenchError(f"tokenizer in {path} adds special tokens; the demo tokenizer must not")
    return tok


def build_tokenizer(train_text: str, out_dir: str | Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """Train the tokenizer on ``train_text`` and save it into ``out_dir`` (other files there are kept)."""
    from prunebench.demo.atomic import updated_dir

    tok = train_tokenizer(train_text, vocab_size)
    with updated_dir(out_dir) as tmp:
        tok.save_pretrained(tmp)
    return Path(out_dir)
