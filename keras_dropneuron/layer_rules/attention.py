"""MultiHeadAttention: dead heads are removed; its channels pass unchanged."""

import math
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import layers

from keras_dropneuron import keras_internals
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
    channels,
)
from keras_dropneuron.layer_rules.helpers import spatial_size
from keras_dropneuron.layer_rules.layout import WeightLayout, group_alive
from keras_dropneuron.regularizers import HeadRegularizer
from keras_dropneuron.weight_values import numpy

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis, Plan

_PROJECTIONS = ("query_dense", "key_dense", "value_dense")


class MultiHeadAttentionRule(LayerRule):
    """Head `h` owns `query/key/value` kernels `[:, h, :]`, their bias rows `[h]`
    and the output kernel `[h]`.

    The layer's output is the sum over heads of `output_kernel[h]` applied to
    head `h`'s attention-weighted values, plus the output bias. A head whose
    value projection (kernel and bias) is zero adds nothing whatever it
    attends to, and so does a head whose output kernel is zero: either is
    removed by lowering `num_heads` and slicing the four projections. A head
    whose query and key are zero is not dead (uniform attention still passes
    its values) and stays. Input and output channels are all kept: the layer
    mixes them.

    For the penalties and pruning the layer's units are its heads: the
    projections' kernels `(dim, heads, head_dim)` have their input channels on
    axis 0 and their heads on axis 1; the output kernel `(heads, value_dim,
    out)` has its heads on axis 0 (a head's outgoing weights) and the layer's
    output channels on its last axis, its other side. Queries and keys carry
    no guard: without them every head attends uniformly.
    """

    types = (layers.MultiHeadAttention,)
    weights = (
        WeightLayout("query_dense.kernel", "kernel_regularizer", (0,), (1,), guard=False),
        WeightLayout("key_dense.kernel", "kernel_regularizer", (0,), (1,), guard=False),
        WeightLayout("value_dense.kernel", "kernel_regularizer", (0,), (1,)),
        WeightLayout("output_dense.kernel", "kernel_regularizer", (-1,), (0,)),
    )
    state = tuple(
        f"{projection}.{weight}"
        for projection in (*_PROJECTIONS, "output_dense")
        for weight in ("kernel", "bias")
    )

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        return None

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        analysis.keep_whole(call)
        if keras_internals.node_keyword(call.node, "return_attention_scores"):
            return None  # the scores of every head are an output
        heads = self.dead_heads(call.layer, analysis.threshold)
        kept = np.flatnonzero(~heads)
        if heads.any():
            analysis.inner[index] = kept if kept.size else np.array([0])
        return None

    def alive_sides(
        self, layer: Layer, pairs: Pairs, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        # Inputs: channels some projection reads (self-attention: one tensor).
        # A head is alive when both its values and its output slice are (`dead_heads`).
        inputs, _ = super().alive_sides(layer, pairs, threshold)
        found = {layout.attribute: (layout, value) for layout, value in pairs}
        if len(found) < len(self.weights):  # a kernel shared with an earlier layer
            return inputs, group_alive(pairs[-1][1], pairs[-1][0].output_axes)
        for projection in ("key_dense.kernel", "value_dense.kernel"):
            rows = group_alive(found[projection][1], (0,))
            if rows.shape == inputs.shape:
                inputs = inputs | rows
        value = group_alive(found["value_dense.kernel"][1], (1,))
        if layer.value_dense.bias is not None:
            value |= np.any(np.abs(numpy(layer.value_dense.bias)) > threshold, axis=1)
        return inputs, value & group_alive(found["output_dense.kernel"][1], (0,))

    def regularizers(
        self,
        layer: keras.layers.Layer,
        strengths: Strengths,
    ) -> dict[str, keras.regularizers.Regularizer]:
        """One `HeadRegularizer` (strength `heads`, plus `l1` and `l2`) as `kernel_regularizer`.

        The layer passes it to its four projections, so a head's penalty is
        the norms of its query, key, value and output slices. Every kernel's
        head axis is checked now, so an ambiguous layer is refused before
        training. Nothing when `heads`, `l1` and `l2` are all 0.
        """
        if not (strengths.heads or strengths.l1 or strengths.l2):
            return {}  # nothing to penalise: the layer is left as it is
        reg = HeadRegularizer(
            strengths.heads,
            num_heads=layer.num_heads,
            key_dim=layer.key_dim,
            value_dim=layer.value_dim,
            l1=strengths.l1,
            l2=strengths.l2,
            scale_by_group_size=strengths.scale_by_group_size,
        )
        for layout in self.layer_weights(layer):
            variable = attribute(layer, layout.attribute)
            if variable is not None:
                reg.head_axis(variable.shape)
        return {"kernel_regularizer": reg}

    def units_kept(self, layer: Layer, plan: "Plan", index: int) -> int:
        # The units are the heads; without an entry in `plan.inner` all stay.
        return int(len(plan.inner.get(index, range(layer.num_heads))))

    def describe_groups(self, cls: type) -> tuple[str, str]:
        incoming, outgoing = super().describe_groups(cls)
        return f"head `j`: {incoming} (one `HeadRegularizer`)", f"{outgoing} (pruning only)"

    def describe_surgery(self) -> str:
        return "dead heads removed (`num_heads` lowered); channels kept"

    def dead_heads(self, layer: Layer, threshold: float) -> np.ndarray:
        """Per head: does it add nothing to the output?"""
        value = np.abs(numpy(layer.value_dense.kernel))  # (dim, heads, value_dim)
        dead_value = np.all(np.moveaxis(value, 1, 0).reshape(value.shape[1], -1) <= threshold, 1)
        if layer.value_dense.bias is not None:
            dead_value &= np.all(np.abs(numpy(layer.value_dense.bias)) <= threshold, axis=1)
        output = np.abs(numpy(layer.output_dense.kernel))  # (heads, value_dim, dim)
        dead_output = np.all(output.reshape(output.shape[0], -1) <= threshold, axis=1)
        return dead_value | dead_output

    def resize(self, layer: Layer, config: dict, cut: Cut) -> Weights:
        heads = cut.inner
        config["num_heads"] = len(heads)
        regularizer = config.get("kernel_regularizer")
        if isinstance(regularizer, dict):  # serialized by the layer's own get_config
            regularizer = keras.regularizers.deserialize(regularizer)
        if isinstance(regularizer, HeadRegularizer):  # it must know the new head count
            head_config = {**regularizer.get_config(), "num_heads": len(heads)}
            config["kernel_regularizer"] = HeadRegularizer.from_config(head_config)
        weights = {}
        for projection in _PROJECTIONS:
            dense = getattr(layer, projection)
            weights[f"{projection}.kernel"] = numpy(dense.kernel)[:, heads]
            if dense.bias is not None:
                weights[f"{projection}.bias"] = numpy(dense.bias)[heads]
        weights["output_dense.kernel"] = numpy(layer.output_dense.kernel)[heads]
        if layer.output_dense.bias is not None:
            weights["output_dense.bias"] = numpy(layer.output_dense.bias)
        return weights

    def macs(self, layer: Layer, tensor_in: Tensor, tensor_out: Tensor | None) -> int:
        # Without the call's other arguments: self-attention of `tensor_in`.
        return attention_macs(layer, tensor_in.shape, tensor_in.shape, tensor_in.shape, tensor_out)

    def call_macs(self, call: "Call", tensors_in: Tensors, tensor_out: Tensor) -> int:
        args, kwargs = call.arguments(dict(zip(call.raw_inputs, tensors_in, strict=True)))
        query, value, key = (
            args[i] if len(args) > i else kwargs.get(name)
            for i, name in enumerate(("query", "value", "key"))
        )
        value = query if value is None else value
        key = value if key is None else key
        return attention_macs(call.layer, query.shape, value.shape, key.shape, tensor_out)


def attention_macs(
    layer: Layer, query: tuple, value: tuple, key: tuple, tensor_out: Tensor
) -> int:
    """Multiply-adds of `MultiHeadAttention` on query, value and key shapes.

    The three projections, then per head the scores (`key_dim` each) and the
    weighted sum of values (`value_dim` each) for every query position
    against every key position along the attention axes, then the output
    projection. Unknown sizes count as 1.
    """
    heads, key_dim = layer.num_heads, layer.key_dim
    value_dim = layer.value_dim or key_dim
    rank = len(query)
    axes = layer.attention_axes
    axes = range(1, rank - 1) if axes is None else [a % rank for a in axes]
    query_positions, key_positions = spatial_size(query), spatial_size(key)
    # Each query position attends to the key positions along the attention axes.
    pairs = query_positions * math.prod(key[axis] or 1 for axis in axes)
    projections = heads * (
        query_positions * (query[-1] or 0) * key_dim
        + key_positions * (key[-1] or 0) * key_dim
        + spatial_size(value) * (value[-1] or 0) * value_dim
    )
    output = query_positions * heads * value_dim * channels(tensor_out)
    return projections + pairs * heads * (key_dim + value_dim) + output
