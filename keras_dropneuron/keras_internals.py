"""Every private Keras API the library uses, in one place.

Keras 3 has no public way to walk a Functional graph, replay a call with its
arguments or list a layer's direct sublayers, so the surgeon and the reports
use the attributes below; the JAX training hooks of the callbacks use two
methods of Keras's JAX trainer and a variable's stored value (`bound_value`,
for BudgetCallback's scale). Tested with Keras 3.15.1 (TensorFlow 2.21); when a
Keras release moves one of them, this module is the one to change.
"""

import contextlib
from collections.abc import Callable, Iterator

import keras
from keras.src.models.functional import Functional  # no public alias exists

__all__ = [
    "Functional",
    "bound_value",
    "call_arguments",
    "compile_arguments",
    "functional_of",
    "input_name",
    "inputs_struct",
    "is_graph_model",
    "learning_rate_schedule",
    "lambda_output_shape",
    "make_train_function",
    "node_call_input",
    "node_keyword",
    "nodes_in_order",
    "outputs_struct",
    "state_sharding_spec",
    "sublayers",
    "takes_training",
]


def is_graph_model(obj: object) -> bool:
    """Whether `obj` is a Functional or Sequential model (an inspectable graph)."""
    return isinstance(obj, keras.Sequential | Functional)


def learning_rate_schedule(
    optimizer: keras.optimizers.Optimizer,
) -> keras.optimizers.schedules.LearningRateSchedule | None:
    """The schedule an optimizer was built with (its rate cannot be set), or `None`."""
    rate = optimizer._learning_rate
    return rate if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule) else None


def lambda_output_shape(layer: keras.layers.Lambda) -> object:
    """The `output_shape` argument a `Lambda` layer was made with."""
    return layer._output_shape


def compile_arguments(model: keras.Model) -> dict | None:
    """The arguments of the model's last `compile()` call, as live objects, or `None`."""
    arguments = getattr(getattr(model, "_compile_config", None), "config", None)
    return dict(arguments) if isinstance(arguments, dict) else None


def functional_of(model: keras.Model) -> Functional | None:
    """The Functional graph behind a model (`None` for an unbuilt Sequential)."""
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model


def nodes_in_order(functional: Functional) -> Iterator:
    """The nodes of a Functional graph, inputs first (by decreasing depth)."""
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        yield from functional._nodes_by_depth[depth]


def call_arguments(node: object, known: dict) -> tuple[tuple, dict]:
    """`(args, kwargs)` of a node's call with its input tensors replaced.

    Args:
        node: A Keras graph node.
        known: `id()` of each input KerasTensor -> the value to pass instead.
    """
    return node.arguments.fill_in(known)


def node_keyword(node: object, name: str) -> object:
    """The keyword argument `name` the node was called with (`None` if not given)."""
    return node.arguments.kwargs.get(name)


def node_call_input(node: object) -> object:
    """The first argument of the node's call, in the structure it was given."""
    if node.arguments.args:
        return node.arguments.args[0]
    return node.arguments.kwargs.get("inputs")


def input_name(tensor: keras.KerasTensor) -> str:
    """The name of the Input layer a model input KerasTensor comes from."""
    return tensor._keras_history.operation.name


def inputs_struct(functional: Functional) -> object:
    """The nested structure (list, dict, tensor) of a Functional's inputs."""
    return functional._inputs_struct


def outputs_struct(functional: Functional) -> object:
    """The nested structure (list, dict, tensor) of a Functional's outputs."""
    return functional._outputs_struct


def sublayers(
    layer: keras.layers.Layer, include_self: bool = False, recursive: bool = True
) -> list[keras.layers.Layer]:
    """The layers inside `layer` (nested models included when `recursive`)."""
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


def state_sharding_spec(model: keras.Model) -> object:
    """JAX: how Keras shards a model's training state under a distribution."""
    return model._get_state_sharding_spec()


def make_train_function(model: keras.Model, step: Callable) -> Callable:
    """JAX: Keras's wrapping of a train step into the model's `train_function`."""
    return model._make_function(step)


@contextlib.contextmanager
def bound_value(variable: keras.Variable, value: object) -> Iterator[None]:
    """JAX: within it, `variable` reads as `value` (e.g. a traced step argument).

    A variable outside the model's state is read as a constant when a step is
    traced; bound to the step's argument, a new value reaches the compiled
    step without retracing it.
    """
    saved = variable._value
    variable._value = value
    try:
        yield
    finally:
        variable._value = saved


def takes_training(layer: keras.layers.Layer) -> bool:
    """Whether Keras passes the `training` flag to `layer`'s `call()`."""
    if "training" not in getattr(layer, "_call_context_args", ()):
        return False
    return bool(getattr(layer, "_call_has_context_arg", {}).get("training", False))


def replace_sublayer(layer: keras.layers.Layer, attribute: str, new: keras.layers.Layer) -> None:
    """Sets `layer.<attribute> = new` and stops tracking the sublayer it held.

    Keras tracks a sublayer when it is assigned and never forgets it, so the
    old one's weights would stay in `layer.weights`. A built layer refuses new
    state: it is unlocked for the assignment (as Keras does to untrack a
    variable) and locked again.
    """
    old = getattr(layer, attribute)
    tracker = layer._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        setattr(layer, attribute, new)
    finally:
        if locked:
            tracker.lock()
    if old in layer._layers:
        layer._layers.remove(old)
