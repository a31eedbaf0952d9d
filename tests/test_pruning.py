import keras
import numpy as np
import pytest
from shared_layers import shared_with_nested_model

from keras_dropneuron import prune_weights

L = keras.layers


def _model():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(4, 3, name="conv"),
            L.Flatten(),
            L.Dense(5, name="fc"),
            L.LayerNormalization(),
            L.Dense(3, name="out"),
        ]
    )


def test_weight_mode_matches_numpy_threshold():
    model = _model()
    before = {layer.name: np.asarray(layer.kernel.numpy()) for layer in model.layers[::2]}
    threshold = 0.1
    counts = prune_weights(model, threshold)
    expected_pruned = expected_zeros = total = 0
    for name, w in before.items():
        expected = np.where(np.abs(w) < threshold, 0.0, w)
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), expected)
        expected_pruned += int(np.sum((np.abs(w) < threshold) & (w != 0)))
        expected_zeros += int(np.sum(expected == 0))
        total += w.size
    assert counts == {"pruned": expected_pruned, "zeros": expected_zeros, "total": total}
    # Biases are never pruned.
    assert np.all(model.get_layer("fc").bias.numpy() == 0)  # zeros-initialised, untouched


def test_incoming_mode_zeroes_whole_columns_below_threshold():
    model = _model()
    w = np.random.randn(5, 3).astype("float32")
    w[:, 1] *= 0.01  # column norm well below 0.5
    model.get_layer("out").kernel.assign(w)
    prune_weights(model, 0.5, mode="incoming", layers=["out"])
    norms = np.linalg.norm(w, axis=0)
    expected = w * (norms >= 0.5)[None, :]
    np.testing.assert_array_equal(model.get_layer("out").kernel.numpy(), expected)
    assert np.all(model.get_layer("out").kernel.numpy()[:, 1] == 0)


def test_outgoing_and_neuron_modes_on_conv_channels():
    model = _model()
    w = np.random.randn(3, 3, 2, 4).astype("float32")
    w[:, :, 0, :] *= 1e-3  # input channel 0 sends almost nothing
    w[..., 2] *= 1e-3  # filter 2 receives almost nothing
    conv = model.get_layer("conv")
    conv.kernel.assign(w)
    prune_weights(model, 0.05, mode="outgoing", layers=["conv"])
    out_norms = np.sqrt((w.astype("float64") ** 2).sum(axis=(0, 1, 3)))
    np.testing.assert_array_equal(conv.kernel.numpy(), w * (out_norms >= 0.05)[:, None])
    conv.kernel.assign(w)
    prune_weights(model, 0.05, mode="neuron", layers=["conv"])
    in_norms = np.sqrt((w.astype("float64") ** 2).sum(axis=(0, 1, 2)))
    keep = (out_norms >= 0.05)[:, None] & (in_norms >= 0.05)[None, :]
    np.testing.assert_array_equal(conv.kernel.numpy(), w * keep)
    assert np.all(conv.kernel.numpy()[..., 2] == 0) and np.all(conv.kernel.numpy()[:, :, 0] == 0)


def test_nan_weights_raise_and_leave_model_unchanged():
    model = _model()
    w = np.asarray(model.get_layer("out").kernel.numpy()).copy()
    w[0, 0] = np.nan
    model.get_layer("out").kernel.assign(w)
    before = [v.copy() for v in model.get_weights()]
    with pytest.raises(ValueError, match="'out'.*NaN"):
        prune_weights(model, 0.1)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"threshold": -0.1}, ValueError, "`threshold`.*threshold=-0.1"),
        ({"threshold": float("nan")}, ValueError, "`threshold`"),
        ({"threshold": "0.1"}, TypeError, "`threshold`"),
        ({"threshold": 0.1, "mode": "rows"}, ValueError, "`mode`.*'rows'"),
        ({"threshold": 0.1, "layers": ["missing"]}, ValueError, "'missing' is not a layer"),
        ({"threshold": 0.1, "layers": "fc"}, TypeError, "`layers`"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    model = _model()
    before = [v.copy() for v in model.get_weights()]
    with pytest.raises(error, match=match):
        prune_weights(model, **kwargs)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unbuilt_model_is_refused():
    with pytest.raises(ValueError, match="not built"):
        prune_weights(keras.Sequential([L.Dense(2)]), 0.1)


def test_layer_shared_with_a_nested_model_is_pruned_and_counted_once():
    model = shared_with_nested_model()
    kernels = [np.asarray(model.get_layer(n).kernel.numpy()) for n in ("shared", "out")]
    counts = prune_weights(model, 0.2)
    # Glorot weights: some of each kernel is below 0.2, none is zero yet.
    expected = sum(int(np.sum(np.abs(k) < 0.2)) for k in kernels)
    assert counts == {"pruned": expected, "zeros": expected, "total": 32 + 8}


def test_empty_layer_list_names_the_layers_argument():
    model = _model()
    with pytest.raises(ValueError, match=r"`layers`.*non-empty.*Received: layers=\[\]"):
        prune_weights(model, 0.1, layers=[])


def test_half_precision_weights_are_compared_with_the_threshold_exactly():
    # float16 holds 0.05 as 0.04998779, which is below 0.05: pruned. Compared in
    # float16 the threshold would round to the same value and keep it.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, dtype="float16")])
    kernel = model.layers[0].kernel
    kernel.assign(np.array([[0.05, -0.05], [0.06, 0.5]], "float16"))
    counts = prune_weights(model, 0.05)
    assert counts["pruned"] == 2
    np.testing.assert_array_equal(
        np.asarray(kernel.numpy()), np.array([[0, 0], [0.06, 0.5]], "float16")
    )
