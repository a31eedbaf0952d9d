"""Rules for keras-hub's transformer blocks (imported only once keras-hub is).

`registry.rule_for` loads this module the first time it meets a layer of a
keras-hub class, so importing keras-dropneuron never imports keras-hub.
Each rule names the block's feed-forward sublayers and lists every weight the
block holds; a block holding another weight (LoRA, quantization, a subclass's
extra sublayer) is kept whole.

Blocks whose attention derives the head size from `hidden_dim // num_heads`
(BERT's encoder, GPT-2's decoder, Llama, Qwen) lose dead heads by being
re-created as a registered subclass (`HeadSized...`) that takes `head_dim`
and otherwise computes what its parent computes.
"""

import dataclasses
import math
import numbers
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras_hub.src.layers.modeling.transformer_decoder import TransformerDecoder
from keras_hub.src.layers.modeling.transformer_encoder import TransformerEncoder
from keras_hub.src.models.gemma.gemma_decoder_block import GemmaDecoderBlock
from keras_hub.src.models.llama.llama_decoder import LlamaTransformerDecoder
from keras_hub.src.models.mistral.mistral_transformer_decoder import MistralTransformerDecoder
from keras_hub.src.models.qwen.qwen_decoder import QwenTransformerDecoder
from keras_hub.src.models.vit.vit_layers import MLP, ViTEncoder, ViTEncoderBlock

from keras_dropneuron import keras_internals
from keras_dropneuron.layer_rules.attention import attention_macs
from keras_dropneuron.layer_rules.base import (
    Constants,
    Cut,
    Layer,
    LayerRule,
    Pairs,
    Strengths,
    Tensor,
    Tensors,
    Weights,
    attribute,
)
from keras_dropneuron.layer_rules.helpers import spatial_size
from keras_dropneuron.layer_rules.layout import WeightLayout, group_alive
from keras_dropneuron.layer_rules.transformer_block import (
    BlockUnits,
    FeedForward,
    GroupedAttention,
    TransformerBlockRule,
    grouped_attention_macs,
    main_input,
    padded_units,
    sequence_length,
)
from keras_dropneuron.weight_values import numpy

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis, Plan

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
        self.head_dim = _check_head_dim(head_dim)

    def build(self, inputs_shape: tuple) -> None:
        super().build(inputs_shape)
        _resize_attention(self, "_self_attention_layer", self.head_dim, inputs_shape, inputs_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "head_dim": self.head_dim}


@keras.saving.register_keras_serializable(package="keras_dropneuron")
class HeadSizedTransformerDecoder(TransformerDecoder):
    """A keras-hub `TransformerDecoder` (GPT-2's block) whose config holds its head size.

    `TransformerDecoder` derives the head size of its self-attention (and of
    its cross-attention, if any) from `hidden_dim // num_heads`. This one
    takes `head_dim` for both, and computes exactly what `TransformerDecoder`
    computes, with or without a cache (the same `call()`; a cache holds
    `num_heads` heads of `head_dim`); `slim_model` re-creates a decoder that
    lost heads as one.

    Args:
        head_dim: The size of each attention head. Defaults to `None`:
            `hidden_dim // num_heads`, as `TransformerDecoder`.
        **kwargs: The arguments of `TransformerDecoder`.
    """

    def __init__(self, *args, head_dim: int | None = None, **kwargs) -> None:
        # A config with the input shapes builds the layer in `__init__`: only
        # once the head size is set.
        shapes = [kwargs.pop(f"{name}_sequence_shape", None) for name in ("decoder", "encoder")]
        super().__init__(*args, **kwargs)
        self.head_dim = _check_head_dim(head_dim)
        if shapes[0]:
            self.build(*shapes)

    def build(
        self, decoder_sequence_shape: tuple, encoder_sequence_shape: tuple | None = None
    ) -> None:
        super().build(decoder_sequence_shape, encoder_sequence_shape)
        query = decoder_sequence_shape
        _resize_attention(self, "_self_attention_layer", self.head_dim, query, query)
        if self._cross_attention_layer is not None:
            value = encoder_sequence_shape
            _resize_attention(self, "_cross_attention_layer", self.head_dim, query, value)

    def get_config(self) -> dict:
        return {**super().get_config(), "head_dim": self.head_dim}


def _check_head_dim(head_dim: object) -> int | None:
    if head_dim is None:
        return None
    if isinstance(head_dim, bool) or not isinstance(head_dim, numbers.Integral) or head_dim < 1:
        raise ValueError(
            f"Expected `head_dim` to be a positive int or None. Received: {head_dim!r}"
        )
    return int(head_dim)


def _resize_attention(
    block: Layer, name: str, head_dim: int | None, query_shape: tuple, value_shape: tuple
) -> None:
    """Replaces the block's `MultiHeadAttention` `name` with one of heads of `head_dim`."""
    attention = getattr(block, name)
    if head_dim is None or (attention.key_dim, attention.value_dim) == (head_dim, head_dim):
        return
    config = {**attention.get_config(), "key_dim": head_dim, "value_dim": head_dim}
    sized = type(attention).from_config(config)
    sized.build(query_shape=query_shape, value_shape=value_shape)
    keras_internals.replace_sublayer(block, name, sized)


def _resize_grouped_attention(attention: Layer, head_dim: int, inputs_shape: tuple) -> None:
    """Gives a built Llama or Qwen attention heads of `head_dim`.

    Such an attention derives the head size in `build()` from
    `hidden_dim // num_query_heads`, for its four projections and the scale
    of its scores (`_inv_norm_factor`); nothing else in it depends on it (the
    rotary embedding reads the size from the heads, the sliding window and
    the dropout work per position). The projections are re-created from their
    own configs with the new head size, so their biases and initializers stay.
    """
    heads = {
        "_query_dense": attention.num_query_heads,
        "_key_dense": attention.num_key_value_heads,
        "_value_dense": attention.num_key_value_heads,
    }
    for name, count in heads.items():
        config = {**getattr(attention, name).get_config(), "output_shape": (None, count, head_dim)}
        projection = keras.layers.EinsumDense.from_config(config)
        projection.build(inputs_shape)
        keras_internals.replace_sublayer(attention, name, projection)
    output = keras.layers.EinsumDense.from_config(attention._output_dense.get_config())
    output.build((None, None, attention.num_query_heads, head_dim))
    keras_internals.replace_sublayer(attention, "_output_dense", output)
    attention._inv_norm_factor = 1.0 / math.sqrt(head_dim)


class _HeadSizedGrouped:
    """A Llama or Qwen decoder whose config holds its head size (see the subclasses)."""

    def __init__(self, *args, head_dim: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head_dim = _check_head_dim(head_dim)

    def build(self, decoder_sequence_shape: tuple) -> None:
        super().build(decoder_sequence_shape)
        attention = self._self_attention_layer
        if self.head_dim is not None and self.head_dim != attention._query_dense.kernel.shape[-1]:
            _resize_grouped_attention(attention, self.head_dim, decoder_sequence_shape)


_LLAMA_ARGUMENTS = (
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


def _llama_config(layer: Layer) -> dict:
    """A Llama decoder's config, from its constructor's arguments (each held under its name).

    `LlamaTransformerDecoder.get_config()` reads an attribute the class never sets.
    """
    config = keras.layers.Layer.get_config(layer)
    config.update({name: getattr(layer, name) for name in _LLAMA_ARGUMENTS})
    config["activation"] = keras.activations.serialize(layer.activation)
    config["kernel_initializer"] = keras.initializers.serialize(layer.kernel_initializer)
    return config


def _with_sliding_window(config: dict, layer: Layer) -> dict:
    """A Qwen decoder's config with its sliding window, which its `get_config()` leaves out."""
    return {
        "use_sliding_window_attention": layer.use_sliding_window_attention,
        "sliding_window_size": layer.sliding_window_size,
        **config,
    }


@keras.saving.register_keras_serializable(package="keras_dropneuron")
class HeadSizedLlamaTransformerDecoder(_HeadSizedGrouped, LlamaTransformerDecoder):
    """A keras-hub `LlamaTransformerDecoder` whose config holds its head size.

    Llama's attention derives the head size from
    `hidden_dim // num_query_heads`, so a block with fewer heads would get
    bigger ones. This one takes `head_dim`, and computes exactly what
    `LlamaTransformerDecoder` computes, with or without a cache (the same
    `call()`; a cache holds `num_key_value_heads` heads of `head_dim`);
    `slim_model` re-creates a decoder that lost heads as one. Unlike its
    parent's, its `get_config()` works, so it round-trips `.keras`.

    Args:
        head_dim: The size of each attention head. Defaults to `None`:
            `hidden_dim // num_query_heads`, as `LlamaTransformerDecoder`.
        **kwargs: The arguments of `LlamaTransformerDecoder`.
    """

    def get_config(self) -> dict:
        return {**_llama_config(self), "head_dim": self.head_dim}


@keras.saving.register_keras_serializable(package="keras_dropneuron")
class HeadSizedQwenTransformerDecoder(_HeadSizedGrouped, QwenTransformerDecoder):
    """A keras-hub `QwenTransformerDecoder` whose config holds its head size.

    Qwen's attention derives the head size from
    `hidden_dim // num_query_heads`, so a block with fewer heads would get
    bigger ones. This one takes `head_dim`, and computes exactly what
    `QwenTransformerDecoder` computes, with or without a cache (the same
    `call()`; a cache holds `num_key_value_heads` heads of `head_dim`);
    `slim_model` re-creates a decoder that lost heads as one. Its config
    also holds the sliding window, which its parent's leaves out.

    Args:
        head_dim: The size of each attention head. Defaults to `None`:
            `hidden_dim // num_query_heads`, as `QwenTransformerDecoder`.
        **kwargs: The arguments of `QwenTransformerDecoder`.
    """

    def get_config(self) -> dict:
        return {**_with_sliding_window(super().get_config(), self), "head_dim": self.head_dim}


class _HeadSizedRule:
    """A rule whose block derives its head size, re-created as `head_sized` when heads go.

    `head_sized` is `None` where the block's own config holds the head size.
    Any other subclass of the block keeps its heads: it may build its own
    attention.
    """

    head_sized: type | None = None

    def heads_kept_reason(self, layer: Layer) -> str | None:
        if self.head_sized is not None and type(layer) not in (*self.types, self.head_sized):
            return f"{type(layer).__name__} may build its own attention"
        return super().heads_kept_reason(layer)

    def resized_class(self, layer: Layer, config: dict) -> type:
        if self.head_sized is not None and "head_dim" in config:
            return self.head_sized
        return type(layer)


class TransformerEncoderRule(_HeadSizedRule, TransformerBlockRule):
    """keras-hub `TransformerEncoder` (BERT, RoBERTa, DistilBERT, ...).

    Dead heads go too: an encoder that loses some is re-created as a
    `HeadSizedTransformerEncoder`, which keeps their size. A backbone's own
    config cannot hold the head size, so at uniform widths the heads stay.
    """

    types = (TransformerEncoder,)
    head_sized = HeadSizedTransformerEncoder
    ffn = _PLAIN
    heads = GroupedAttention(
        *(f"_self_attention_layer.{p}" for p in _PROJECTIONS),
        head_axis=1,
        query_heads="num_heads",
        kv_heads="num_heads",
    )

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

    Dead self-attention heads go too: a decoder that loses some is re-created
    as a `HeadSizedTransformerDecoder`, which keeps their size. A decoder
    with cross-attention keeps its heads (`num_heads` sets the
    cross-attention's too), and a backbone's own config cannot hold the head
    size, so at uniform widths the heads stay.
    """

    types = (TransformerDecoder,)
    head_sized = HeadSizedTransformerDecoder
    state = (
        *TransformerEncoderRule.state,
        *_attention("_cross_attention_layer"),
        *_weights("_cross_attention_layer_norm", names=_NORM),
    )

    def heads_kept_reason(self, layer: Layer) -> str | None:
        if getattr(layer, "_cross_attention_layer", None) is not None:
            return "num_heads also sets the cross-attention's heads, which would change"
        return super().heads_kept_reason(layer)

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


class GatedDecoderRule(_HeadSizedRule, TransformerBlockRule):
    """keras-hub's Qwen decoder: `down(up(x) * silu(gate(x)))`, grouped-query heads removed.

    Its attention derives the head size from `hidden_dim // num_query_heads`:
    a decoder that loses heads is re-created as a
    `HeadSizedQwenTransformerDecoder`, which keeps their size. A backbone's
    own config cannot hold the head size, so at uniform widths the heads
    stay. Its `get_config()` leaves out the sliding window, so the rule adds
    it.
    """

    types = (QwenTransformerDecoder,)
    head_sized = HeadSizedQwenTransformerDecoder
    ffn = _GATED
    heads = GroupedAttention(*(f"_self_attention_layer.{p}" for p in _PROJECTIONS), head_axis=1)
    state = (
        *_attention("_self_attention_layer"),
        *_weights("_self_attention_layernorm", "_feedforward_layernorm", names=("scale",)),
        *_weights(_GATED.up, _GATED.gate, _GATED.down),
    )

    def layer_config(self, layer: Layer) -> dict:
        return _with_sliding_window(layer.get_config(), layer)

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
    head_sized = None

    def layer_config(self, layer: Layer) -> dict:
        return layer.get_config()


class LlamaDecoderRule(GatedDecoderRule):
    """keras-hub `LlamaTransformerDecoder` (Llama 2 and 3), grouped-query heads removed.

    Its attention derives the head size from `hidden_dim // num_query_heads`:
    a decoder that loses heads is re-created as a
    `HeadSizedLlamaTransformerDecoder`, which keeps their size. Its
    `get_config()` reads an attribute the class never sets, so the rule gives
    the config from the constructor's arguments, each held under its own name.
    """

    types = (LlamaTransformerDecoder,)
    head_sized = HeadSizedLlamaTransformerDecoder

    def layer_config(self, layer: Layer) -> dict:
        try:
            return layer.get_config()
        except AttributeError:
            return _llama_config(layer)


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


class _ViTBlockRule(TransformerBlockRule):
    """One `ViTEncoderBlock` seen as a block (not registered: `ViTEncoderRule` uses it)."""

    ffn = FeedForward(up="mlp.dense_1", down="mlp.dense_2", width_argument="mlp_dim")
    state = (
        *_weights("layer_norm_1", "layer_norm_2", names=_NORM),
        *_attention("mha"),
        *_weights("mlp.dense_1", "mlp.dense_2"),
    )


_VIT_BLOCK = _ViTBlockRule()
_VIT_MAX_BLOCKS = 256  # `state` names the weights of this many blocks


@dataclasses.dataclass(frozen=True)
class EncoderUnits:
    """Per block of an encoder, the feed-forward units kept: as many in every block."""

    blocks: tuple[np.ndarray, ...]


class ViTEncoderRule(LayerRule):
    """keras-hub `ViTEncoder` (`ViTBackbone`): the dead MLP units of its blocks go.

    The encoder holds its `ViTEncoderBlock`s in a list and builds every one
    from its single `mlp_dim`. Each block's unit `j` (column `j` of
    `mlp.dense_1`, row `j` of `mlp.dense_2`) is dead as in
    `TransformerBlockRule`: a zero `dense_2` row, or a zero `dense_1` column
    whose constant `gelu(bias_j)` is folded into `dense_2`'s bias. The
    re-created encoder gets `mlp_dim` = the largest count of alive units any
    block has; a block with fewer keeps its lowest dead units too, which is
    exact. Heads stay: the block derives the head size from
    `hidden_dim // num_heads`. An encoder holding any other weight, blocks
    of another class or more than 256 blocks (`state` names the weights of
    that many) is kept whole.

    For the penalties, pruning and reports the encoder's units are the MLP
    units of all its blocks, block after block.
    """

    types = (ViTEncoder,)
    wraps = True  # its weights are its blocks': `layer_weights(layer)` names them
    state = (
        *_weights("layer_norm", names=_NORM),
        *(f"encoder_layers.{i}.{p}" for i in range(_VIT_MAX_BLOCKS) for p in _VIT_BLOCK.state),
    )

    @staticmethod
    def _blocks(layer: Layer) -> list:
        return list(getattr(layer, "encoder_layers", None) or [])

    def layer_weights(self, layer: Layer) -> tuple[WeightLayout, ...]:
        """Each block's `dense_1` kernel (units on its columns), then its `dense_2` kernel."""
        return tuple(
            dataclasses.replace(layout, attribute=f"encoder_layers.{i}.{layout.attribute}")
            for i in range(len(self._blocks(layer)))
            for layout in _VIT_BLOCK.weights_of(ViTEncoderBlock)
        )

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        blocks = self._blocks(layer)
        if not blocks or len(blocks) != layer.num_layers:
            return "encoder without the blocks it was built with"
        if len(blocks) > _VIT_MAX_BLOCKS:
            return f"encoder of more than {_VIT_MAX_BLOCKS} blocks"
        for block in blocks:
            if type(block) is not ViTEncoderBlock or type(getattr(block, "mlp", None)) is not MLP:
                return f"block of class {type(block).__name__}, which may compute otherwise"
            if type(block.mha) is not keras.layers.MultiHeadAttention:
                return f"attention of class {type(block.mha).__name__}"
            reason = _VIT_BLOCK.barrier_reason(block, in_tensors, out_tensors)
            if reason is not None:
                return reason
            down = block.mlp.dense_2.activation
            if down not in (None, keras.activations.linear):
                return "MLP output projection with an activation"
            if block.mlp.dense_1.kernel.shape[1] != layer.mlp_dim:
                return "block whose MLP width is not the encoder's mlp_dim"
        return None

    def dead_units(self, layer: Layer, threshold: float) -> list[np.ndarray]:
        """Per block, per MLP unit: can it go, exactly (a constant is folded)?"""
        return [_VIT_BLOCK.dead_units(block, threshold) for block in self._blocks(layer)]

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        analysis.keep_whole(call)
        layer = call.layer
        dead = self.dead_units(layer, analysis.threshold)
        target = max(1, max(int((~d).sum()) for d in dead))
        if target < layer.mlp_dim:
            analysis.inner[index] = EncoderUnits(
                tuple(padded_units(np.flatnonzero(~d), len(d), target) for d in dead)
            )
        return None

    def round_inner(self, layer: Layer, inner: EncoderUnits, round_to: int) -> EncoderUnits:
        """Every block's units padded with its lowest dead ones to a multiple of `round_to`."""
        width = layer.mlp_dim
        target = min(width, -(-len(inner.blocks[0]) // round_to) * round_to)
        return EncoderUnits(tuple(padded_units(kept, width, target) for kept in inner.blocks))

    def resize(self, layer: Layer, config: dict, cut: Cut) -> Weights:
        blocks = cut.inner.blocks
        config["mlp_dim"] = len(blocks[0])
        weights = {}
        for path in _weights("layer_norm", names=_NORM):
            if (value := attribute(layer, path)) is not None:
                weights[path] = numpy(value)
        for i, (block, kept) in enumerate(zip(self._blocks(layer), blocks, strict=True)):
            block_cut = Cut(kept_in=None, kept_out=np.arange(0), inner=BlockUnits(kept))
            sliced = _VIT_BLOCK.resize(block, {}, block_cut)
            weights.update({f"encoder_layers.{i}.{path}": v for path, v in sliced.items()})
        return weights

    def config_arguments(self, layer: Layer, inner: EncoderUnits | None) -> dict:
        """The backbone config's arguments for this encoder with `inner`'s units (`hub_models`)."""
        return {"mlp_dim": layer.mlp_dim if inner is None else len(inner.blocks[0])}

    def units_kept(self, layer: Layer, plan: "Plan", index: int) -> int:
        inner = plan.inner.get(index)
        per_block = layer.mlp_dim if inner is None else len(inner.blocks[0])
        return per_block * len(self._blocks(layer))

    def unit_count(self, layer: Layer, tensor_out: Tensor) -> int:
        return layer.mlp_dim * len(self._blocks(layer))

    def units_read(self, layer: Layer, reads: list[np.ndarray | None]) -> np.ndarray | None:
        # Nothing outside the encoder reads its units: only each block's dense_2 (`read_inside`).
        return np.zeros(self.unit_count(layer, None), dtype=bool)

    def read_inside(self, layer: Layer, pairs: Pairs) -> np.ndarray | None:
        """The units whose `dense_2` row is not zero, block after block."""
        downs = pairs[1::2]
        return np.concatenate([group_alive(value, layout.input_axes) for layout, value in downs])

    def alive_sides(
        self, layer: Layer, pairs: Pairs, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inputs read by some block's `dense_1`; units with a `dense_1` column, per block."""
        ups = pairs[0::2]
        inputs = np.zeros(ups[0][1].shape[0], dtype=bool)
        for layout, value in ups:
            inputs |= group_alive(value, layout.input_axes)
        units = np.concatenate([group_alive(value, layout.output_axes) for layout, value in ups])
        return inputs, units

    def regularizers(self, layer: Layer, strengths: Strengths) -> dict:
        return {}  # the blocks take no regularizer arguments: see `variable_regularizers`

    def variable_regularizers(
        self, layer: Layer, strengths: Strengths
    ) -> dict[str, keras.regularizers.Regularizer]:
        """Each block's `dense_1` columns (`li`) and `dense_2` rows (`lo`), as one block's."""
        return {
            f"encoder_layers.{i}.{path}": reg
            for i, block in enumerate(self._blocks(layer))
            for path, reg in _VIT_BLOCK.variable_regularizers(block, strengths).items()
        }

    def call_macs(self, call: "Call", tensors_in: Tensors, tensor_out: Tensor) -> int:
        """Each block's self-attention and its two MLP projections."""
        shape = tensors_in[0].shape
        macs = 0
        for block in self._blocks(call.layer):
            up = block.mlp.dense_1.kernel.shape  # (hidden, mlp_dim)
            macs += attention_macs(block.mha, shape, shape, shape, tensor_out)
            macs += spatial_size(shape) * up[0] * up[1] * 2
        return macs

    def describe_groups(self, cls: type) -> tuple[str, str]:
        return "unit `j`: `dense_1.kernel[:, j]`", "unit `j`: `dense_2.kernel[j, :]`"

    def describe_surgery(self) -> str:
        return "dead MLP units of its blocks removed (`mlp_dim` lowered to the largest)"


RULES = (
    TransformerEncoderRule(),
    TransformerDecoderRule(),
    GatedDecoderRule(),
    MistralDecoderRule(),
    LlamaDecoderRule(),
    GemmaDecoderRule(),
    ViTEncoderRule(),
)
