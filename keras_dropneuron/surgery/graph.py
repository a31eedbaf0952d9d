"""Flattens a Functional or Sequential model into a list of leaf-layer calls.

Nested Functional and Sequential submodels are inlined: their layers become
calls of the outer graph, so channels can be traced across model boundaries.
The slim model is therefore one flat Functional model (layer names are kept;
a name that would clash gets the submodel name as prefix).
"""

import dataclasses

import keras

from keras_dropneuron import keras_internals
from keras_dropneuron.layer_rules.base import channels  # noqa: F401 (re-exported)

SUPPORTED_MODEL_KINDS = (
    "a Functional model (`keras.Model(inputs, outputs)`) or a built "
    "`keras.Sequential`; nested Functional/Sequential submodels are inlined"
)


@dataclasses.dataclass
class Call:
    """One call of a leaf layer (or stateless op) in the flattened graph.

    Attributes:
        layer: The called layer or operation.
        node: The Keras node, used to replay the call's arguments.
        raw_inputs: `id()` of the node's input KerasTensors.
        inputs: Canonical keys of the input tensors.
        outputs: Canonical keys of the output tensors.
        name: Name the layer gets in the rebuilt model.
        training: The `training` value the call runs with whatever the model
            is called with (`None` when that decides). Keras hands an enclosing
            submodel's explicit `training` to every layer inside it, over the
            layer's own, so inlining must keep it.
    """

    layer: object
    node: object
    raw_inputs: list
    inputs: list
    outputs: list
    name: str
    training: bool | None = None

    def arguments(self, known):
        """`(args, kwargs)` to replay the call, `known`: input `id()` -> value."""
        args, kwargs = keras_internals.call_arguments(self.node, known)
        if self.training is not None and keras_internals.takes_training(self.layer):
            kwargs["training"] = self.training
        return args, kwargs


@dataclasses.dataclass
class Graph:
    """A flattened model.

    Attributes:
        model: The source model.
        functional: Its Functional view (`model._functional` for Sequential).
        inputs: Canonical keys of the model inputs, in `model.inputs` order.
        outputs: Canonical keys of the model outputs, in `model.outputs` order.
        calls: Leaf calls in topological order.
        tensors: Canonical key -> KerasTensor (shape and dtype source).
        calls_of_layer: `id(layer)` -> indices into `calls`.
    """

    model: keras.Model
    functional: keras.Model
    inputs: list
    outputs: list
    calls: list
    tensors: dict
    calls_of_layer: dict


def functional_view(model):
    """Returns the Functional graph behind `model`, or raises.

    Raises:
        TypeError: If `model` is not a `keras.Model`.
        ValueError: If it is a subclassed model or an unbuilt Sequential.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid type for argument `model`: expected "
            f"{SUPPORTED_MODEL_KINDS}. Received: model={model!r} of type "
            f"{type(model).__name__}"
        )
    if isinstance(model, keras.Sequential):
        functional = keras_internals.functional_of(model)
        if functional is None:
            raise ValueError(
                "Invalid value for argument `model`: expected a built "
                "Sequential model (start it with `keras.Input(shape)`). "
                f"Received: model={model.name!r}, which is not built"
            )
        return functional
    if keras_internals.is_graph_model(model):
        return model
    raise ValueError(
        f"Invalid value for argument `model`: expected {SUPPORTED_MODEL_KINDS}. "
        f"Received: model={model.name!r}, a subclassed model of type "
        f"{type(model).__name__} whose call() graph cannot be inspected"
    )


def _explicit_training(node):
    training = keras_internals.node_keyword(node, "training")
    return None if training is None else bool(training)


def _submodel_inputs(fn, node):
    """The node's input tensors in `fn.inputs` order, matched as Keras does.

    A dict passed to a submodel with list inputs goes by input name, not by
    the sorted keys that `node.input_tensors` follows.
    """
    given = keras_internals.node_call_input(node)
    if isinstance(given, dict) and not isinstance(keras_internals.inputs_struct(fn), dict):
        names = [tensor.name for tensor in fn.inputs]
        if set(names) <= set(given):
            return [given[name] for name in names]
    return list(node.input_tensors)


def build_graph(model):
    """Flattens `model` into a `Graph`.

    Args:
        model: A Functional or built Sequential `keras.Model`.

    Returns:
        The `Graph`.

    Raises:
        TypeError: If `model` is not a `keras.Model`.
        ValueError: If `model` is subclassed or not built.
    """
    functional = functional_view(model)
    tensors = {}
    calls = []
    used_names = {}
    counter = [0]

    def unique_name(layer, prefix):
        owner = used_names.get(layer.name)
        if owner is None or owner is layer:
            used_names[layer.name] = layer
            return layer.name
        name = f"{prefix}_{layer.name}" if prefix else layer.name
        while name in used_names and used_names[name] is not layer:
            name += "_"
        used_names[name] = layer
        return name

    names_of_layer = {}

    def walk(fn, input_keys, prefix, training):
        counter[0] += 1
        scope = counter[0]
        alias = {id(x): key for x, key in zip(fn.inputs, input_keys, strict=True)}

        def key_of(x):
            if id(x) in alias:
                return alias[id(x)]
            key = (scope, id(x))
            tensors[key] = x
            return key

        for node in keras_internals.nodes_in_order(fn):
            op = node.operation
            if not op or node.is_input:
                continue
            in_keys = [key_of(x) for x in node.input_tensors]
            explicit = _explicit_training(node)
            if keras_internals.is_graph_model(op):
                inner = functional_view(op)
                inner_prefix = f"{prefix}_{op.name}" if prefix else op.name
                inner_keys = [key_of(x) for x in _submodel_inputs(inner, node)]
                inherited = training if training is not None else explicit
                out_keys = walk(inner, inner_keys, inner_prefix, inherited)
                for x, key in zip(node.outputs, out_keys, strict=True):
                    alias[id(x)] = key
                continue
            if id(op) not in names_of_layer:
                names_of_layer[id(op)] = unique_name(op, prefix)
            calls.append(
                Call(
                    layer=op,
                    node=node,
                    raw_inputs=[id(x) for x in node.input_tensors],
                    inputs=in_keys,
                    outputs=[key_of(x) for x in node.outputs],
                    name=names_of_layer[id(op)],
                    training=training if training is not None else explicit,
                )
            )
        return [key_of(x) for x in fn.outputs]

    input_keys = [("input", i) for i in range(len(functional.inputs))]
    for key, x in zip(input_keys, functional.inputs, strict=True):
        tensors[key] = x
        used_names[keras_internals.input_name(x)] = x
    output_keys = walk(functional, input_keys, "", None)
    calls_of_layer = {}
    for i, call in enumerate(calls):
        calls_of_layer.setdefault(id(call.layer), []).append(i)
    return Graph(
        model=model,
        functional=functional,
        inputs=input_keys,
        outputs=output_keys,
        calls=calls,
        tensors=tensors,
        calls_of_layer=calls_of_layer,
    )
