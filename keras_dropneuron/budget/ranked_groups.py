"""Where a unit's incoming group lies, per layer family, for the ranking to score and cut.

A ranked layer's unit `j` is index `j` on the unit axes of some managed
weights (its members), each seen through `gate_view`: one column of a Dense
or Conv kernel (with the `gamma` and `beta` of a BatchNormalization that reads
it), the column of every gate block of both kernels of an LSTM, GRU or
SimpleRNN (of both directions of a `Bidirectional`: unit `j` of the forward
and of the backward layer go together, so both keep as many units), or head
`j`'s slices of the four kernels of a MultiHeadAttention. Zeroing every
member's slice removes the unit in the slim model: a recurrent unit's bias
follows its kernel columns (`masking.WeightMasks.biases`), which makes it
dead from its input on, and a head without output rows adds nothing.

One `RankedFamily` per rule family says which weights are members and which
units the surgeon's plan keeps; `ranked_groups` asks them in turn.
"""

import dataclasses

import keras
import numpy as np

from keras_dropneuron import layer_rules
from keras_dropneuron._group_lasso import gate_view
from keras_dropneuron.layer_rules.attention import MultiHeadAttentionRule
from keras_dropneuron.layer_rules.bidirectional import BidirectionalRule
from keras_dropneuron.layer_rules.conv import ConvRule
from keras_dropneuron.layer_rules.dense import DenseRule
from keras_dropneuron.layer_rules.recurrent import RecurrentRule
from keras_dropneuron.normalized_units import PartnerLayout

# Member of a group: (index in the managed weights, unit axes, gate blocks).
Member = tuple[int, tuple[int, ...], int]


@dataclasses.dataclass
class RankedGroup:
    """The units of one ranked layer.

    Attributes:
        layer: The layer.
        family: Its `RankedFamily`.
        members: The slices that make unit `j`'s group, one per weight.
        scores: L2 norm of each unit's group (0: dead), bias entries included
            for recurrent units.
    """

    layer: keras.layers.Layer
    family: "RankedFamily"
    members: list[Member]
    scores: np.ndarray


class RankedFamily:
    """The ranked groups of one family of layers (the default: none).

    Attributes:
        rules: The layer rules of the family.
    """

    rules: tuple[type, ...] = ()

    def members(
        self, layer: keras.layers.Layer, own: dict[str, tuple[int, object]]
    ) -> list[Member]:
        """The members of `layer`'s unit groups, or `[]` when it is not ranked.

        Args:
            layer: The layer.
            own: Its managed weights, attribute -> `(index, layout)`.
        """
        return []

    def kept_units(self, layer: keras.layers.Layer, plan, index: int) -> set[int]:
        """The units the surgeon's `plan` keeps of `layer`, called once as call `index`."""
        return set(plan.kept[plan.graph.calls[index].outputs[0]].tolist())


class UnitsFamily(RankedFamily):
    """Dense and Conv: a unit is an output column of the one units weight."""

    rules = (DenseRule, ConvRule)

    def members(self, layer, own):
        if len(own) != 1:
            return []
        ((index, layout),) = own.values()
        if not layout.guard or layout.gates != 1 or len(layout.output_axes) != 1:
            return []
        return [(index, layout.output_axes, 1)]


class RecurrentFamily(RankedFamily):
    """LSTM, GRU, SimpleRNN: a unit is its column of every gate block of both kernels."""

    rules = (RecurrentRule,)
    prefixes = ("",)

    def members(self, layer, own):
        paths = [
            f"{p}cell.{name}" for p in self.prefixes for name in ("kernel", "recurrent_kernel")
        ]
        if any(path not in own for path in paths):
            return []
        return [(own[path][0], own[path][1].output_axes, own[path][1].gates) for path in paths]


class BidirectionalFamily(RecurrentFamily):
    """`Bidirectional`: unit `j` of both directions at once.

    A merged channel `j` (`"sum"`, `"ave"`, `"mul"`) goes only with both
    directions' unit `j`, and with `"concat"` the surgeon keeps as many units
    in each direction: a pair is what a cut removes whole in every merge mode.
    """

    rules = (BidirectionalRule,)
    prefixes = ("forward_layer.", "backward_layer.")

    def members(self, layer, own):
        members = super().members(layer, own)  # none around a layer without a rule
        if members and layer.forward_layer.units != layer.backward_layer.units:
            return []
        return members

    def kept_units(self, layer, plan, index):
        kept = plan.kept[plan.graph.calls[index].outputs[0]]
        forward, backward = layer_rules.rule_for(layer).side_units(layer, kept)
        return set(forward.tolist()) | set(backward.tolist())


class HeadsFamily(RankedFamily):
    """MultiHeadAttention: a unit is a head, its slices of the four kernels."""

    rules = (MultiHeadAttentionRule,)

    def members(self, layer, own):
        layouts = layer_rules.rule_for(layer).layer_weights(layer)
        if any(layout.attribute not in own for layout in layouts):
            return []  # a kernel shared with another layer
        return [(own[lay.attribute][0], lay.output_axes, 1) for lay in layouts]

    def kept_units(self, layer, plan, index):
        return set(np.asarray(plan.inner.get(index, range(layer.num_heads))).tolist())


FAMILIES = (UnitsFamily(), RecurrentFamily(), BidirectionalFamily(), HeadsFamily())


def ranked_groups(
    weights: list[tuple], values: list[np.ndarray], bias_values: dict[int, np.ndarray]
) -> list[RankedGroup]:
    """The ranked layers among the managed `weights`, with their units' scores.

    Args:
        weights: `(layer, layout, variable)` of the managed weights, partners
            (`normalized_units.PartnerLayout`) listed with their layer.
        values: Their values.
        bias_values: Index of a bias's first member weight -> the bias's
            value (`masking.WeightMasks.biases`).
    """
    own, partners, layers = {}, {}, {}
    for index, (layer, layout, _) in enumerate(weights):
        layers[id(layer)] = layer
        if isinstance(layout, PartnerLayout):
            partners.setdefault(id(layer), []).append(index)
        else:
            own.setdefault(id(layer), {})[layout.attribute] = (index, layout)
    groups = []
    for key, layer in layers.items():
        rule = layer_rules.rule_for(layer)
        family = next((f for f in FAMILIES if isinstance(rule, f.rules)), None)
        members = family.members(layer, own.get(key, {})) if family else []
        if not members:
            continue
        squares = sum(_group_squares(values[i], axes, gates) for i, axes, gates in members)
        # A unit left without kernel entries loses its bias anyway (`WeightMasks.biases`).
        alive = squares > 0
        for index, _, gates in members:
            if index in bias_values:
                squares = squares + alive * _bias_squares(bias_values[index], gates)
        for index in partners.get(key, []):
            squares = squares + np.square(values[index].astype(np.float64))
            members = [*members, (index, (-1,), 1)]
        groups.append(RankedGroup(layer, family, members, np.sqrt(squares)))
    return groups


def _group_squares(value: np.ndarray, axes: tuple[int, ...], gates: int) -> np.ndarray:
    """Sum of squares of each unit's slice of `value`."""
    view, _, reduce_axes = gate_view(value.shape, axes, gates)
    squares = np.square(value.astype(np.float64)).reshape(view)
    return np.sum(squares, axis=reduce_axes).reshape(-1)


def _bias_squares(bias: np.ndarray, gates: int) -> np.ndarray:
    """Sum of squares of each unit's entries of a bias `(..., gates * units)`."""
    blocks = np.square(bias.astype(np.float64)).reshape(-1, gates, bias.shape[-1] // gates)
    return blocks.sum(axis=(0, 1))


def without_unit(keep: np.ndarray, member: Member, unit: int) -> None:
    """Sets unit `unit`'s slice of `keep` (one member's weight) to False, in place."""
    _, axes, gates = member
    index = [slice(None)] * keep.ndim
    if gates > 1:  # column `b * units + unit` of every gate block on the last axis
        index[-1] = np.arange(gates) * (keep.shape[-1] // gates) + unit
    else:
        index[axes[0]] = unit
    keep[tuple(index)] = False
