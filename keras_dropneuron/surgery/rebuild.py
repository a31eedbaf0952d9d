"""Builds the slim Functional model from a `Plan`.

Each layer is re-created from its config (with the new `units`/`filters` when
it loses channels), called on the new tensors with the original call
arguments, then filled: a resized layer gets sliced copies of its weights,
every other layer a copy of its whole state (`copying.copy_state`). The source
model is only read.
"""

from collections.abc import Callable

import keras
from keras import tree

from keras_dropneuron import keras_internals, layer_rules
from keras_dropneuron.layer_rules.base import attribute, channels
from keras_dropneuron.surgery import copying
from keras_dropneuron.surgery.plan import Plan


def _new_layer(plan, index, keep_regularizers, copies):
    """The layer for one call, and how to fill it once built.

    Returns `(layer, weights, config)`: `weights` is a dict of sliced weights
    for a resized layer, the source layer for one copied whole, or `None` when
    the source layer itself is reused (a weightless layer that cannot be
    re-created, under its own name); `config` holds the initializers to put
    back once the weights are filled, or is `None`.
    """
    call = plan.graph.calls[index]
    layer = call.layer
    if not isinstance(layer, keras.layers.Layer):  # a stateless operation
        kept = [plan.kept[key] for key in call.outputs]
        return plan.rules[index].rebuild_operation(layer, kept), None, None
    # Layers with a rule are Keras's own: they may be built with zeros.
    known = plan.rules[index] is not layer_rules.BARRIER
    get_config = layer_rules.rule_for(layer).layer_config
    if not plan.resized(index):
        try:
            config = copying.layer_config(layer, call.name, keep_regularizers, get_config)
            new = copying.new_layer(layer, config, placeholder_initializers=known)
            return new, layer, config if known else None
        except copying.LayerCopyError:
            # A weightless layer (a Lambda, say) can be shared with the
            # source: it holds nothing that training the copy would change.
            if not layer.weights and call.name == layer.name:
                return layer, None, None
            # Else a copy the model's own class made (a keras-hub layer whose
            # config is broken, inside a model whose config is not).
            fresh = copies(layer) if copies is not None and call.name == layer.name else None
            if fresh is None:
                raise
            return fresh, None, None
    config = copying.layer_config(layer, call.name, keep_regularizers, get_config)
    weights = plan.rules[index].resize(layer, config, plan.cut(index))
    cls = plan.rules[index].resized_class(layer, config)
    new = copying.new_layer(layer, config, placeholder_initializers=True, cls=cls)
    return new, weights, config


def _fill(new, weights):
    if isinstance(weights, keras.layers.Layer):
        copying.copy_state(weights, new)
        return
    for path, value in weights.items():
        variable = attribute(new, path)
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
        name=keras_internals.input_name(tensor),
    )


def rebuild(
    plan: Plan,
    *,
    keep_regularizers: bool = True,
    progress: keras.utils.Progbar | None = None,
    copies: Callable[[keras.layers.Layer], keras.layers.Layer | None] | None = None,
) -> tuple[keras.Model, dict]:
    """Builds the slim model described by `plan`.

    Args:
        plan: A `Plan` from `make_plan`.
        keep_regularizers: Whether weight regularizers stay on the new layers.
            Defaults to `True`.
        progress: Optional `keras.utils.Progbar` advanced once per call.
            Defaults to `None`.
        copies: For a layer kept whole that cannot be re-created from its
            own config: a function giving a copy with its exact state (made
            by the model's class, see `hub_models.LayerCopies`), or `None`.
            Defaults to `None`: such a layer is refused (`LayerCopyError`).

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
            new_layers[id(call.layer)] = _new_layer(plan, index, keep_regularizers, copies)
        new, weights, config = new_layers[id(call.layer)]
        known = {
            raw: new_tensors[key] for raw, key in zip(call.raw_inputs, call.inputs, strict=True)
        }
        args, kwargs = call.arguments(known)
        outputs = tree.flatten(new(*args, **kwargs))
        for key, output in zip(call.outputs, outputs, strict=True):
            new_tensors[key] = output
        if fresh and weights is not None:
            _fill(new, weights)
        if fresh and config is not None:
            copying.restore_initializers(new, config)
        if progress is not None:
            progress.add(1)
    functional = graph.functional
    inputs = tree.pack_sequence_as(keras_internals.inputs_struct(functional), new_inputs)
    outputs = tree.pack_sequence_as(
        keras_internals.outputs_struct(functional), [new_tensors[k] for k in graph.outputs]
    )
    return keras.Model(inputs=inputs, outputs=outputs, name=graph.model.name), new_tensors
