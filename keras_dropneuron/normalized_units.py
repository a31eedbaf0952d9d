"""Units followed by BatchNormalization: one group spans the kernel column and BN's gamma and beta.

In inference, BatchNormalization turns unit `j` of the layer before it into
`gamma_j * (z_j - mean_j) / sqrt(var_j + eps) + beta_j`. Zeroing the unit's
kernel column alone leaves a constant there, which the next layer often
cannot absorb exactly (a padded convolution), and BN rescales the kernel
columns so that their norms shrink together. Zeroing `gamma_j` and `beta_j`
makes the channel exactly 0, whatever the kernel and the statistics hold.

So a Dense or Conv unit read only by a BatchNormalization (directly, or
through stateless per-channel layers such as an activation or dropout) has
one incoming group: its kernel column with `gamma_j` and `beta_j`. The
penalty takes the norm of the whole group (`NormalizedUnitRegularizer`),
pruning zeroes it together, and the reports count the unit alive while any of
it is not zero. The slim model then removes the unit exactly.
"""

import dataclasses

import keras
import numpy as np

from keras_dropneuron import keras_internals, layer_rules
from keras_dropneuron._group_lasso import gate_view
from keras_dropneuron.layer_rules.layout import WeightLayout, group_alive
from keras_dropneuron.layer_rules.per_channel import (
    ActivationRule,
    BatchNormalizationRule,
    PassThroughRule,
)
from keras_dropneuron.surgery.graph import build_graph

# Rules of the layers a unit may pass on its way to the normalization: each
# maps channel `c` to channel `c` and holds no weight, so a zero stays zero.
_STATELESS = (ActivationRule, PassThroughRule)
_NORMALIZATION_WEIGHTS = ("gamma", "beta")


@dataclasses.dataclass(frozen=True)
class PartnerLayout(WeightLayout):
    """A normalization weight (`gamma`, `beta`) that joins the units of an earlier layer.

    Entry `j` belongs to unit `j` of the layer it is listed with; it is
    pruned with that unit's group, never on its own.
    """


@dataclasses.dataclass(frozen=True)
class NormalizedUnits:
    """A layer whose output units a BatchNormalization reads.

    Attributes:
        layer: The Dense or Conv layer.
        layout: Its weight whose output groups are the units (its rule's
            last `WeightLayout`).
        norm: The `BatchNormalization` layer.
    """

    layer: keras.layers.Layer
    layout: WeightLayout
    norm: keras.layers.BatchNormalization

    def partners(self) -> list[tuple[PartnerLayout, keras.Variable]]:
        """`(layout, variable)` of the normalization's `gamma` and `beta` (those it has)."""
        return [
            (PartnerLayout(f"{self.norm.name}.{name}", "", (), (-1,), guard=False), variable)
            for name, variable in _named_weights(self.norm)
        ]


def _named_weights(norm: keras.layers.Layer) -> list[tuple[str, keras.Variable]]:
    found = ((name, getattr(norm, name, None)) for name in _NORMALIZATION_WEIGHTS)
    return [(name, variable) for name, variable in found if variable is not None]


def normalization_weights(norm: keras.layers.Layer) -> list[keras.Variable]:
    """A BatchNormalization's `gamma` and `beta` variables (those it has: `scale`, `center`)."""
    return [variable for _, variable in _named_weights(norm)]


def _units_layout(layer: keras.layers.Layer) -> WeightLayout | None:
    """The weight whose output groups are `layer`'s units, for a layer of units."""
    rule = layer_rules.rule_for(layer)
    layouts = layer_rules.weight_layouts(layer)
    if not layouts or not rule.width_argument:
        return None  # no units of its own (a barrier, a per-channel layer, a block)
    layout = layouts[-1]
    return layout if layout.gates == 1 and len(layout.output_axes) == 1 else None


def find_normalized_units(model: keras.Model) -> dict[int, NormalizedUnits]:
    """`id(layer)` -> `NormalizedUnits`, for every layer of `model` whose units BN reads.

    A layer qualifies when it is called once, its output is read by one call
    only (not a model output), and that call is a BatchNormalization on the
    channel axis with a `gamma` (`scale=True`; called once), directly or
    through stateless per-channel layers read once each.

    Args:
        model: A Sequential or Functional model.

    Returns:
        The pairs found (empty for a model without BatchNormalization).
    """
    layers = keras_internals.sublayers(model)
    if not any(isinstance(layer, keras.layers.BatchNormalization) for layer in layers):
        return {}
    graph = build_graph(model)
    readers = {}
    for index, call in enumerate(graph.calls):
        for key in call.inputs:
            readers.setdefault(key, []).append(index)
    for key in graph.outputs:
        readers.setdefault(key, []).append(None)  # a model output: read outside
    found = {}
    for call in graph.calls:
        layout = _units_layout(call.layer)
        if layout is None or len(graph.calls_of_layer.get(id(call.layer), ())) != 1:
            continue
        norm = _normalization_reading(graph, readers, call.outputs)
        if norm is not None:
            found[id(call.layer)] = NormalizedUnits(call.layer, layout, norm)
    return found


def _normalization_reading(graph, readers, outputs) -> keras.layers.Layer | None:
    """The BatchNormalization that alone reads `outputs` (through stateless layers)."""
    while len(outputs) == 1:
        consumers = readers.get(outputs[0], [])
        if len(consumers) != 1 or consumers[0] is None:
            return None
        call = graph.calls[consumers[0]]
        if len(graph.calls_of_layer.get(id(call.layer), ())) != 1:
            return None
        rule = layer_rules.rule_for(call.layer)
        tensors_in = [graph.tensors[k] for k in call.inputs]
        tensors_out = [graph.tensors[k] for k in call.outputs]
        if rule.barrier_reason(call.layer, tensors_in, tensors_out) is not None:
            return None
        if isinstance(rule, BatchNormalizationRule):
            # Without gamma (`scale=False`) the channel need not reach 0: no group.
            return call.layer if call.layer.scale else None
        if not isinstance(rule, _STATELESS):
            return None
        outputs = call.outputs
    return None


def partner_entries(model: keras.Model, layers: list) -> list[tuple]:
    """`(layer, PartnerLayout, variable)` for the normalization weights of `layers`' units.

    Listed with the layer whose units they join (each variable once).
    """
    chosen = {id(layer) for layer in layers}
    entries, seen = [], set()
    for key, units in find_normalized_units(model).items():
        if key not in chosen:
            continue
        for layout, variable in units.partners():
            if id(variable) not in seen:
                seen.add(id(variable))
                entries.append((units.layer, layout, variable))
    return entries


def _units_weights(weights: list[tuple]) -> dict[int, str]:
    """`id(layer)` -> the attribute of its units weight, for layers listed with partners."""
    with_partners = {
        id(layer) for layer, layout, _ in weights if isinstance(layout, PartnerLayout)
    }
    return {
        id(layer): _units_layout(layer).attribute
        for layer, _, _ in weights
        if id(layer) in with_partners
    }


def joint_dead(
    weights: list[tuple], values: list[np.ndarray], threshold: float
) -> dict[int, np.ndarray]:
    """Per layer with partners: units whose whole group's L2 norm is below `threshold`.

    The group of unit `j` is its incoming group in the layer's units weight
    and entry `j` of each partner.

    Returns:
        `id(layer)` -> boolean array over the units.
    """
    units_weight = _units_weights(weights)
    squares = {}
    for (layer, layout, _), value in zip(weights, values, strict=True):
        if id(layer) not in units_weight:
            continue
        square = np.square(value.astype(np.float64))
        if layout.attribute == units_weight[id(layer)]:
            view, _, reduce_axes = gate_view(value.shape, layout.output_axes, layout.gates)
            square = np.sum(square.reshape(view), axis=reduce_axes).reshape(-1)
        elif not isinstance(layout, PartnerLayout):
            continue
        squares[id(layer)] = squares.get(id(layer), 0.0) + square
    return {key: np.sqrt(total) < threshold for key, total in squares.items()}


def scale_dead(
    weights: list[tuple], values: list[np.ndarray], threshold: float
) -> dict[int, np.ndarray]:
    """Per layer with partners: units whose normalization `|gamma|` is below `threshold`."""
    return {
        id(layer): np.abs(value.astype(np.float64)) < threshold
        for (layer, layout, _), value in zip(weights, values, strict=True)
        if isinstance(layout, PartnerLayout) and layout.attribute.endswith(".gamma")
    }


def apply_joint(
    weights: list[tuple],
    values: list[np.ndarray],
    keeps: list[np.ndarray],
    threshold: float,
    mode: str,
) -> list[np.ndarray]:
    """`keeps` with each normalized unit's group pruned as one (in the group modes).

    With `mode="incoming"` or `"neuron"`, a unit whose joint group's norm is
    below `threshold` loses its kernel column and its partner entries; a
    unit above it keeps its column (its outgoing side is still judged on its
    own). With `"scale"`, a unit whose `|gamma|` is below `threshold` loses
    the same (network slimming's criterion). Partner entries are never
    pruned otherwise: in `"weight"` and `"outgoing"` modes they keep their
    non-zero values.
    """
    dead = {}
    if mode in ("incoming", "neuron"):
        dead = joint_dead(weights, values, threshold)
    elif mode == "scale":
        dead = scale_dead(weights, values, threshold)
    units_weight = _units_weights(weights)
    result = []
    for (layer, layout, _), value, keep in zip(weights, values, keeps, strict=True):
        if isinstance(layout, PartnerLayout):
            keep = value != 0
            if id(layer) in dead:
                keep = keep & ~dead[id(layer)]
        elif id(layer) in dead and layout.attribute == units_weight[id(layer)]:
            view, unit_axes, _ = gate_view(value.shape, layout.output_axes, layout.gates)
            alive = ~dead[id(layer)]
            shape = [1] * len(view)
            for axis in unit_axes:
                shape[axis] = view[axis]
            keep = (value != 0) & _outgoing_keep(value, layout, threshold, mode)
            keep = keep & np.broadcast_to(alive.reshape(shape), view).reshape(value.shape)
        result.append(keep)
    return result


def _outgoing_keep(value, layout, threshold, mode):
    """The outgoing-group part of a `"neuron"` mask (all True otherwise)."""
    if mode != "neuron":
        return np.ones(value.shape, dtype=bool)
    from keras_dropneuron.pruning import keep_mask

    return keep_mask(value, layout, threshold, "outgoing")


def sync_partners(weights: list[tuple], keeps: list[np.ndarray]) -> list[np.ndarray]:
    """Partner entries follow their unit: kept wherever the unit's kernel column is.

    After `pruning.keep_strongest_units` restores a unit, its gamma and beta
    come back with it.
    """
    alive = {}
    for (layer, layout, _), keep in zip(weights, keeps, strict=True):
        if not isinstance(layout, PartnerLayout):
            alive[id(layer)] = group_alive(keep, layout.output_axes, layout.gates).reshape(-1)
    return [
        keep | alive[id(layer)]
        if isinstance(layout, PartnerLayout) and id(layer) in alive
        else keep
        for (layer, layout, _), keep in zip(weights, keeps, strict=True)
    ]
