"""Rules for keras-hub's transformer blocks (imported only once keras-hub is).

`registry.rule_for` loads this module the first time it meets a layer of a
keras-hub class, so importing keras-dropneuron never imports keras-hub.
Each rule names the block's feed-forward sublayers and lists every weight the
block holds; a block holding another weight (LoRA, quantization, a subclass's
extra sublayer) is kept whole.
"""

import keras
from keras_hub.src.layers.modeling.transformer_decoder import TransformerDecoder
from keras_hub.src.layers.modeling.transformer_encoder import TransformerEncoder
from keras_hub.src.models.gemma.gemma_decoder_block import GemmaDecoderBlock
from keras_hub.src.models.llama.llama_decoder import LlamaTransformerDecoder
from keras_hub.src.models.mistral.mistral_transformer_decoder import MistralTransformerDecoder
from keras_hub.src.models.qwen.qwen_decoder import QwenTransformerDecoder

from keras_dropneuron import keras_internals
from keras_dropneuron.layer_rules.attention import attention_macs
from keras_dropneuron.layer_rules.base import Layer, Tensor, Tensors
from keras_dropneuron.layer_rules.helpers import spatial_size
from keras_dropneuron.layer_rules.transformer_block import (
    FeedForward,
    GroupedAttention,
    TransformerBlockRule,
    grouped_attention_macs,
    main_input,
    sequence_length,
)

_NORM = ("gamma", "beta")  # LayerNormalization
_PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")


def _weights(*sublayers: str, names: tuple[str, ...] = ("kernel", "bias")) -> tuple[str, ...]:
    return tuple(f"{sublayer}.{name}" for sublayer in sublayers for name in names)


def _attention(prefix: str, projections: tuple[str, ...] = _PROJECTIONS) -> tuple[str, ...]:
    return _weights(*(f"{prefix}.{projection}" for projection in projections))


_PLAIN = FeedForward(up="_feedforward_intermediate_dense", down="_feedforward_output_dense")


@keras.saving.register_keras_serializable(package="keras_dropneuron")
class HeadSizedTransformerEncoder(TransformerEncoder):
    """A keras-hub `TransformerEncoder` whose config holds its head size.

    `TransformerEncoder` derives the head size from `hidden_dim // num_heads`,
    so a block with fewer heads would get bigger ones. This one takes
    `head_dim`, and computes exactly what `TransformerEncoder` computes (the
    same `call()`); `slim_model` re-creates an encoder that lost heads as one.

    Args:
        head_dim: The size of each attention head. Defaults to `None`:
            `hidden_dim // num_heads`, as `TransformerEncoder`.
        **kwargs: The arguments of `TransformerEncoder`.
    """

    def __init__(self, *args, head_dim: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head_dim = head_dim

    def build(self, inputs_shape: tuple) -> None:
        super().build(inputs_shape)
        derived = self._self_attention_layer
        if self.head_dim is None or self.head_dim == derived.key_dim:
            return
        config = {**derived.get_config(), "key_dim": self.head_dim, "value_dim": self.head_dim}
        attention = keras.layers.MultiHeadAttention.from_config(config)
        attention.build(query_shape=inputs_shape, value_shape=inputs_shape)
        keras_internals.replace_sublayer(self, "_self_attention_layer", attention)

    def get_config(self) -> dict:
        return {**super().get_config(), "head_dim": self.head_dim}


class TransformerEncoderRule(TransformerBlockRule):
    """keras-hub `TransformerEncoder` (BERT, RoBERTa, DistilBERT, ...).

    Dead heads go too: an encoder that loses some is re-created as a
    `HeadSizedTransformerEncoder`, which keeps their size. A backbone's own
    config cannot hold the head size, so at uniform widths the heads stay.
    """

    types = (TransformerEncoder,)
    ffn = _PLAIN
    heads = GroupedAttention(
        *(f"_self_attention_layer.{p}" for p in _PROJECTIONS),
        head_axis=1,
        query_heads="num_heads",
        kv_heads="num_heads",
    )

    def heads_kept_reason(self, layer: Layer) -> str | None:
        if type(layer) not in (TransformerEncoder, HeadSizedTransformerEncoder):
            return f"{type(layer).__name__} may build its own attention"
        return super().heads_kept_reason(layer)

    def resized_class(self, layer: Layer, config: dict) -> type:
        return HeadSizedTransformerEncoder if "head_dim" in config else type(layer)

    state = (
        *_attention("_self_attention_layer"),
        *_weights(
            "_self_attention_layer_norm", "_feedforward_layer_norm", names=("gamma", "beta")
        ),
        *_weights(_PLAIN.up, _PLAIN.down),
    )

    def attention_macs(self, layer: Layer, tensor: Tensor) -> int:
        shape = tensor.shape
        return attention_macs(layer._self_attention_layer, shape, shape, shape, tensor)


class TransformerDecoderRule(TransformerEncoderRule):
    """keras-hub `TransformerDecoder` (GPT-2, BART's decoder, ...), with cross-attention.

    Its heads are kept: it derives their size from `hidden_dim // num_heads`.
    """

    types = (TransformerDecoder,)
    heads = None
    state = (
        *TransformerEncoderRule.state,
        *_attention("_cross_attention_layer"),
        *_weights("_cross_attention_layer_norm", names=_NORM),
    )

    def call_macs(self, call, tensors_in: Tensors, tensor_out: Tensor) -> int:
        macs = super().call_macs(call, tensors_in, tensor_out)
        cross = call.layer._cross_attention_layer
        if cross is None:
            return macs
        args, kwargs = call.arguments(dict(zip(call.raw_inputs, tensors_in, strict=True)))
        encoder = args[1] if len(args) > 1 else kwargs.get("encoder_sequence")
        if encoder is None:
            return macs
        query = main_input(tensors_in, tensor_out).shape
        return macs + attention_macs(cross, query, encoder.shape, encoder.shape, tensor_out)


_GATED = FeedForward(
    up="_feedforward_intermediate_dense",
    down="_feedforward_output_dense",
    gate="_feedforward_gate_dense",
    activation="activation",
)


class GatedDecoderRule(TransformerBlockRule):
    """keras-hub's Qwen decoder: `down(up(x) * silu(gate(x)))`.

    Its attention derives the head size from `hidden_dim // num_query_heads`,
    so its heads are kept.
    """

    types = (QwenTransformerDecoder,)
    ffn = _GATED
    state = (
        *_attention("_self_attention_layer"),
        *_weights("_self_attention_layernorm", "_feedforward_layernorm", names=("scale",)),
        *_weights(_GATED.up, _GATED.gate, _GATED.down),
    )

    def attention_macs(self, layer: Layer, tensor: Tensor) -> int:
        attention = layer._self_attention_layer
        query = attention._query_dense.kernel.shape  # (dim, heads, head_dim)
        key = attention._key_dense.kernel.shape
        return grouped_attention_macs(
            spatial_size(tensor.shape),
            sequence_length(tensor),
            query[0],
            query[1],
            key[1],
            query[2],
        )


class MistralDecoderRule(GatedDecoderRule):
    """keras-hub `MistralTransformerDecoder`: gated network, grouped-query heads removed.

    Its config takes `head_dim`, so a block with fewer heads keeps their size.
    """

    types = (MistralTransformerDecoder,)
    heads = GroupedAttention(*(f"_self_attention_layer.{p}" for p in _PROJECTIONS), head_axis=1)


class LlamaDecoderRule(GatedDecoderRule):
    """keras-hub `LlamaTransformerDecoder` (Llama 2 and 3).

    Its `get_config()` reads an attribute the class never sets, so the rule
    gives the config from the constructor's arguments, each held under its
    own name.
    """

    types = (LlamaTransformerDecoder,)
    arguments = (
        "intermediate_dim",
        "num_query_heads",
        "num_key_value_heads",
        "rope_max_wavelength",
        "rope_position_scaling_factor",
        "rope_frequency_adjustment_factor",
        "rope_low_freq_factor",
        "rope_high_freq_factor",
        "rope_pretraining_sequence_length",
        "layer_norm_epsilon",
        "dropout",
    )

    def layer_config(self, layer: Layer) -> dict:
        try:
            return layer.get_config()
        except AttributeError:
            config = keras.layers.Layer.get_config(layer)
        config.update({name: getattr(layer, name) for name in self.arguments})
        config["activation"] = keras.activations.serialize(layer.activation)
        config["kernel_initializer"] = keras.initializers.serialize(layer.kernel_initializer)
        return config


def _gelu(x):
    return keras.activations.gelu(x, approximate=True)


_GEMMA = FeedForward(
    up="gating_ffw_2", down="ffw_linear", gate="gating_ffw", activation=None, width_per_unit=2
)


class GemmaDecoderRule(TransformerBlockRule):
    """keras-hub `GemmaDecoderBlock`: `ffw_linear(gelu(gating_ffw(x)) * gating_ffw_2(x))`.

    Its `intermediate_dim` is twice its feed-forward units.
    """

    types = (GemmaDecoderBlock,)
    ffn = _GEMMA
    heads = GroupedAttention(
        *(f"attention.{p}" for p in ("query_dense", "key_dense", "value_dense", "output_dense")),
        head_axis=0,
    )
    state = (
        *_weights("attention.query_dense", "attention.key_dense", "attention.value_dense"),
        *_weights("attention.output_dense"),
        *_weights(
            "pre_attention_norm",
            "post_attention_norm",
            "pre_ffw_norm",
            "post_ffw_norm",
            names=("scale",),
        ),
        *_weights(_GEMMA.up, _GEMMA.gate, _GEMMA.down),
    )

    def activation_of(self, layer: Layer) -> object:
        return _gelu  # applied in `call()`, not held by the block

    def heads_kept_reason(self, layer: Layer) -> str | None:
        if not (layer.query_head_dim_normalize and layer.attention.query_head_dim_normalize):
            return "queries scaled by hidden_dim // num_query_heads, which would change"
        return super().heads_kept_reason(layer)

    def attention_macs(self, layer: Layer, tensor: Tensor) -> int:
        return grouped_attention_macs(
            spatial_size(tensor.shape),
            sequence_length(tensor),
            layer.hidden_dim,
            layer.num_query_heads,
            layer.num_key_value_heads,
            layer.head_dim,
        )


RULES = (
    TransformerEncoderRule(),
    TransformerDecoderRule(),
    GatedDecoderRule(),
    MistralDecoderRule(),
    LlamaDecoderRule(),
    GemmaDecoderRule(),
)
