"""Dropping principle 1: set sub-threshold weights, or whole groups, to zero."""

import keras
import numpy as np

from keras_dropneuron import checks, layer_rules, model_utils, normalized_units
from keras_dropneuron._group_lasso import gate_view
from keras_dropneuron.layer_rules.base import attribute
from keras_dropneuron.layer_rules.layout import WeightLayout, group_alive

PRUNE_MODES = ("weight", "incoming", "outgoing", "neuron", "scale")

# `(layer, layout, variable)`: one prunable weight and the layer it is pruned in.
ManagedWeight = tuple[keras.layers.Layer, WeightLayout, keras.Variable]


class UnitsWouldVanishError(ValueError):
    """A pruning step was refused: it would remove every unit of a layer."""


def keep_mask(
    weight: np.ndarray, layout: WeightLayout, threshold: float, mode: str = "weight"
) -> np.ndarray:
    """Boolean mask of the weights that survive pruning at `threshold`.

    Args:
        weight: The weight as a numpy array.
        layout: Its `WeightLayout`.
        threshold: Weights (`mode="weight"`) or group norms (other modes) below
            it are pruned.
        mode: `"weight"` prunes single weights with `|w| < threshold`;
            `"incoming"` whole incoming groups (one per output unit) and
            `"outgoing"` whole outgoing groups (one per input unit) whose L2 norm
            is below `threshold`; `"neuron"` does both. A recurrent kernel's
            group of unit `j` spans its columns in every gate block
            (`layout.gates`; a `Bidirectional` has each direction's kernels
            with their own gates); an attention layer's groups are its heads'
            slices (incoming: query, key, value; outgoing: output kernel).
            `"scale"` prunes no weight here: it judges only the units that a
            BatchNormalization reads, by `|gamma|` (network slimming; see
            `keep_masks`).
    """
    keep = weight != 0
    if mode == "scale":
        return keep
    if mode == "weight":
        # In float64: a half-precision comparison would round the threshold to the
        # weight's precision (0.05 -> 0.04998779 in float16) and keep weights below it.
        return keep & (np.abs(weight.astype(np.float64)) >= threshold)
    groups = []
    if mode in ("incoming", "neuron"):
        groups.append(layout.output_axes)
    if mode in ("outgoing", "neuron"):
        groups.append(layout.input_axes)
    squared = np.square(weight.astype(np.float64))
    for unit_axes in groups:
        view, _, reduce_axes = gate_view(weight.shape, unit_axes, layout.gates)
        norms = np.sqrt(np.sum(squared.reshape(view), axis=reduce_axes, keepdims=True))
        keep = keep & np.broadcast_to(norms >= threshold, view).reshape(weight.shape)
    return keep


def _would_empty(layout, value, keep):
    """Whether applying `keep` kills the last alive unit of a guarded weight."""
    if not layout.guard:
        return False
    alive_before = group_alive(value, layout.output_axes, layout.gates)
    alive_after = group_alive(np.where(keep, value, 0), layout.output_axes, layout.gates)
    return bool(alive_before.any() and not alive_after.any())


def check_units_survive(
    weights: list[ManagedWeight],
    values: list[np.ndarray],
    keeps: list[np.ndarray],
    threshold: float,
) -> None:
    """Refuses a pruning step that would kill the last alive units of a layer.

    A layer whose output units all lose their incoming weights computes a
    constant and cannot be slimmed into a layer of width zero, so such a step
    is refused as a whole: nothing is modified. Layers whose weights were
    already all zero are left as they are, and so are weights without a
    `guard` (a recurrent kernel, attention queries and keys).

    Args:
        weights: `(layer, layout, variable)` triples from `managed_weights`.
        values: Their current values.
        keeps: The masks that pruning would apply.
        threshold: The threshold, for the message.

    Raises:
        UnitsWouldVanishError: A `ValueError` naming the first layer that would
            lose every unit.
    """
    for (layer, layout, _), value, keep in zip(weights, values, keeps, strict=True):
        if _would_empty(layout, value, keep):
            raise UnitsWouldVanishError(
                f"Invalid value for argument `threshold`: pruning at threshold={threshold!r} "
                f"would remove every unit of layer {layer.name!r} (weight "
                f"{layout.attribute!r}), leaving it a constant. Nothing was modified. "
                "Lower the threshold or the regularization strength, or exclude the "
                "layer with `layers=`."
            )


def keep_strongest_units(
    weights: list[ManagedWeight], values: list[np.ndarray], keeps: list[np.ndarray]
) -> list[np.ndarray]:
    """Keeps the strongest unit of every layer that pruning would empty.

    Where `check_units_survive` would refuse the step, the unit (or head) with
    the largest incoming-group norm keeps its non-zero weights instead, so
    the layer stays a layer of width one. In a residual block a sublayer
    whose units all die only adds a constant; keeping one unit lets training
    go on, and `slim_model` keeps a width-one layer exactly.

    Args:
        weights: `(layer, layout, variable)` triples from `managed_weights`.
        values: Their current values.
        keeps: The masks that pruning would apply.

    Returns:
        The masks, with one unit restored in each layer they would empty.
    """
    result = []
    for (_, layout, _), value, keep in zip(weights, values, keeps, strict=True):
        if _would_empty(layout, value, keep):
            view, _, reduce_axes = gate_view(value.shape, layout.output_axes, layout.gates)
            squared = np.square(value.astype(np.float64)).reshape(view)
            norms = np.sum(squared, axis=reduce_axes, keepdims=True)
            strongest = np.zeros(norms.shape, dtype=bool)
            strongest.flat[np.argmax(norms)] = True
            unit = np.broadcast_to(strongest, view).reshape(value.shape)
            keep = keep | (unit & (value != 0))
        result.append(keep)
    return result


def managed_weights(
    layers: list[keras.layers.Layer], model: keras.Model | None = None
) -> list[ManagedWeight]:
    """Lists `(layer, layout, variable)` for every prunable weight of `layers`.

    Each variable is listed once, at its first layer, even when layers share
    it, so that it is counted, pruned and masked once. With `model`, the
    `gamma` and `beta` of a BatchNormalization that reads a layer's units
    follow, listed with that layer (`normalized_units.PartnerLayout`): they
    are pruned with the units' groups.
    """
    weights, seen = [], set()
    for layer in layers:
        for layout in layer_rules.weight_layouts(layer):
            variable = attribute(layer, layout.attribute)
            if id(variable) not in seen:
                seen.add(id(variable))
                weights.append((layer, layout, variable))
    if model is not None:
        weights += normalized_units.partner_entries(model, layers)
    return weights


def keep_masks(
    weights: list[ManagedWeight], values: list[np.ndarray], threshold: float, mode: str
) -> list[np.ndarray]:
    """`keep_mask` of every managed weight, a normalized unit's group judged as one.

    Partner weights (`gamma`, `beta`) are pruned only with their units: in
    the group modes when the whole group's norm is below `threshold`, in
    `"scale"` mode when `|gamma|` is (`normalized_units.apply_joint`).
    """
    keeps = [
        value != 0
        if isinstance(layout, normalized_units.PartnerLayout)
        else keep_mask(value, layout, threshold, mode)
        for (_, layout, _), value in zip(weights, values, strict=True)
    ]
    return normalized_units.apply_joint(weights, values, keeps, threshold, mode)


def prune_weights(
    model: keras.Model,
    threshold: float,
    mode: str = "weight",
    layers: list[str | keras.layers.Layer] | None = None,
) -> dict[str, int]:
    """Sets sub-threshold weights of `model` to zero, in place.

    This modifies `model`'s weights in place. It is Dropping Principle 1 of
    DropNeuron applied once, for models trained without `PruneCallback`. Only the
    weights of the layer rules (`keras_dropneuron.layer_rules`) are pruned; biases are
    left alone.

    Args:
        model: A Sequential or Functional model, nested models included.
        threshold: Weights with `|w| < threshold` (or groups whose L2 norm is
            below it, in the group modes) become zero.
        mode: One of `"weight"`, `"incoming"`, `"outgoing"`, `"neuron"`
            (see `keep_mask`). Defaults to `"weight"`.
        layers: Names or layers to prune. Defaults to `None`: every supported
            layer.

    Returns:
        A dict with `"pruned"` (weights newly set to zero), `"zeros"` (zero
        weights after pruning) and `"total"` (weights considered).

    Raises:
        TypeError: If `model` is not a Keras model or `threshold` not a number.
        ValueError: For bad `threshold`, `mode`, subclassed models, an empty
            `layers` list or one naming unknown layers, models without
            supported layers, weights that are not finite, or a threshold
            that would leave a layer with no unit alive (see
            `check_units_survive`). Nothing is modified then.

    Example:

    >>> counts = prune_weights(model, threshold=1e-2)
    >>> print(counts["zeros"] / counts["total"])
    """
    threshold = checks.check_non_negative_float("threshold", threshold)
    checks.check_choice("mode", mode, PRUNE_MODES)
    checks.check_layers("layers", layers)
    checks.check_model("model", model)
    selected = model_utils.select_layers(model, layers)
    model_utils.check_has_supported_layers(model, selected)
    model_utils.check_finite_weights(selected, "prune")
    weights = managed_weights(selected, model)
    values = [np.asarray(variable.numpy()) for _, _, variable in weights]
    keeps = keep_masks(weights, values, threshold, mode)
    check_units_survive(weights, values, keeps, threshold)
    counts = {"pruned": 0, "zeros": 0, "total": 0}
    for (_, layout, variable), value, keep in zip(weights, values, keeps, strict=True):
        if not isinstance(layout, normalized_units.PartnerLayout):  # counts: the layers' own
            counts["pruned"] += int(np.count_nonzero((value != 0) & ~keep))
            counts["zeros"] += int(keep.size - np.count_nonzero(keep))
            counts["total"] += int(keep.size)
        variable.assign(np.where(keep, value, 0).astype(value.dtype))
    return counts
