"""Builds the slim Functional model from a `Plan`.

Each layer is re-created from its config with the new `units`/`filters`, called
on the new tensors with the original call arguments, then given sliced copies
of the original weights. The source model is only read.
"""

import keras
import numpy as np
from keras import tree

from keras_dropneuron.surgery import rules
from keras_dropneuron.surgery.graph import channels

_WIDTH_ARGUMENT = {
    "dense": "units",
    "conv": "filters",
    "conv_transpose": "filters",
    "separable": "filters",
    "embedding": "output_dim",
}


def _config(layer, name, keep_regularizers):
    config = layer.get_config()
    config["name"] = name
    for argument in list(config):
        if argument.endswith(("_regularizer", "_constraint")):
            if argument.endswith("_regularizer") and not keep_regularizers:
                if argument != "activity_regularizer":
                    config[argument] = None
                    continue
            # Pass the live object so custom, unregistered classes survive.
            config[argument] = getattr(layer, argument, config[argument])
    return config


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


def _new_layer(plan, index, keep_regularizers):
    call = plan.graph.calls[index]
    kind = plan.kinds[index]
    layer = call.layer
    if not isinstance(layer, keras.layers.Layer) or (kind == "barrier" and not layer.weights):
        return layer, None  # stateless: sharing it with the source model is safe
    config = _config(layer, call.name, keep_regularizers)
    kin = plan.kept[call.inputs[0]] if call.inputs else None
    kout = plan.kept[call.outputs[0]]
    weights = None
    if kind != "barrier":
        fold = plan.folds.get(index)
        weights = _sliced_weights(layer, kind, kin, kout, fold)
        if kind in _WIDTH_ARGUMENT:
            config[_WIDTH_ARGUMENT[kind]] = len(kout)
        if "bias" in weights and "use_bias" in config:
            config["use_bias"] = True
    try:
        new = type(layer).from_config(config)
    except Exception as error:
        raise ValueError(
            f"Cannot rebuild layer {layer.name!r} of type {type(layer).__name__}: "
            "its `from_config(get_config())` failed. Layers kept as they are "
            "must be serializable. Received error: "
            f"{type(error).__name__}: {error}"
        ) from error
    if weights is None:
        weights = layer.get_weights()
    return new, weights


def _assign(new, weights):
    if isinstance(weights, list):
        new.set_weights(weights)
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
        A new Functional `keras.Model` with the source model's name.
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
        args, kwargs = call.node.arguments.fill_in(known)
        outputs = tree.flatten(new(*args, **kwargs))
        for key, output in zip(call.outputs, outputs, strict=True):
            new_tensors[key] = output
        if fresh and weights is not None:
            _assign(new, weights)
        if progress is not None:
            progress.add(1)
    functional = graph.functional
    inputs = tree.pack_sequence_as(functional._inputs_struct, new_inputs)
    outputs = tree.pack_sequence_as(
        functional._outputs_struct, [new_tensors[k] for k in graph.outputs]
    )
    return keras.Model(inputs=inputs, outputs=outputs, name=graph.model.name)
