"""Builds the slim Functional model from a `Plan`.

Each layer is re-created from its config (with the new `units`/`filters` when
it loses channels), called on the new tensors with the original call
arguments, then filled: a resized layer gets sliced copies of its weights,
every other layer a copy of its whole state (`copying.copy_state`). The source
model is only read.
"""

import keras
import numpy as np
from keras import tree

from keras_dropneuron.surgery import copying, rules
from keras_dropneuron.surgery.graph import channels

_WIDTH_ARGUMENT = {
    "dense": "units",
    "conv": "filters",
    "conv_transpose": "filters",
    "separable": "filters",
    "embedding": "output_dim",
}


def _sliced_weights(layer, kind, kin, kout, fold):
    """Attribute name -> new value for a layer whose channels were cut."""
    n = rules.numpy
    if kind in ("dense", "conv", "conv_transpose", "separable"):
        if kind == "dense":
            weights = {"kernel": n(layer.kernel)[np.ix_(kin, kout)]}
        elif kind == "conv":
            weights = {"kernel": n(layer.kernel)[..., kin, :][..., kout]}
        elif kind == "conv_transpose":
            weights = {"kernel": n(layer.kernel)[..., kout, :][..., kin]}
        else:
            depthwise = n(layer.depthwise_kernel)
            multiplier = depthwise.shape[-1]
            rows = (kin[:, None] * multiplier + np.arange(multiplier)).reshape(-1)
            weights = {
                "depthwise_kernel": depthwise[..., kin, :],
                "pointwise_kernel": n(layer.pointwise_kernel)[..., rows, :][..., kout],
            }
        width = n(layer.kernel if kind != "separable" else layer.pointwise_kernel)
        width = width.shape[-2 if kind == "conv_transpose" else -1]
        bias = rules.bias_or_zeros(layer, width)
        if fold is not None:
            bias = bias + rules.fold_bias(layer, kind, fold)
        if layer.use_bias or fold is not None and np.any(bias != 0):
            weights["bias"] = bias[kout]
        return weights
    if kind == "depthwise":
        kernel = n(layer.kernel)
        weights = {"kernel": kernel[..., kin, :]}
        if layer.use_bias:
            weights["bias"] = n(layer.bias).reshape(kernel.shape[-2], -1)[kin].ravel()
        return weights
    if kind == "embedding":
        return {"embeddings": n(layer.embeddings)[:, kout]}
    if kind == "bn":
        names = ("gamma", "beta", "moving_mean", "moving_variance")
        return {
            a: n(getattr(layer, a))[kout] for a in names if getattr(layer, a, None) is not None
        }
    if kind == "prelu":
        alpha = n(layer.alpha)
        return {"alpha": alpha[..., kout] if alpha.shape[-1] > 1 else alpha}
    return {}


def _resized(plan, index):
    """Whether the call's layer loses channels or takes a folded constant."""
    call = plan.graph.calls[index]
    if plan.kinds[index] == "barrier" or index in plan.folds:
        return index in plan.folds
    keys = call.inputs[:1] + call.outputs[:1]
    return any(len(plan.kept[key]) != channels(plan.graph.tensors[key]) for key in keys)


def _new_layer(plan, index, keep_regularizers):
    """The layer for one call, and how to fill it once built.

    Returns `(layer, weights)`: `weights` is a dict of sliced weights for a
    resized layer, the source layer for one copied whole, or `None` when the
    source layer itself is reused (a weightless layer that cannot be
    re-created, under its own name).
    """
    call = plan.graph.calls[index]
    layer = call.layer
    if not isinstance(layer, keras.layers.Layer):
        return layer, None  # a stateless operation
    if not _resized(plan, index):
        try:
            config = copying.layer_config(layer, call.name, keep_regularizers)
            return copying.new_layer(layer, config), layer
        except copying.LayerCopyError:
            # A weightless layer (a Lambda, say) can be shared with the
            # source: it holds nothing that training the copy would change.
            if layer.weights or call.name != layer.name:
                raise
            return layer, None
    config = copying.layer_config(layer, call.name, keep_regularizers)
    kind = plan.kinds[index]
    kin = plan.kept[call.inputs[0]] if call.inputs else None
    kout = plan.kept[call.outputs[0]]
    weights = _sliced_weights(layer, kind, kin, kout, plan.folds.get(index))
    if kind in _WIDTH_ARGUMENT:
        config[_WIDTH_ARGUMENT[kind]] = len(kout)
    if "bias" in weights and "use_bias" in config:
        config["use_bias"] = True
    return copying.new_layer(layer, config), weights


def _fill(new, weights):
    if isinstance(weights, keras.layers.Layer):
        copying.copy_state(weights, new)
        return
    for attribute, value in weights.items():
        variable = getattr(new, attribute)
        variable.assign(value.astype(variable.dtype))


def _new_input(tensor, width):
    shape = list(tensor.shape[1:])
    if width is not None:
        shape[-1] = width
    return keras.Input(
        shape=tuple(shape),
        batch_size=tensor.shape[0],
        dtype=tensor.dtype,
        sparse=tensor.sparse,
        name=tensor._keras_history.operation.name,
    )


def rebuild(plan, *, keep_regularizers=True, progress=None):
    """Builds the slim model described by `plan`.

    Args:
        plan: A `Plan` from `make_plan`.
        keep_regularizers: Whether weight regularizers stay on the new layers.
            Defaults to `True`.
        progress: Optional `keras.utils.Progbar` advanced once per call.
            Defaults to `None`.

    Returns:
        `(model, tensors)`: a new Functional `keras.Model` with the source
        model's name, and source tensor key -> its KerasTensor in the new model.
    """
    graph = plan.graph
    new_tensors = {}
    new_inputs = []
    for key in graph.inputs:
        tensor = graph.tensors[key]
        width = len(plan.kept[key]) if plan.kept_inputs and channels(tensor) else None
        new_inputs.append(_new_input(tensor, width))
        new_tensors[key] = new_inputs[-1]
    new_layers = {}
    for index, call in enumerate(graph.calls):
        fresh = id(call.layer) not in new_layers
        if fresh:
            new_layers[id(call.layer)] = _new_layer(plan, index, keep_regularizers)
        new, weights = new_layers[id(call.layer)]
        known = {
            raw: new_tensors[key] for raw, key in zip(call.raw_inputs, call.inputs, strict=True)
        }
        args, kwargs = call.arguments(known)
        outputs = tree.flatten(new(*args, **kwargs))
        for key, output in zip(call.outputs, outputs, strict=True):
            new_tensors[key] = output
        if fresh and weights is not None:
            _fill(new, weights)
        if progress is not None:
            progress.add(1)
    functional = graph.functional
    inputs = tree.pack_sequence_as(functional._inputs_struct, new_inputs)
    outputs = tree.pack_sequence_as(
        functional._outputs_struct, [new_tensors[k] for k in graph.outputs]
    )
    return keras.Model(inputs=inputs, outputs=outputs, name=graph.model.name), new_tensors
