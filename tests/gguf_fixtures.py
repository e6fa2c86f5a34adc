"""Tiny GGUF files written with the gguf package's own writer, as llama.cpp's converter lays them out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np
import torch


def _permute_for_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp stores q/k rows of each head with the rotary halves interleaved (convert_hf_to_gguf)."""
    dim = weight.shape[0] // n_head // 2
    return weight.reshape(n_head, 2, dim, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tokenizer_fields(writer: gguf.GGUFWriter, tokenizer_json: Path) -> None:
    data = json.loads(tokenizer_json.read_text())
    vocab = dict(data["model"]["vocab"])
    special = {t["id"] for t in data["added_tokens"] if t["special"]}
    vocab.update({t["content"]: t["id"] for t in data["added_tokens"]})
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(min(special))
    writer.add_eos_token_id(min(special))
    writer.add_add_bos_token(False)


def write_gguf(
    model: torch.nn.Module,
    tokenizer_json: Path,
    path: Path,
    architecture: str = "llama",
    tensor_type: gguf.GGMLQuantizationType | None = None,
) -> Path:
    """Write a Llama ``model`` (float32 tensors) and its BPE tokenizer as a GGUF file.

    ``architecture`` is written as ``general.architecture`` (to test refusals); ``tensor_type`` stores
    the first layer's q_proj with that raw type (bytes of the right size) instead of float32.
    """
    config = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    _metadata(writer, config, tokenizer_json)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        array = tensor.detach().to(torch.float32).numpy().copy()
        if hf_name.endswith("q_proj.weight"):
            array = _permute_for_rope(array, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            array = _permute_for_rope(array, config.num_key_value_heads)
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if tensor_type is not None and hf_name == "model.layers.0.self_attn.q_proj.weight":
            block, size = gguf.GGML_QUANT_SIZES[tensor_type]
            raw = np.zeros((array.shape[0], array.shape[1] // block * size), dtype=np.uint8)
            writer.add_tensor(name, raw, raw_dtype=tensor_type)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_gguf_shapes(config, tokenizer_json: Path, path: Path) -> Path:
    """A GGUF file of a Llama ``config``'s shapes whose tensor data is a hole of zeros (a sparse file):
    what a study reads from a GGUF before importing it (the header) at any model size, in no disk space."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    writer = gguf.GGUFWriter(str(path), "llama")
    _metadata(writer, config, tokenizer_json)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    data_bytes = 0
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        nbytes = tensor.numel() * 4
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        writer.add_tensor_info(name, tuple(tensor.shape), np.dtype(np.float32), nbytes)
        data_bytes += gguf.GGUFWriter.ggml_pad(nbytes, writer.data_alignment)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    start = gguf.GGUFWriter.ggml_pad(path.stat().st_size, writer.data_alignment)
    os.truncate(path, start + data_bytes)
    return path


def _metadata(writer: gguf.GGUFWriter, config, tokenizer_json: Path) -> None:
    """The key-value metadata llama.cpp's converter writes for a Llama model and its BPE tokenizer."""
    writer.add_name("prunebench tiny test model")
    writer.add_license("apache-2.0")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_vocab_size(config.vocab_size)
    _tokenizer_fields(writer, tokenizer_json)
