"""One variable that scales every DropNeuron penalty of a model during `fit`.

Keras computes a weight's penalty as `variable.regularizer(value)` in the
train step. `PenaltyScale.attach` wraps that attribute in a `ScaledPenalty`
(the layers' own regularizer attributes and configs stay as they are), so a
new strength is a new value of one variable, not a new train step: nothing
is retraced when it changes. On JAX the value is passed to the jitted step
as an argument (see `keras_dropneuron._backend`).
"""

import keras

from keras_dropneuron import _backend, keras_internals
from keras_dropneuron.masking import NextFitGuard, new_variable
from keras_dropneuron.regularizers import DROPNEURON_REGULARIZERS


def penalized_variables(model: keras.Model) -> list[keras.Variable]:
    """The weights of `model` whose regularizer is a DropNeuron penalty, each once.

    Args:
        model: A Keras model.

    Returns:
        The variables, in the order of `model.weights`.
    """
    found = {}
    for variable in model.weights:
        if isinstance(getattr(variable, "regularizer", None), DROPNEURON_REGULARIZERS):
            found[id(variable)] = variable
    return list(found.values())


class ScaledPenalty:
    """A weight's penalty times a scale: `regularizer(x) * scale`.

    Args:
        regularizer: The weight's own regularizer.
        scale: A scalar variable, read on every call.
    """

    def __init__(self, regularizer: keras.regularizers.Regularizer, scale: keras.Variable):
        self.regularizer = regularizer
        self.scale = scale

    def __call__(self, x):
        penalty = self.regularizer(x)
        return penalty * keras.ops.cast(self.scale, penalty.dtype)


class PenaltyScale:
    """Multiplies the DropNeuron penalties of a model by one variable while attached.

    Args:
        model: The model being trained.

    Example:

    >>> scale = PenaltyScale(model)
    >>> scale.attach(penalized_variables(model), 1.0)
    >>> scale.assign(2.0)  # the next train step counts every penalty twice
    >>> scale.detach()
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.variable = None
        self._wrapped = []
        self._hook = None
        self._guard = None

    def attach(self, variables: list[keras.Variable], value: float) -> None:
        """Scales the penalties of `variables` by a new variable holding `value`.

        Until `detach()`; a `fit` that raises before it leaves them scaled
        until the next training call, which detaches them first.
        """
        self.variable = new_variable(self.model, value, "float32", "dropneuron_penalty_scale")
        self._wrapped = [(variable, variable.regularizer) for variable in variables]
        for variable, regularizer in self._wrapped:
            variable.regularizer = ScaledPenalty(regularizer, self.variable)
        if _backend.backend() == "jax":
            self._hook = _ScaleHook(self.variable)
            _backend.add_step_hook(self.model, self._hook)
        self._guard = NextFitGuard(self.detach, self.model)

    def assign(self, value: float) -> None:
        """Sets the scale; the next train step reads it (a no-op before `attach`)."""
        if self.variable is not None:
            self.variable.assign(value)

    def detach(self) -> None:
        """Gives every weight its own regularizer back, unscaled."""
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.unlink()
        for variable, regularizer in reversed(self._wrapped):
            variable.regularizer = regularizer
        self._wrapped = []
        if self._hook is not None:
            _backend.remove_step_hook(self.model, self._hook)
            self._hook = None


class _ScaleHook(_backend.StepHook):
    """JAX: the scale variable's value is an argument of the jitted step."""

    def __init__(self, variable):
        self.variable = variable

    def inputs(self):
        return [self.variable.value]

    def bind(self, inputs):
        return keras_internals.bound_value(self.variable, inputs[0])

    def apply(self, trainable, optimizer_values, inputs):
        return trainable
