"""Checks that a slim model computes what its source computes.

Both models run on one batch; their outputs, and every tensor the two graphs
share (the source's with its removed channels sliced away), must agree
within a tolerance that follows from the lowest floating-point precision the
models compute in. Comparing inside the model makes the check independent of
what the last layer does: an argmax or a threshold at the end can hide a
small error in the logits on a few samples, never inside. The first layer
whose kept channels differ is named.
"""

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import ops, tree

from keras_dropneuron import keras_internals, layer_rules
from keras_dropneuron.surgery.batches import (
    input_list,
    is_float,
    packed,
    random_inputs,
    slice_inputs,
)

# Outputs are compared on a batch of 8 (`batches.random_inputs`); tensors inside
# the model, which hold every layer's activations at once, on the first 2 of them.
INSIDE_BATCH_SIZE = 2
_BFLOAT16_EPS = 2.0**-7  # numpy has no bfloat16 to ask

if TYPE_CHECKING:  # plan imports nothing from here: for annotations only
    from keras_dropneuron.surgery.plan import Plan


class SlimVerificationError(ValueError):
    """The slim model's outputs differ from the source model's.

    Attributes:
        deviation: Largest absolute output difference measured.
        tolerance: The largest difference that would have been accepted.
        layer: Name of the first layer whose output differs, or `None`.
    """

    def __init__(
        self, message: str, deviation: float, tolerance: float, layer: str | None = None
    ) -> None:
        super().__init__(message)
        self.deviation = deviation
        self.tolerance = tolerance
        self.layer = layer


def relative_tolerance(model: keras.Model) -> float:
    """`sqrt(eps)` of the least precise float dtype the model computes in.

    float64 gives 1.5e-8, float32 3.5e-4, float16 3.1e-2, bfloat16 8.8e-2. A
    difference is accepted when `|slim - source| <= tol * (1 + max|source|)`,
    the maximum taken over the output channel (see `_compare`).
    """
    dtypes = {str(t.dtype) for t in model.outputs}
    for layer in keras_internals.sublayers(model):
        dtypes.add(str(getattr(layer, "compute_dtype", "float32")))
    eps = [_BFLOAT16_EPS if d == "bfloat16" else np.finfo(d).eps for d in dtypes if is_float(d)]
    return float(np.sqrt(max(eps, default=np.finfo(np.float32).eps)))


def _call(model, data):
    # No `training` argument: an explicit `training=True` inside the graph then
    # applies, as in `model(x)`; a call with `training=False` would override it.
    outputs = model(packed(model, data))
    return [np.asarray(ops.convert_to_numpy(y)) for y in tree.flatten(outputs)]


def _compare(reference, candidate, tolerance):
    """Compares outputs channel by channel.

    Each output channel (last axis) is held to `tolerance * (1 + max|reference|)`
    over that channel, so a channel of large values cannot hide an error in a
    channel of small ones.

    Returns:
        `(deviation, failure)`: the largest absolute difference, and for the
        worst channel over its limit `(difference, limit)`, else `None`.
    """
    deviation, failure, worst_ratio = 0.0, None, 1.0
    for a, b in zip(reference, candidate, strict=True):
        a, b = np.atleast_1d(a).astype(np.float64), np.atleast_1d(b).astype(np.float64)
        if a.shape != b.shape:
            return np.inf, (np.inf, 0.0)
        if a.size == 0:  # an empty tensor (a zero-width slice) holds nothing to differ
            continue
        diff = np.nan_to_num(np.abs(a - b), nan=np.inf)
        scale = np.abs(a).reshape(-1, a.shape[-1]).max(axis=0) if a.ndim > 1 else np.abs(a)
        limit = np.broadcast_to(tolerance * (1.0 + scale), a.shape)
        ratio = diff / limit
        deviation = max(deviation, float(diff.max()))
        worst = int(np.argmax(ratio))
        if ratio.flat[worst] > worst_ratio:
            worst_ratio = ratio.flat[worst]
            failure = (float(diff.flat[worst]), float(limit.flat[worst]))
    return deviation, failure


class _RestoredState:
    """Gives both models back their non-trainable state after verification.

    Running a model can change it: a BatchNormalization in training mode
    updates its moving statistics, a calibration layer its running maximum,
    a Dropout its random seed. Verification must leave the user's model (and
    the slim copy) as they were.
    """

    def __init__(self, models):
        self.variables = [v for model in models for v in model.non_trainable_variables]

    def __enter__(self):
        self.values = [np.array(ops.convert_to_numpy(v)) for v in self.variables]
        return self

    def __exit__(self, *exc):
        for variable, value in zip(self.variables, self.values, strict=True):
            variable.assign(value)


def _recurrent_states(layer: keras.layers.Layer) -> list:
    """The hidden-state variables of the stateful recurrent layers in `layer`."""
    states = []
    if not isinstance(layer, keras.layers.Layer):  # an op called in the graph
        return states
    for sub in keras_internals.sublayers(layer, include_self=True):
        if getattr(sub, "stateful", False) and getattr(sub, "states", None) is not None:
            states.extend(tree.flatten(sub.states))
    return states


class _HiddenStates:
    """The hidden states of stateful recurrent layers, which every call moves on.

    They are not among a layer's variables. Each model run of the
    verification starts from the source model's states as they were (`rewind`),
    in both models; afterwards both hold them: the user's model has not moved,
    and the slim model goes on from where the source model stands.
    """

    def __init__(self, plan: "Plan", slim: keras.Model) -> None:
        self.source, self.slim = [], []
        seen = set()
        for call in plan.graph.calls:
            states = _recurrent_states(call.layer)
            if not states or id(call.layer) in seen:
                continue
            seen.add(id(call.layer))
            # Stateful layers are kept whole, so their states match one to one.
            self.source.extend(states)
            self.slim.extend(_recurrent_states(slim.get_layer(call.name)))

    def __enter__(self) -> "_HiddenStates":
        self.values = [np.array(ops.convert_to_numpy(v)) for v in self.source]
        self.rewind()
        return self

    def rewind(self) -> None:
        for variables in (self.source, self.slim):
            for variable, value in zip(variables, self.values, strict=True):
                variable.assign(value)

    def __exit__(self, *exc) -> None:
        self.rewind()


class _Replay(keras.layers.Layer):
    """Runs the flattened source graph call by call inside one outer call.

    Being one layer call, it shares Keras's call context with the layers it
    runs, so an explicit `training=True` reaches later layers as in `model(x)`.
    """

    def __init__(self, graph):
        super().__init__(dtype=None)
        self.graph = graph
        self.values = {}

    def call(self, inputs):
        graph = self.graph
        values = dict(zip(graph.inputs, inputs, strict=True))
        for call in graph.calls:
            known = {
                raw: values[key] for raw, key in zip(call.raw_inputs, call.inputs, strict=True)
            }
            args, kwargs = call.arguments(known)
            values.update(
                zip(call.outputs, tree.flatten(call.layer(*args, **kwargs)), strict=True)
            )
        self.values = values
        return inputs[0]


def _source_values(plan: "Plan", data: list[np.ndarray]) -> dict:
    """Every tensor of the flattened source graph on `data`, as numpy arrays."""
    replay = _Replay(plan.graph)
    replay([ops.convert_to_tensor(x) for x in data])
    return {key: np.asarray(ops.convert_to_numpy(v)) for key, v in replay.values.items()}


def _shared_keys(plan: "Plan", new_tensors: dict) -> list:
    """Keys of the source's call outputs that the slim graph also holds, in call order."""
    return [key for call in plan.graph.calls for key in call.outputs if key in new_tensors]


def _kept_part(plan: "Plan", key: object, value: np.ndarray) -> np.ndarray:
    """`value` of source tensor `key` without the channels the slim model removed."""
    kept = plan.kept.get(key)
    shape = plan.graph.tensors[key].shape
    # Only a channel axis loses entries (not the batch axis of an argmax's output).
    if len(shape) < 2 or shape[-1] is None or kept is None or len(kept) == shape[-1]:
        return value
    return value[..., kept]


def first_difference(
    plan: "Plan",
    new_tensors: dict,
    slim: keras.Model,
    data: list[np.ndarray],
    tolerance: float,
    rewind: Callable[[], None] = lambda: None,
) -> tuple[str | None, tuple | None]:
    """The first call whose kept output channels differ, and by how much.

    Every tensor both graphs share is compared, the source's with the
    removed channels sliced away. `rewind` runs before each model run.

    Returns:
        `(layer name, (difference, limit))`, or `(None, None)`.
    """
    keys = _shared_keys(plan, new_tensors)
    probe = keras.Model(slim.inputs, [new_tensors[key] for key in keys])
    rewind()
    slim_values = dict(zip(keys, _call(probe, slice_inputs(plan, data)), strict=True))
    rewind()
    source_values = _source_values(plan, data)
    for call in plan.graph.calls:
        for key in call.outputs:
            if key not in slim_values:
                continue
            source = _kept_part(plan, key, source_values[key])
            failure = _compare([source], [slim_values[key]], tolerance)[1]
            if failure is not None:
                return call.name, failure
    return None, None


def _batch_is_free(model: keras.Model) -> bool:
    """Whether `model` takes batches of any size (a stateful RNN fixes it)."""
    return all(tensor.shape[0] is None for tensor in model.inputs)


def _is_random(plan: "Plan", data: list[np.ndarray], tolerance: float, rewind) -> bool:
    """Whether two runs of the source graph on `data` differ anywhere (a random layer)."""
    rewind()
    first = _source_values(plan, data)
    rewind()
    second = _source_values(plan, data)
    return any(
        _compare([first[key]], [second[key]], tolerance)[1] is not None
        for key in first
        if key not in plan.graph.inputs
    )


def _finite_reference(source, verify_inputs, rewind):
    """A batch on which `source` outputs only finite values, and those outputs.

    Random data is standard normal first, then uniform in [0, 1) for models
    that take square roots or logarithms of their inputs.

    Raises:
        ValueError: If no such batch is found: NaN outputs would agree with
            anything, so nothing would be verified.
    """
    if verify_inputs is not None:
        candidates = [input_list(source, verify_inputs)]
    else:
        candidates = [random_inputs(source), random_inputs(source, positive=True)]
    for data in candidates:
        rewind()
        reference = _call(source, data)
        if all(np.all(np.isfinite(y)) for y in reference if is_float(str(y.dtype))):
            return data, reference
    where = "on `verify_inputs`" if verify_inputs is not None else "on random data"
    raise ValueError(
        f"Cannot verify the slim model of {source.name!r}: the model outputs NaN or "
        f"infinite values {where}, which would agree with anything. Pass "
        "`verify_inputs=` (a batch on which its outputs are finite) or `verify=False`."
    )


def _culprit(plan: "Plan") -> str:
    """Who to tell: the rules registered with `register_rule`, else the library."""
    custom = sorted(
        {
            type(call.layer).__name__
            for call, rule in zip(plan.graph.calls, plan.rules, strict=True)
            if layer_rules.is_user_rule(rule)
        }
    )
    if custom:
        return (
            "The model has layers with rules registered by `register_rule` "
            f"({', '.join(custom)}): check that each rule describes what its layer's "
            "call() computes; otherwise this is a bug in keras-dropneuron, please report it."
        )
    return "This is a bug in keras-dropneuron; please report it with the model."


def verify(
    plan: "Plan",
    new_tensors: dict,
    source: keras.Model,
    slim: keras.Model,
    verify_inputs: np.ndarray | list | tuple | dict | None = None,
    strict: bool = True,
) -> tuple[float | None, float | None]:
    """Runs both models on one batch and raises if they differ.

    Args:
        plan: The `Plan` the slim model was built from.
        new_tensors: Source tensor key -> the slim model's KerasTensor.
        source: The source model.
        slim: The slim model.
        verify_inputs: A batch for `source`, or `None` for random data.
        strict: Whether a difference is an error; `False` only measures it
            (for results that are approximate by request).

    Returns:
        `(deviation, tolerance)`: the largest absolute output difference and
        the relative tolerance (see `relative_tolerance`); `(None, None)` when
        the source model is not deterministic and cannot be verified.

    Raises:
        SlimVerificationError: If the outputs differ beyond the tolerance.
        ValueError: If the source model's outputs are not finite on the
            verification batch.
    """
    tolerance = relative_tolerance(source)
    with _RestoredState([source, slim]), _HiddenStates(plan, slim) as states:
        data, reference = _finite_reference(source, verify_inputs, states.rewind)
        states.rewind()
        candidate = _call(slim, slice_inputs(plan, data))
        deviation, failure = _compare(reference, candidate, tolerance)
        if not strict:
            return deviation, tolerance
        # Inside the model on a few samples (a fixed batch size is kept whole).
        inside = [x[:INSIDE_BATCH_SIZE] for x in data] if _batch_is_free(source) else data
        layer, inside_failure = first_difference(
            plan, new_tensors, slim, inside, tolerance, states.rewind
        )
        if failure is None and layer is None:
            return deviation, tolerance
        if _is_random(plan, inside, tolerance, states.rewind):
            warnings.warn(
                f"slim_model could not verify model {source.name!r}: its outputs "
                "change from one call to the next on the same data (a random "
                "layer at inference, such as Dropout(training=True)). The slim "
                "model was built from the same exact analysis but is unverified.",
                stacklevel=3,
            )
            return None, None
    what = "an output"
    if failure is None:  # the outputs agree, a tensor inside does not
        failure, what = inside_failure, f"the output of layer {layer!r}"
    where = (
        f" The first layer whose output differs is {layer!r}."
        if layer
        else " No single layer's output could be singled out."
    )
    difference, limit = failure
    raise SlimVerificationError(
        f"The slim model of {source.name!r} does not compute the same function: "
        f"{what} differs by {difference:.3g} on a verification batch, above the "
        f"{limit:.3g} allowed there (largest output difference {deviation:.3g}).{where} "
        f"{_culprit(plan)} Pass `verify=False` to get the unverified model anyway.",
        deviation=deviation,
        tolerance=limit,
        layer=layer,
    )


def verify_outputs(
    source: keras.Model, candidate: keras.Model, data: list[np.ndarray] | None = None
) -> float:
    """Raises unless `candidate` gives `source`'s outputs on one batch.

    For a slim model re-created as another class from one already verified
    inside (a keras-hub model): the layers are the same, so the outputs tell.

    Args:
        source: The source model.
        candidate: The model to check; it takes the same inputs.
        data: One array per input of `source`, or `None` for random data.

    Returns:
        The largest absolute output difference.

    Raises:
        SlimVerificationError: If the outputs differ beyond the tolerance.
    """
    tolerance = relative_tolerance(source)
    data = random_inputs(source) if data is None else data
    with _RestoredState([source, candidate]):
        deviation, failure = _compare(_call(source, data), _call(candidate, data), tolerance)
    if failure is not None:
        raise SlimVerificationError(
            f"The slim model of {source.name!r}, re-created as {type(candidate).__name__}, "
            f"does not compute the same function: an output differs by {failure[0]:.3g}, "
            f'above the {failure[1]:.3g} allowed. Pass `widths="per_layer"` for the '
            "verified Functional model.",
            deviation=deviation,
            tolerance=failure[1],
        )
    return deviation
