"""Transformer blocks: dead feed-forward units and attention heads are removed; channels pass.

A transformer block adds its attention and feed-forward results to residual
streams, so its input and output channels are all kept. Inside, the
feed-forward network's hidden units are independent of one another: unit `j`
is column `j` of the up (and gate) projections and row `j` of the down
projection. A unit that adds nothing (or only a constant, folded into the
down projection's bias) is removed by lowering the block's width argument
(`intermediate_dim`) and slicing the three kernels. The block's other
weights (attention, normalization) are copied as they are.

`TransformerBlockRule` is generic: a subclass names the block's sublayers
(`FeedForward`) and lists every weight it holds (`state`); a block holding any
other weight is kept whole.
"""

import dataclasses
import math
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import ops

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
from keras_dropneuron.regularizers import DropNeuronRegularizer
from keras_dropneuron.weight_values import numpy

if TYPE_CHECKING:  # the surgeon imports the rules: for annotations only
    from keras_dropneuron.surgery.graph import Call
    from keras_dropneuron.surgery.plan import Analysis, Plan


@dataclasses.dataclass(frozen=True)
class FeedForward:
    """Where a block keeps its feed-forward network.

    The block computes `down(activation(up(x)))`, or with a `gate`,
    `down(up(x) * activation(gate(x)))` (Llama, Mistral, Qwen, Gemma).

    Attributes:
        up: Path of the sublayer whose output columns are the units.
        down: Path of the sublayer whose input rows are the units.
        gate: Path of the gate sublayer, or `None` for a plain network.
        activation: Path of the block attribute holding the activation of
            the units (of `gate`'s output), or `None` where `up` applies its
            own `activation` (or the rule's `activation_of` knows it).
        width_argument: The block's constructor argument for the width.
        width_per_unit: Width argument per unit (Gemma's `intermediate_dim`
            is twice its units).
    """

    up: str
    down: str
    gate: str | None = None
    activation: str | None = None
    width_argument: str = "intermediate_dim"
    width_per_unit: int = 1


@dataclasses.dataclass(frozen=True)
class GroupedAttention:
    """Where a block keeps its grouped-query attention, for removing whole groups.

    Query head `h` reads key/value head `h // (query heads / key/value heads)`.
    The query, key and value kernels hold their heads on `head_axis`, the
    output kernel `(heads, head_dim, dim)` on axis 0.

    Attributes:
        query, key, value, output: Paths of the four projections.
        head_axis: The head axis of the query, key and value kernels.
        query_heads, kv_heads, head_dim: The block's constructor arguments
            (the head size is set explicitly, so it never changes).
    """

    query: str
    key: str
    value: str
    output: str
    head_axis: int
    query_heads: str = "num_query_heads"
    kv_heads: str = "num_key_value_heads"
    head_dim: str = "head_dim"


@dataclasses.dataclass(frozen=True)
class BlockUnits:
    """What a block keeps: feed-forward units, and key/value groups (or `None`: all)."""

    units: np.ndarray
    groups: np.ndarray | None = None


def _kernel(layer: Layer, path: str) -> np.ndarray:
    return numpy(attribute(layer, f"{path}.kernel"))


def _bias(layer: Layer, path: str) -> np.ndarray | None:
    bias = attribute(layer, f"{path}.bias")
    return None if bias is None else numpy(bias)


def _linear(layer: Layer, *paths: str) -> bool:
    """Whether the sublayers at `paths` apply no activation of their own."""
    linear = (None, keras.activations.linear)
    return all(getattr(attribute(layer, path), "activation", None) in linear for path in paths)


def _apply(fn: object, values: np.ndarray) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(fn(ops.convert_to_tensor(values, "float32"))))


class TransformerBlockRule(LayerRule):
    """A transformer block whose feed-forward units can go (see the module docstring).

    Subclasses set `types`, `state` (every weight path of the block) and
    `ffn` (a `FeedForward`). Unit `j` is removed when its row of the down
    projection is zero, or when its up column (or, with a gate, its gate
    column where the activation maps 0 to 0) is zero so that the unit is a
    constant: 0 in a gated network, `activation(bias)` in a plain one, folded
    into the down projection's bias (kept where that has no bias).

    With `heads` (a `GroupedAttention`), a key/value group goes too when
    every query head reading it is dead: its value slice (kernel and bias)
    or its output slice is zero. The group's key and value slices and its
    query heads' query and output slices are removed; the head size stays
    (`heads_kept_reason` says when a block cannot lose heads exactly).

    For the penalties, pruning and reports the block's units are its
    feed-forward units: the up (and gate) kernels' columns are a unit's
    incoming groups, the down kernel's rows its outgoing groups.
    """

    ffn: FeedForward
    heads: GroupedAttention | None = None
    side_inputs_whole = True

    def weights_of(self, cls: type) -> tuple[WeightLayout, ...]:
        """The feed-forward kernels, then (with removable heads) the value and output kernels."""
        layouts = self._ffn_layouts()
        if self.heads is None:
            return layouts
        value_inputs = (0,) if self.heads.head_axis == 1 else (1,)
        return (
            *layouts,
            WeightLayout(f"{self.heads.value}.kernel", "", value_inputs, (self.heads.head_axis,)),
            WeightLayout(f"{self.heads.output}.kernel", "", (0,), (-1,), guard=False),
        )

    def _ffn_layouts(self) -> tuple[WeightLayout, ...]:
        ffn = self.ffn
        ins = [ffn.up] if ffn.gate is None else [ffn.gate, ffn.up]
        return (
            *(WeightLayout(f"{path}.kernel", "", (0,), (1,)) for path in ins),
            WeightLayout(f"{ffn.down}.kernel", "", (0,), (1,), guard=False),
        )

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if any(attribute(layer, f"{path}.kernel") is None for path in self._paths()):
            return "block without the feed-forward sublayers its rule names"
        if _kernel(layer, self.ffn.up).ndim != 2:
            return "feed-forward kernel that is not a matrix"
        if self.ffn.gate and not _linear(layer, self.ffn.up, self.ffn.gate):
            return "feed-forward projection with an activation of its own"
        return None

    def activation_of(self, layer: Layer) -> object:
        """The activation of the units (of the gate, in a gated network), or `None`."""
        if self.ffn.activation is None:
            return getattr(attribute(layer, self.ffn.up), "activation", None)
        return attribute(layer, self.ffn.activation)

    def _paths(self) -> list[str]:
        return [p for p in (self.ffn.up, self.ffn.gate, self.ffn.down) if p]

    def analyze(
        self, analysis: "Analysis", index: int, call: "Call", constants: list[np.ndarray]
    ) -> Constants:
        analysis.keep_whole(call)
        layer = call.layer
        dead = self.dead_units(layer, analysis.threshold)
        groups = None
        if self.heads is not None and self.heads_kept_reason(layer) is None:
            gone = self.dead_groups(layer, analysis.threshold)
            if gone.any():
                groups = np.flatnonzero(~gone)
                groups = groups if groups.size else np.array([0])
        if dead.any() or groups is not None:
            kept = np.flatnonzero(~dead)
            analysis.inner[index] = BlockUnits(kept if kept.size else np.array([0]), groups)
        return None

    def round_inner(self, layer: Layer, inner: BlockUnits, round_to: int) -> BlockUnits:
        """Feed-forward units padded with the lowest dead ones to a multiple of `round_to`."""
        width = _kernel(layer, self.ffn.up).shape[1]
        target = min(width, -(-len(inner.units) // round_to) * round_to)
        return BlockUnits(padded_units(inner.units, width, target), inner.groups)

    def heads_kept_reason(self, layer: Layer) -> str | None:
        """Why the block's heads cannot be removed exactly, or `None`."""
        heads = self.heads
        kernels = [attribute(layer, f"{p}.kernel") for p in (heads.query, heads.value)]
        if any(k is None or len(k.shape) != 3 for k in kernels):
            return "attention kernels not of the expected shape"
        query, value = (k.shape[heads.head_axis] for k in kernels)
        if query % value:
            return "query heads not a multiple of key/value heads"
        return None

    def dead_heads(self, layer: Layer, threshold: float) -> np.ndarray:
        """Per query head: is its group's value slice or its own output slice zero?"""
        heads = self.heads
        value = np.moveaxis(_kernel(layer, heads.value), heads.head_axis, 0)
        dead_value = np.all(np.abs(value.reshape(value.shape[0], -1)) <= threshold, axis=1)
        bias = _bias(layer, heads.value)
        if bias is not None:
            dead_value &= np.all(np.abs(bias.reshape(len(dead_value), -1)) <= threshold, axis=1)
        output = _kernel(layer, heads.output)
        dead_output = np.all(np.abs(output.reshape(output.shape[0], -1)) <= threshold, axis=1)
        return dead_output | np.repeat(dead_value, len(dead_output) // len(dead_value))

    def dead_groups(self, layer: Layer, threshold: float) -> np.ndarray:
        """Per key/value group: is every query head reading it dead?"""
        groups = _kernel(layer, self.heads.value).shape[self.heads.head_axis]
        return self.dead_heads(layer, threshold).reshape(groups, -1).all(axis=1)

    def head_counts(
        self, layer: Layer, threshold: float, plan: "Plan", index: int
    ) -> tuple[int, int, int] | None:
        if self.heads is None or self.heads_kept_reason(layer) is not None:
            return None
        dead = self.dead_heads(layer, threshold)
        inner = plan.inner.get(index)
        kept = len(dead)
        if inner is not None and inner.groups is not None:
            kept = len(inner.groups) * (len(dead) // len(self.dead_groups(layer, threshold)))
        return len(dead), int((~dead).sum()), kept

    def dead_units(self, layer: Layer, threshold: float) -> np.ndarray:
        """Per feed-forward unit: can it go, exactly (a constant is folded)?"""
        ffn = self.ffn
        down = np.all(np.abs(_kernel(layer, ffn.down)) <= threshold, axis=1)
        up = np.all(np.abs(_kernel(layer, ffn.up)) <= threshold, axis=0)
        if ffn.gate is None:
            constant = self._constants(layer)
            if _bias(layer, ffn.down) is None:
                up &= constant == 0  # nothing to fold the constant into
            return down | up
        up_bias = _bias(layer, ffn.up)
        if up_bias is not None:
            up &= up_bias == 0
        gate = np.all(np.abs(_kernel(layer, ffn.gate)) <= threshold, axis=0)
        gate_bias = _bias(layer, ffn.gate)
        gate_value = _apply(
            self.activation_of(layer), np.zeros(gate.shape) if gate_bias is None else gate_bias
        )
        return down | up | (gate & (gate_value == 0))

    def _constants(self, layer: Layer) -> np.ndarray:
        """Per unit of a plain network, its value when its up column is zero."""
        bias = _bias(layer, self.ffn.up)
        values = np.zeros(_kernel(layer, self.ffn.up).shape[1]) if bias is None else bias
        fn = self.activation_of(layer)
        return _apply(fn, values) if fn is not None else values

    def resize(self, layer: Layer, config: dict, cut: Cut) -> Weights:
        ffn, kept = self.ffn, cut.inner.units
        config[ffn.width_argument] = len(kept) * ffn.width_per_unit
        weights = {path: numpy(attribute(layer, path)) for path in self.state}
        weights = {path: value for path, value in weights.items() if value is not None}
        if cut.inner.groups is not None:
            weights.update(self._slice_heads(layer, config, cut.inner.groups))
        for path in (ffn.up, ffn.gate):
            if path:
                weights[f"{path}.kernel"] = _kernel(layer, path)[:, kept]
                if _bias(layer, path) is not None:
                    weights[f"{path}.bias"] = _bias(layer, path)[kept]
        down = _kernel(layer, ffn.down)
        weights[f"{ffn.down}.kernel"] = down[kept]
        bias = _bias(layer, ffn.down)
        if ffn.gate is None and bias is not None:
            # A removed unit whose up column is zero added activation(bias) @ its row.
            gone = np.setdiff1d(np.arange(down.shape[0]), kept)
            folded = self._constants(layer)[gone] @ down[gone].astype(np.float64)
            weights[f"{ffn.down}.bias"] = (bias + folded).astype(bias.dtype)
        return weights

    def _slice_heads(self, layer: Layer, config: dict, groups: np.ndarray) -> Weights:
        """The attention's weights and config for the kept key/value groups."""
        heads = self.heads
        kv = _kernel(layer, heads.value).shape[heads.head_axis]
        query = _kernel(layer, heads.query).shape[heads.head_axis]
        ratio = query // kv
        queries = (groups[:, None] * ratio + np.arange(ratio)).ravel()
        config[heads.query_heads] = len(queries)
        config[heads.kv_heads] = len(groups)
        config[heads.head_dim] = int(_kernel(layer, heads.value).shape[-1])
        weights = {}
        for path, kept, axis in (
            (heads.query, queries, heads.head_axis),
            (heads.key, groups, heads.head_axis),
            (heads.value, groups, heads.head_axis),
            (heads.output, queries, 0),
        ):
            weights[f"{path}.kernel"] = np.take(_kernel(layer, path), kept, axis=axis)
            bias = _bias(layer, path)
            if bias is not None and path != heads.output:
                weights[f"{path}.bias"] = bias[kept]  # (heads, head_dim)
        return weights

    def units_kept(self, layer: Layer, plan: "Plan", index: int) -> int:
        inner = plan.inner.get(index)
        return int(_kernel(layer, self.ffn.up).shape[1] if inner is None else len(inner.units))

    def unit_count(self, layer: Layer, tensor_out: Tensor) -> int:
        return int(_kernel(layer, self.ffn.up).shape[1])

    def units_read(self, layer: Layer, reads: list[np.ndarray | None]) -> np.ndarray | None:
        # Nothing outside the block reads its units: only its down projection (`read_inside`).
        return np.zeros(_kernel(layer, self.ffn.up).shape[1], dtype=bool)

    def read_inside(self, layer: Layer, pairs: Pairs) -> np.ndarray | None:
        """The units whose down-projection row is not zero (their outgoing group)."""
        down_layout, down = pairs[len(self._ffn_layouts()) - 1]
        return group_alive(down, down_layout.input_axes)

    def alive_sides(
        self, layer: Layer, pairs: Pairs, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inputs read by an up (or gate) kernel; units with an up (and gate) column."""
        *ins, _ = pairs[: len(self._ffn_layouts())]  # the units: the feed-forward network's
        inputs = np.zeros(ins[0][1].shape[0], dtype=bool)
        units = np.ones(ins[0][1].shape[1], dtype=bool)
        for layout, value in ins:
            inputs |= group_alive(value, layout.input_axes)
            units &= group_alive(value, layout.output_axes)
        return inputs, units

    def regularizers(self, layer: Layer, strengths: Strengths) -> dict:
        return {}  # the blocks take no regularizer arguments: see `variable_regularizers`

    def variable_regularizers(
        self,
        layer: Layer,
        strengths: Strengths,
    ) -> dict[str, keras.regularizers.Regularizer]:
        """A unit's incoming group (up/gate columns, `li`) and outgoing group (down row, `lo`).

        With removable heads (`heads`), also one group per key/value head on
        the value kernel and one per query head on the output kernel
        (strength `heads`): the slices whose death removes a group. Set on
        the variables themselves: the blocks build their sublayers without
        regularizer arguments.
        """
        s = strengths
        common = dict(l1=s.l1, l2=s.l2, scale_by_group_size=s.scale_by_group_size)
        *ins, down = self._ffn_layouts()
        regs = {
            layout.attribute: DropNeuronRegularizer(li=s.li, li_axis=(1,), **common)
            for layout in ins
        }
        regs[down.attribute] = DropNeuronRegularizer(lo=s.lo, lo_axis=(0,), **common)
        heads = s.heads
        if self.heads is not None and heads and self.heads_kept_reason(layer) is None:
            value, output = self.heads.value, self.heads.output
            axis = (self.heads.head_axis,)
            regs[f"{value}.kernel"] = DropNeuronRegularizer(li=heads, li_axis=axis)
            regs[f"{output}.kernel"] = DropNeuronRegularizer(li=heads, li_axis=(0,))
        return {path: reg for path, reg in regs.items() if reg.li or reg.lo or s.l1 or s.l2}

    def call_macs(self, call: "Call", tensors_in: Tensors, tensor_out: Tensor) -> int:
        layer, tensor = call.layer, main_input(tensors_in, tensor_out)
        units = _kernel(layer, self.ffn.up).shape[1]
        projections = 2 if self.ffn.gate is None else 3
        ffn = spatial_size(tensor.shape) * channels(tensor) * units * projections
        return ffn + self.attention_macs(layer, tensor)

    def attention_macs(self, layer: Layer, tensor: Tensor) -> int:
        """Multiply-adds of the block's attention on `tensor` (0: a block without one).

        Rules for blocks with attention override this.
        """
        return 0

    def describe_groups(self, cls: type) -> tuple[str, str]:
        return "unit `j`: up/gate `kernel[:, j]`", "unit `j`: down `kernel[j, :]`"

    def describe_surgery(self) -> str:
        return f"dead feed-forward units removed (`{self.ffn.width_argument}` lowered)"


def padded_units(kept: np.ndarray, size: int, target: int) -> np.ndarray:
    """`kept` (of `size` units) with the lowest others added, to `target` indices in all.

    The added units are dead, so a block padded to a common width stays exact.
    """
    others = np.setdiff1d(np.arange(size), kept)
    return np.sort(np.concatenate([kept, others[: target - len(kept)]]))


def main_input(tensors_in: Tensors, tensor_out: Tensor) -> Tensor:
    """The input a block transforms: the first shaped like its output (not a mask).

    A call's inputs come in the order its arguments were passed, so a mask
    passed first would otherwise be taken for the sequence.
    """
    same = [t for t in tensors_in if tuple(t.shape[1:]) == tuple(tensor_out.shape[1:])]
    return (same or tensors_in)[0]


def grouped_attention_macs(
    positions: int, length: int, dim: int, query_heads: int, kv_heads: int, head_dim: int
) -> int:
    """Multiply-adds of grouped-query self-attention over `positions` tokens.

    Query, key and value projections, scores and weighted values against
    `length` key positions per query, and the output projection.
    """
    projections = positions * dim * head_dim * (2 * query_heads + 2 * kv_heads)
    attention = positions * length * query_heads * head_dim * 2
    return projections + attention


def sequence_length(tensor: Tensor) -> int:
    """Positions along the sequence axis of `(batch, length, dim)` (1 if unknown)."""
    return math.prod(d or 1 for d in tensor.shape[1:-1])
