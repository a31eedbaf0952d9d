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


def _kill_half_the_blocks(model, blocks, kill, units=8):
    """Half the blocks lose `units` hidden units; returns how many died."""
    for b in range(0, blocks, 2):
        kill.incoming(model.get_layer(f"b{b}_up"), list(range(units)), bias=0.0)
    return units * len(range(0, blocks, 2))


def _peak_bytes(model):
    """The peak Python memory (tracemalloc) of `slim_model(model)`, and the slim model.

    A small model is slimmed first, so that one-off costs of the backend (the
    first traced verification, caches) are not counted.
    """
    slim_model(_deep_residual_mlp(2))
    tracemalloc.start()
    slim = slim_model(model)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, slim


def test_several_hundred_layers_with_many_merges_stay_exact(assert_equivalent, kill):
    blocks = 100
    model = _deep_residual_mlp(blocks)
    assert len(model.layers) == 2 + 3 * blocks + 1
    dead = _kill_half_the_blocks(model, blocks, kill)
    peak, slim = _peak_bytes(model)
    # Each dead hidden unit takes its column + bias in `up` and its row in `down`.
    assert slim.count_params() == model.count_params() - dead * (16 + 1 + 16)
    assert_equivalent(model, slim)
    # With 303 small layers the peak is the per-layer bookkeeping (graph, plan,
    # configs): about 17x the weights on every backend. Twice that catches a
    # surgeon whose memory per layer grows.
    weight_bytes = sum(w.nbytes for w in model.get_weights())
    assert peak < 35 * weight_bytes, f"{peak / weight_bytes:.1f}x the weights"


def test_slim_model_holds_about_one_copy_of_large_weights(kill):
    blocks = 20
    model = _deep_residual_mlp(blocks, width=128, hidden=256)
    _kill_half_the_blocks(model, blocks, kill)
    peak, slim = _peak_bytes(model)
    assert slim.count_params() < model.count_params()
    # With large weights the peak is the sliced copy of the weights and little
    # else: about 2x the original weights on every backend. 4x catches a
    # surgeon that holds two more copies of them.
    weight_bytes = sum(w.nbytes for w in model.get_weights())
    assert peak < 4 * weight_bytes, f"{peak / weight_bytes:.1f}x the weights"


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
