"""Flattens a Functional or Sequential model into a list of leaf-layer calls.

Nested Functional and Sequential submodels are inlined: their layers become
calls of the outer graph, so channels can be traced across model boundaries.
The slim model is therefore one flat Functional model (layer names are kept;
a name that would clash gets the submodel name as prefix).
"""

import dataclasses

import keras

from keras_dropneuron import keras_internals

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

    def arguments(self, known: dict) -> tuple[list, dict]:
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


def functional_view(model: keras.Model) -> keras.Model:
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


class _Flattener:
    """Walks nested Functional graphs, giving every tensor one canonical key."""

    def __init__(self):
        self.tensors = {}
        self.calls = []
        self._used_names = {}
        self._names_of_layer = {}
        self._scopes = 0

    def reserve(self, name, owner):
        """Marks `name` as taken by `owner` (a model input keeps its name)."""
        self._used_names[name] = owner

    def unique_name(self, layer, prefix):
        """`layer.name`, or with the submodel prefix when another layer has it."""
        owner = self._used_names.get(layer.name)
        if owner is None or owner is layer:
            self._used_names[layer.name] = layer
            return layer.name
        name = f"{prefix}_{layer.name}" if prefix else layer.name
        while name in self._used_names and self._used_names[name] is not layer:
            name += "_"
        self._used_names[name] = layer
        return name

    def walk(self, fn, input_keys, prefix, training):
        """Appends the leaf calls of `fn` and returns the keys of its outputs."""
        self._scopes += 1
        scope = self._scopes
        alias = {id(x): key for x, key in zip(fn.inputs, input_keys, strict=True)}

        def key_of(x):
            if id(x) in alias:
                return alias[id(x)]
            key = (scope, id(x))
            self.tensors[key] = x
            return key

        for node in keras_internals.nodes_in_order(fn):
            op = node.operation
            if not op or node.is_input:
                continue
            in_keys = [key_of(x) for x in node.input_tensors]
            explicit = _explicit_training(node)
            inherited = training if training is not None else explicit
            if keras_internals.is_graph_model(op):
                inner = functional_view(op)
                inner_prefix = f"{prefix}_{op.name}" if prefix else op.name
                inner_keys = [key_of(x) for x in _submodel_inputs(inner, node)]
                out_keys = self.walk(inner, inner_keys, inner_prefix, inherited)
                for x, key in zip(node.outputs, out_keys, strict=True):
                    alias[id(x)] = key
                continue
            if id(op) not in self._names_of_layer:
                self._names_of_layer[id(op)] = self.unique_name(op, prefix)
            self.calls.append(
                Call(
                    layer=op,
                    node=node,
                    raw_inputs=[id(x) for x in node.input_tensors],
                    inputs=in_keys,
                    outputs=[key_of(x) for x in node.outputs],
                    name=self._names_of_layer[id(op)],
                    training=inherited,
                )
            )
        return [key_of(x) for x in fn.outputs]


def build_graph(model: keras.Model) -> Graph:
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
    flattener = _Flattener()
    input_keys = [("input", i) for i in range(len(functional.inputs))]
    for key, x in zip(input_keys, functional.inputs, strict=True):
        flattener.tensors[key] = x
        flattener.reserve(keras_internals.input_name(x), x)
    output_keys = flattener.walk(functional, input_keys, "", None)
    calls_of_layer = {}
    for i, call in enumerate(flattener.calls):
        calls_of_layer.setdefault(id(call.layer), []).append(i)
    return Graph(
        model=model,
        functional=functional,
        inputs=input_keys,
        outputs=output_keys,
        calls=flattener.calls,
        tensors=flattener.tensors,
        calls_of_layer=calls_of_layer,
    )
