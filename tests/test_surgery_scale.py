"""slim_model at scale: hundreds of layers with many merges, and mixed precision."""

import tracemalloc

import keras
import numpy as np
import pytest

from keras_dropneuron import slim_model

L = keras.layers


def _deep_residual_mlp(blocks, width=16, hidden=32):
    """`blocks` residual blocks x + Dense(Dense(x)), 3 layers each, all merged by Add."""
    inputs = keras.Input((width,))
    x = L.Dense(width, name="stem")(inputs)
    for b in range(blocks):
        h = L.Dense(hidden, activation="relu", name=f"b{b}_up")(x)
        h = L.Dense(width, name=f"b{b}_down")(h)
        x = L.Add(name=f"b{b}_add")([x, h])
    return keras.Model(inputs, L.Dense(4, name="head")(x))


def test_several_hundred_layers_with_many_merges_stay_exact(assert_equivalent, kill):
    blocks = 100
    model = _deep_residual_mlp(blocks)
    assert len(model.layers) == 2 + 3 * blocks + 1
    dead = 0
    for b in range(0, blocks, 2):  # half the blocks lose 8 of their 32 hidden units
        kill.incoming(model.get_layer(f"b{b}_up"), list(range(8)), bias=0.0)
        dead += 8
    weight_bytes = sum(w.nbytes for w in model.get_weights())
    tracemalloc.start()
    slim = slim_model(model)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Each dead hidden unit takes its column + bias in `up` and its row in `down`.
    assert slim.count_params() == model.count_params() - dead * (16 + 1 + 16)
    assert_equivalent(model, slim)
    print(f"slim_model peak Python memory: {peak / weight_bytes:.1f}x the weights")
    assert peak < 50 * weight_bytes + 50e6  # a generous bound on NumPy copies


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_slim_model_keeps_the_dtype_policy(policy, kill):
    keras.config.set_dtype_policy(policy)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Flatten()(x)
    outputs = L.Dense(3, name="head", dtype="float32")(L.Dense(5, name="fc")(x))
    model = keras.Model(inputs, outputs)
    # Flatten maps filter c to the rows p * 6 + c of `fc`: drop filters 0 and 1.
    kill.outgoing(model.get_layer("fc"), [p * 6 + c for p in range(36) for c in (0, 1)])
    slim = slim_model(model)
    for layer in slim.layers:
        assert layer.dtype_policy.name == model.get_layer(layer.name).dtype_policy.name
    assert slim.get_layer("conv").filters == 4
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype("float32")
    expected = np.asarray(model(x), dtype="float32")
    np.testing.assert_allclose(np.asarray(slim(x), dtype="float32"), expected, atol=5e-2)
