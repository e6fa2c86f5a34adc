"""ModelAdapter: what prunebench needs to know about one family of Llama-style decoders."""

from __future__ import annotations

from torch import nn

from prunebench.errors import PrunebenchError

SUPPORTED_FAMILIES = ("llama", "mistral", "qwen2")


class ModelAdapter:
    """Uniform view of a Llama-style causal LM (Llama 1/2/3, Mistral, Qwen2), dense or pruned.

    Every family here has ``model.model.layers[i].self_attn.{q,k,v,o}_proj``,
    ``mlp.{gate,up,down}_proj`` and two RMSNorms per layer; they differ in biases (Qwen2 has q/k/v
    biases), GQA grouping and embedding tying. Shapes of the *dense* config are exposed as
    attributes; the current shapes of a (possibly pruned) layer through ``kv_heads(i)`` and
    ``mlp_channels(i)``.
    """

    def __init__(self, model: nn.Module) -> None:
        config = getattr(model, "config", None)
        family = getattr(config, "model_type", None)
        if family not in SUPPORTED_FAMILIES:
            raise PrunebenchError(
                f"unsupported model type {family!r}; supported families: {', '.join(SUPPORTED_FAMILIES)}"
            )
        if not hasattr(model, "model") or not hasattr(model.model, "layers"):
            raise PrunebenchError(f"{type(model).__name__} is not a causal LM with decoder layers")
        self.model = model
        self.family: str = family
        self.config = config
        self.hidden_size: int = config.hidden_size
        self.num_heads: int = config.num_attention_heads
        self.num_kv_heads: int = config.num_key_value_heads
        self.head_dim: int = (
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.group_size: int = self.num_heads // self.num_kv_heads
        self.intermediate_size: int = config.intermediate_size
        self.attn_bias: bool = bool(getattr(config, "attention_bias", family == "qwen2"))
        self.tied_embeddings: bool = bool(getattr(config, "tie_word_embeddings", False))

    @property
    def name(self) -> str:
        """The model's name or path as loaded (``config._name_or_path``), or ``"model"``."""
        return str(getattr(self.config, "_name_or_path", "") or "model")

    def shape_meta(self) -> dict[str, int]:
        """The dense shapes a width method's scores are laid out by (layers, KV groups, heads, channels)."""
        return {
            "num_layers": self.num_layers,
            "num_kv_heads": self.num_kv_heads,
            "group_size": self.group_size,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
        }

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.model.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.model.embed_tokens

    @property
    def final_norm(self) -> nn.Module:
        return self.model.model.norm

    @property
    def lm_head(self) -> nn.Linear:
        return self.model.lm_head

    def attention(self, layer: int) -> nn.Module | None:
        return getattr(self.layers[layer], "self_attn", None)

    def mlp(self, layer: int) -> nn.Module | None:
        return getattr(self.layers[layer], "mlp", None)

    def input_norm(self, layer: int) -> nn.Module | None:
        return getattr(self.layers[layer], "input_layernorm", None)

    def post_attention_norm(self, layer: int) -> nn.Module | None:
        return getattr(self.layers[layer], "post_attention_layernorm", None)

    def kv_heads(self, layer: int) -> int:
        attn = self.attention(layer)
        return 0 if attn is None else attn.k_proj.out_features // self.head_dim

    def mlp_channels(self, layer: int) -> int:
        mlp = self.mlp(layer)
        return 0 if mlp is None else mlp.gate_proj.out_features

    def is_dense(self) -> bool:
        """True when every layer has the dense config's shapes."""
        return self.num_layers == self.config.num_hidden_layers and all(
            self.kv_heads(i) == self.num_kv_heads and self.mlp_channels(i) == self.intermediate_size
            for i in range(self.num_layers)
        )


def get_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``; an unsupported family is a ``PrunebenchError`` naming it."""
    return ModelAdapter(model)
