import keras
import numpy as np
import pytest

from keras_dropneuron.proximal import ProximalGroupShrinkage

L = keras.layers


def _shrink_numpy(w, amount, axis):
    """Block soft-thresholding of the groups indexed by `axis` (norm over the other)."""
    norms = np.linalg.norm(w, axis=1 - axis, keepdims=True)
    return w * np.maximum(0.0, 1.0 - amount / np.maximum(norms, 1e-12))


@pytest.mark.parametrize("jit_compile", [True, False])
def test_one_step_matches_block_soft_thresholding(jit_compile):
    model = keras.Sequential([keras.Input((6,)), L.Dense(4, name="h"), L.Dense(1, name="o")])
    h = model.get_layer("h")
    w = np.random.randn(6, 4).astype("float32")
    w[:, 2] *= 0.01  # a weak incoming group that the step must kill
    h.kernel.assign(w)
    lr, li, lo = 0.1, 0.5, 0.2

    def no_gradient(y_true, y_pred):  # SGD leaves the weights as they are
        return 0.0 * keras.ops.sum(y_pred)

    model.compile(keras.optimizers.SGD(lr), no_gradient, jit_compile=jit_compile)
    callback = ProximalGroupShrinkage(li=li, lo=lo, layers=["h"])
    x = np.random.randn(8, 6).astype("float32")
    model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    expected = _shrink_numpy(_shrink_numpy(w, lr * li, axis=1), lr * lo, axis=0)
    np.testing.assert_allclose(h.kernel.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert np.all(h.kernel.numpy()[:, 2] == 0)


def test_training_yields_exact_zero_groups_without_threshold():
    x = np.random.randn(256, 10).astype("float32")
    y = x[:, :1]
    model = keras.Sequential([keras.Input((10,)), L.Dense(8, name="h"), L.Dense(1, name="o")])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[ProximalGroupShrinkage(lo=2.0)])
    rows_alive = np.any(model.get_layer("h").kernel.numpy() != 0, axis=1)
    assert rows_alive[0]  # the informative input survives
    assert rows_alive.sum() < 10  # and uninformative inputs are exactly zero


def test_a_negative_strength_is_refused():
    with pytest.raises(ValueError, match="`li`"):
        ProximalGroupShrinkage(li=-1.0)


def test_config_round_trips_with_layers_by_name():
    layer = L.Dense(3, name="h")
    callback = ProximalGroupShrinkage(li=1e-3, lo=2e-3, layers=[layer, "o"])
    config = callback.get_config()
    assert config == {"li": 1e-3, "lo": 2e-3, "layers": ["h", "o"]}
    assert ProximalGroupShrinkage.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert type(restored) is ProximalGroupShrinkage and restored.get_config() == config


def test_layers_by_name_or_object_but_not_a_single_name():
    x = np.random.randn(8, 4).astype("float32")
    for pick in (lambda m: ["h"], lambda m: [m.get_layer("h")]):
        model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="h"), L.Dense(1, name="o")])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        shrink = ProximalGroupShrinkage(li=1e3, layers=pick(model))
        model.fit(x, x[:, :1], verbose=0, callbacks=[shrink])
        assert np.all(model.get_layer("h").kernel.numpy() == 0)  # shrunk to nothing
        assert np.any(model.get_layer("o").kernel.numpy() != 0)  # not selected
    with pytest.raises(TypeError, match=r"pass a list: layers=\['h'\]"):
        ProximalGroupShrinkage(li=1.0, layers="h")
