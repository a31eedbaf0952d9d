"""Unsupported inputs raise errors that name the argument."""

import keras
import numpy as np
import pytest

from keras_dropneuron.surgery import slim_model


def small_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_subclassed_model_rejected():
    model = Subclassed()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="argument `model`.*Functional.*Sequential"):
        slim_model(model)


def test_non_model_rejected():
    with pytest.raises(TypeError, match="argument `model`.*Received: model="):
        slim_model(keras.layers.Dense(2))


def test_unbuilt_sequential_rejected():
    with pytest.raises(ValueError, match="built Sequential"):
        slim_model(keras.Sequential([keras.layers.Dense(2)]))


_BAD_VALUE = "Invalid value for argument `threshold`: expected a finite float >= 0. "
_BAD_TYPE = "Invalid type for argument `threshold`: expected a float. "


@pytest.mark.parametrize(
    ("threshold", "error", "message"),
    [
        (-1, ValueError, _BAD_VALUE + "Received: threshold=-1"),
        (float("nan"), ValueError, _BAD_VALUE + "Received: threshold=nan"),
        (float("inf"), ValueError, _BAD_VALUE + "Received: threshold=inf"),
        ("0.1", TypeError, _BAD_TYPE + "Received: threshold='0.1' of type str"),
        (True, TypeError, _BAD_TYPE + "Received: threshold=True of type bool"),
    ],
)
def test_bad_threshold(threshold, error, message):
    with pytest.raises(error) as info:
        slim_model(small_model(), threshold=threshold)
    assert str(info.value) == message


class NoConfig(keras.layers.Layer):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w * self.factor


def test_weighted_layer_without_config_rejected():
    # Refused by name, not with a raw NotImplementedError from Keras.
    inputs = keras.Input((3,))
    model = keras.Model(inputs, NoConfig(2.0)(inputs))
    with pytest.raises(ValueError, match="Cannot copy layer 'no_config' of type NoConfig"):
        slim_model(model)


def test_threshold_counts_small_weights_as_zero():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    kernel = model.get_layer("out").kernel.numpy()
    kernel[1] = 1e-4
    model.get_layer("out").kernel.assign(kernel)
    assert slim_model(model).get_layer("hidden").units == 4
    assert slim_model(model, threshold=1e-3).get_layer("hidden").units == 3
