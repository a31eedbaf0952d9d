"""The controller's guard: the data loss may not depart far from its floor.

The loss Keras reports holds the penalties, which the controller makes grow
on purpose; what the user cares about is the rest, the data loss. The guard
measures it itself, at the end of every epoch, on data it is given: the
model's predictions scored with its compiled loss, no penalty included. (The
`val_loss` of the logs holds the penalties, and on JAX at the scale its test
step was traced with, so nothing exact can be taken from it.)
"""

import math

import keras
import numpy as np

from keras_dropneuron import _backend


def data_loss(model: keras.Model, x: object, y: np.ndarray, batch_size: int) -> float:
    """The mean of `model`'s compiled loss on `(x, y)`, without any penalty."""
    predictions = model.predict(x, batch_size=batch_size, verbose=0)
    loss = keras.losses.get(model.loss)
    values = keras.ops.convert_to_numpy(loss(keras.ops.convert_to_tensor(y), predictions))
    return float(np.mean(values))


class LossGuard:
    """Says when the data loss has risen more than `tolerance` times above its floor.

    Args:
        tolerance: The allowed rise, a fraction of the floor (`1.0`: the
            data loss may double), or `None` to never object.
        data: `(x, y)` to measure the data loss on, or `None`: nothing is
            measured and the guard never objects.
        batch_size: Batch size of the measuring `predict`.

    Attributes:
        data_loss: The last data loss measured (NaN before any).
        floor: The lowest data loss measured in this `fit`.
        departed: Whether the last measure was above `(1 + tolerance) * floor`.
    """

    def __init__(self, tolerance: float | None, data: tuple | None, batch_size: int = 256):
        self.tolerance = tolerance
        self.data = data
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        self.data_loss = math.nan
        self.floor = math.inf
        self.departed = False

    def update(self, model: keras.Model) -> None:
        """Measures the data loss (see the module docstring) and judges it."""
        if self.data is None or self.tolerance is None or model.loss is None:
            return
        _backend.sync(model)  # JAX: the epoch's weights into the variables
        self.data_loss = data_loss(model, *self.data, self.batch_size)
        if not math.isfinite(self.data_loss):
            self.departed = True
            return
        self.floor = min(self.floor, self.data_loss)
        self.departed = self.data_loss > self.floor + self.tolerance * abs(self.floor)
