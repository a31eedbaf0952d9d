"""Models whose layers appear more than once when nested models are walked."""

import keras

L = keras.layers


def shared_with_nested_model(constraint=None):
    """`shared` (8 -> 4, 32 weights) is a layer of the outer model and of `inner`.

    The outer model is `Add(shared(x), inner(x)) -> out` (`out`: 4 -> 2, 8 weights).
    """
    shared = L.Dense(4, name="shared", kernel_constraint=constraint)
    inner_inputs = keras.Input((8,))
    inner = keras.Model(inner_inputs, shared(inner_inputs), name="inner")
    inputs = keras.Input((8,))
    merged = L.Add()([shared(inputs), inner(inputs)])
    return keras.Model(inputs, L.Dense(2, name="out")(merged))
