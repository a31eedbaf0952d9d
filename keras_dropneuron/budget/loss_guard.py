"""The controller's guard: the validation data loss may not depart far from its floor.

The loss Keras reports holds the penalties, which the controller makes grow
on purpose; what the user cares about is the rest, the data loss. At the end
of an epoch `val_loss` was computed on the epoch's final weights, so
`val_loss` less the DropNeuron penalties of those weights is exactly the
validation data loss. The training `loss` is a mean over an epoch in which
the weights and the penalties' scale changed, so nothing exact can be taken
from it: without validation data the guard measures nothing.
"""

import math

import keras
import numpy as np

from keras_dropneuron import _backend


def penalty_total(variables: list[keras.Variable]) -> float:
    """The DropNeuron penalties of `variables` as the train step adds them (scaled)."""
    total = 0.0
    for variable in variables:
        regularizer = getattr(variable, "regularizer", None)
        if regularizer is not None:
            total += float(np.asarray(keras.ops.convert_to_numpy(regularizer(variable.value))))
    return total


class LossGuard:
    """Says when the data loss has risen more than `tolerance` times above its floor.

    Args:
        tolerance: The allowed rise, a fraction of the floor (`1.0`: the
            data loss may double), or `None` to never object.

    Attributes:
        data_loss: The last data loss measured (NaN before any).
        floor: The lowest data loss measured in this `fit`.
        departed: Whether the last measure was above `(1 + tolerance) * floor`.
    """

    def __init__(self, tolerance: float | None):
        self.tolerance = tolerance
        self.reset()

    def reset(self) -> None:
        self.data_loss = math.nan
        self.floor = math.inf
        self.departed = False

    def update(self, model: keras.Model, variables: list, logs: dict | None) -> None:
        """Measures the data loss from the epoch's `logs` (see the module docstring)."""
        loss = (logs or {}).get("val_loss")
        if loss is None:
            return
        if not math.isfinite(float(loss)):
            self.departed = self.tolerance is not None
            return
        _backend.sync(model)
        self.data_loss = float(loss) - penalty_total(variables)
        self.floor = min(self.floor, self.data_loss)
        self.departed = self.tolerance is not None and self.data_loss > self.floor + (
            self.tolerance * abs(self.floor)
        )
