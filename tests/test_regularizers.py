import math

import keras
import numpy as np
import pytest
from backend_utils import to_numpy, value_and_grad

from keras_dropneuron import (
    DropNeuronRegularizer,
    LiRegularizer,
    LoRegularizer,
    regularize_model,
)

L = keras.layers


def li_numpy(w, out_axes):
    """Sum of the norms of the incoming groups, one per output unit."""
    w = np.moveaxis(w, out_axes, list(range(-len(out_axes), 0)))
    units = w.shape[-len(out_axes) :]
    return sum(np.linalg.norm(w[(..., *idx)]) for idx in np.ndindex(*units))


def lo_numpy(w, in_axis):
    return sum(np.linalg.norm(np.take(w, i, axis=in_axis)) for i in range(w.shape[in_axis]))


def test_li_dense_matches_formula():
    w = np.random.randn(5, 3).astype("float32")
    expected = 0.1 * sum(np.sqrt(np.sum(w[:, j] ** 2)) for j in range(3))
    np.testing.assert_allclose(LiRegularizer(0.1)(w), expected, rtol=1e-6)


def test_lo_dense_matches_formula():
    w = np.random.randn(5, 3).astype("float32")
    expected = 0.1 * sum(np.sqrt(np.sum(w[i, :] ** 2)) for i in range(5))
    np.testing.assert_allclose(LoRegularizer(0.1)(w), expected, rtol=1e-6)


def test_conv_kernel_groups_follow_filters_and_channels():
    w = np.random.randn(3, 3, 4, 6).astype("float32")
    np.testing.assert_allclose(
        LiRegularizer(1.0)(w), sum(np.linalg.norm(w[..., j]) for j in range(6)), rtol=1e-5
    )
    np.testing.assert_allclose(
        LoRegularizer(1.0)(w), sum(np.linalg.norm(w[..., i, :]) for i in range(4)), rtol=1e-5
    )


def test_scale_by_group_size_multiplies_by_sqrt_of_group_size():
    w = np.random.randn(3, 3, 4, 6).astype("float32")
    plain = float(LiRegularizer(1.0)(w))
    scaled = float(LiRegularizer(1.0, scale_by_group_size=True)(w))
    np.testing.assert_allclose(scaled, plain * math.sqrt(3 * 3 * 4), rtol=1e-6)
    scaled_lo = float(LoRegularizer(1.0, scale_by_group_size=True)(w))
    np.testing.assert_allclose(scaled_lo, float(LoRegularizer(1.0)(w)) * math.sqrt(54), rtol=1e-6)


def test_combined_regularizer_is_the_sum_of_eq_10():
    w = np.random.randn(6, 4).astype("float32")
    reg = DropNeuronRegularizer(li=0.3, lo=0.2, l1=0.1, l2=0.05)
    expected = (
        0.1 * np.abs(w).sum()
        + 0.05 * np.square(w).sum()
        + 0.3 * li_numpy(w, [-1])
        + 0.2 * lo_numpy(w, 0)
    )
    np.testing.assert_allclose(reg(w), expected, rtol=1e-5)


# Each case: a layer, the input shape, and numpy formulas for Li and Lo written
# from the layer's meaning (which axis is an input unit, which an output unit).
LAYER_CASES = {
    "dense": (L.Dense(4), (6,), lambda w: li_numpy(w, [-1]), lambda w: lo_numpy(w, 0)),
    "conv1d": (L.Conv1D(4, 3), (9, 3), lambda w: li_numpy(w, [-1]), lambda w: lo_numpy(w, 1)),
    "conv2d": (L.Conv2D(4, 3), (8, 8, 3), lambda w: li_numpy(w, [-1]), lambda w: lo_numpy(w, 2)),
    "conv3d": (
        L.Conv3D(4, 2),
        (5, 5, 5, 3),
        lambda w: li_numpy(w, [-1]),
        lambda w: lo_numpy(w, 3),
    ),
    # Transposed kernels are (*k, out, in): output unit j is w[..., j, :].
    "conv1d_transpose": (
        L.Conv1DTranspose(4, 3),
        (9, 3),
        lambda w: li_numpy(w, [-2]),
        lambda w: lo_numpy(w, 2),
    ),
    "conv2d_transpose": (
        L.Conv2DTranspose(4, 3),
        (8, 8, 3),
        lambda w: li_numpy(w, [-2]),
        lambda w: lo_numpy(w, 3),
    ),
    "conv3d_transpose": (
        L.Conv3DTranspose(4, 2),
        (5, 5, 5, 3),
        lambda w: li_numpy(w, [-2]),
        lambda w: lo_numpy(w, 4),
    ),
    # Depthwise kernels are (*k, in, mult): output channel (i, m) is w[..., i, m].
    "depthwise_conv1d": (
        L.DepthwiseConv1D(3, depth_multiplier=2),
        (9, 3),
        lambda w: li_numpy(w, [-2, -1]),
        lambda w: lo_numpy(w, 1),
    ),
    "depthwise_conv2d": (
        L.DepthwiseConv2D(3, depth_multiplier=2),
        (8, 8, 3),
        lambda w: li_numpy(w, [-2, -1]),
        lambda w: lo_numpy(w, 2),
    ),
    "embedding": (
        L.Embedding(10, 4),
        (7,),
        lambda w: li_numpy(w, [-1]),
        lambda w: lo_numpy(w, 0),
    ),
}


def _model_with(layer, input_shape):
    dtype = "int32" if isinstance(layer, L.Embedding) else "float32"
    inputs = keras.Input(input_shape, dtype=dtype)
    return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_regularize_model_orients_groups_for_every_layer_type(case):
    layer, shape, li_formula, lo_formula = LAYER_CASES[case]
    layer = layer.__class__.from_config(layer.get_config())  # fresh, unbuilt copy
    model = _model_with(layer, shape)
    w = np.asarray(model.layers[-1].weights[0].numpy())
    for li, lo in ((0.3, 0.0), (0.0, 0.7)):
        regularized = regularize_model(model, li=li, lo=lo)
        expected = li * li_formula(w) + lo * lo_formula(w)
        np.testing.assert_allclose(float(to_numpy(sum(regularized.losses))), expected, rtol=1e-5)


@pytest.mark.parametrize("cls", [L.SeparableConv1D, L.SeparableConv2D])
def test_separable_conv_regularizes_both_kernels(cls):
    shape = (9, 3) if cls is L.SeparableConv1D else (8, 8, 3)
    model = _model_with(cls(5, 3, depth_multiplier=2), shape)
    layer = model.layers[-1]
    dw = np.asarray(layer.depthwise_kernel.numpy())
    pw = np.asarray(layer.pointwise_kernel.numpy())
    regularized = regularize_model(model, li=0.5, lo=0.25)
    expected = 0.5 * (li_numpy(dw, [-2, -1]) + li_numpy(pw, [-1])) + 0.25 * (
        lo_numpy(dw, dw.ndim - 2) + lo_numpy(pw, pw.ndim - 2)
    )
    np.testing.assert_allclose(float(to_numpy(sum(regularized.losses))), expected, rtol=1e-5)


def test_regularize_model_leaves_input_model_untouched_and_copies_weights():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)])
    before = [w.copy() for w in model.get_weights()]
    regularized = regularize_model(model, li=1e-3, lo=1e-3)
    assert model.losses == []
    assert all(layer.kernel_regularizer is None for layer in model.layers)
    for a, b, c in zip(before, model.get_weights(), regularized.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert len(regularized.losses) == 2


def test_regularize_model_nested_and_selected_layers():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="inner_dense")], name="inner")
    inputs = keras.Input((4,))
    outputs = L.Dense(2, name="head")(inner(inputs))
    model = keras.Model(inputs, outputs)
    regularized = regularize_model(model, li=0.1, layers=["inner_dense"])
    w = np.asarray(model.get_layer("inner").get_layer("inner_dense").kernel.numpy())
    assert len(regularized.losses) == 1
    np.testing.assert_allclose(
        float(to_numpy(regularized.losses[0])), 0.1 * li_numpy(w, [-1]), rtol=1e-5
    )


def test_gradient_is_finite_and_zero_at_dead_groups():
    w = np.random.randn(4, 3).astype("float32")
    w[:, 1] = 0.0  # a dead incoming group
    w[2, :] = 0.0  # a dead outgoing group
    reg = DropNeuronRegularizer(li=1.0, lo=1.0)
    _, grad = value_and_grad(reg, w)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[:, 1], 0.0)
    np.testing.assert_array_equal(grad[2, :], 0.0)
    # Alive entries get d/dw of both norms: w / ||col|| + w / ||row||.
    i, j = 0, 0
    expected = w[i, j] / np.linalg.norm(w[:, j]) + w[i, j] / np.linalg.norm(w[i, :])
    np.testing.assert_allclose(grad[i, j], expected, rtol=1e-5)
    loss, grad = value_and_grad(reg, np.zeros((4, 3), "float32"))
    assert loss == 0.0
    np.testing.assert_array_equal(grad, 0.0)


def grad_numpy(w, terms, scale=False):
    """d/dw of sum_k strength_k * sum_g ||w_g||: strength * w / ||w_g||, 0 in dead groups."""
    grad = np.zeros_like(w)
    for strength, reduce_axes in terms:
        norms = np.sqrt(np.sum(w**2, axis=reduce_axes, keepdims=True))
        size = math.prod(w.shape[a] for a in reduce_axes) if scale else 1
        ratio = np.divide(w, norms, out=np.zeros_like(w), where=norms > 0)
        grad += strength * math.sqrt(size) * ratio
    return grad


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [False, True])
def test_gradient_matches_formula_for_every_entry(dtype, scale):
    w = np.random.randn(3, 3, 4, 6).astype(dtype)
    w[..., 2] = 0.0  # a dead filter
    w[:, :, 1, :] = 0.0  # a dead input channel
    reg = DropNeuronRegularizer(li=0.3, lo=0.2, l2=0.1, scale_by_group_size=scale)
    loss, grad = value_and_grad(lambda v: 2.5 * reg(v), w)  # the upstream gradient is not 1
    assert loss.dtype == dtype
    expected = 2.5 * (grad_numpy(w, [(0.3, (0, 1, 2)), (0.2, (0, 1, 3))], scale) + 2 * 0.1 * w)
    np.testing.assert_allclose(grad, expected, rtol=1e-5 if dtype == "float32" else 1e-12)


def test_gradient_over_several_unit_axes_matches_formula():
    w = np.random.randn(3, 3, 4, 2).astype("float64")  # depthwise: (k, k, channels, mult)
    w[:, :, 0, 1] = 0.0
    _, grad = value_and_grad(LiRegularizer(0.7, axis=(-2, -1)), w)
    np.testing.assert_allclose(grad, grad_numpy(w, [(0.7, (0, 1))]), rtol=1e-12)


def test_training_with_dead_groups_produces_no_nan():
    reg = LiRegularizer(0.1)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, kernel_regularizer=reg), L.Dense(1)])
    kernel = model.layers[0].kernel
    kernel.assign(np.zeros((4, 3), "float32"))
    model.compile("sgd", "mse")
    x = np.random.randn(64, 4).astype("float32")
    model.fit(x, x[:, :1], epochs=2, verbose=0)
    assert np.all(np.isfinite(kernel.numpy()))


def test_float16_weights_are_regularized_in_float32():
    w = (np.random.randn(300, 200) * 10).astype("float16")
    value = LiRegularizer(1.0)(w)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    np.testing.assert_allclose(value, li_numpy(w.astype("float64"), [-1]), rtol=1e-4)


@pytest.mark.parametrize(
    "reg",
    [
        LiRegularizer(0.2, axis=(-2, -1)),
        LoRegularizer(0.3, scale_by_group_size=True),
        DropNeuronRegularizer(li=0.1, lo=0.2, l1=0.3, l2=0.4, li_axis=-2, lo_axis=-1),
    ],
)
def test_config_round_trip(reg):
    config = reg.get_config()
    assert all(isinstance(v, (int, float, bool, list)) for v in config.values())
    clone = type(reg).from_config(config)
    assert clone.get_config() == config
    w = np.random.randn(3, 4, 5).astype("float32")
    np.testing.assert_allclose(clone(w), reg(w), rtol=1e-6)
    revived = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert type(revived) is type(reg) and revived.get_config() == config


def _regularized_model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            L.Conv2D(3, 3, kernel_regularizer=LoRegularizer(0.01)),
            L.Flatten(),
            L.Dense(4, kernel_regularizer=LiRegularizer(0.02)),
            L.Dense(2, kernel_regularizer=DropNeuronRegularizer(li=0.1, lo=0.1, l2=0.01)),
        ]
    )


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_saved_model_reloads_with_same_losses(tmp_path, ext):
    model = _regularized_model()
    path = tmp_path / f"model.{ext}"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert [
        type(layer.kernel_regularizer)
        for layer in reloaded.layers
        if hasattr(layer, "kernel_regularizer")
    ] == [LoRegularizer, LiRegularizer, DropNeuronRegularizer]
    np.testing.assert_allclose(to_numpy(reloaded.losses), to_numpy(model.losses), rtol=1e-6)


def test_clone_model_keeps_regularizers():
    model = _regularized_model()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(to_numpy(clone.losses), to_numpy(model.losses), rtol=1e-6)


@pytest.mark.parametrize("cls,arg", [(LiRegularizer, "li"), (LoRegularizer, "lo")])
@pytest.mark.parametrize(
    "value,error",
    [
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (True, TypeError),
        ("0.1", TypeError),
        (None, TypeError),
    ],
)
def test_bad_strength_raises_naming_argument(cls, arg, value, error):
    with pytest.raises(error, match=f"`{arg}`.*{arg}="):
        cls(value)


@pytest.mark.parametrize("arg", ["li", "lo", "l1", "l2"])
def test_combined_regularizer_rejects_negative_strength(arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        DropNeuronRegularizer(**{arg: -0.5})


def test_large_strength_is_allowed():
    # The 2016 scripts refused strengths >= 1; that was a limitation.
    assert LiRegularizer(5.0).li == 5.0


@pytest.mark.parametrize("axis", ["a", 1.5, (), True])
def test_bad_axis_type_raises(axis):
    with pytest.raises(TypeError, match="`axis`"):
        LiRegularizer(0.1, axis=axis)


def test_axis_out_of_range_raises_with_shape():
    with pytest.raises(ValueError, match=r"axis=5.*\(3, 4\)"):
        LiRegularizer(0.1, axis=5)(np.ones((3, 4), "float32"))


def test_regularize_model_rejects_subclassed_model():
    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed.*Custom"):
        regularize_model(Custom(), li=0.1)


def test_regularize_model_rejects_unsupported_named_layer():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.LayerNormalization(name="ln")])
    with pytest.raises(ValueError, match="'ln' of type LayerNormalization"):
        regularize_model(model, li=0.1, layers=["ln"])
    with pytest.raises(ValueError, match="'nope' is not a layer"):
        regularize_model(model, li=0.1, layers=["nope"])
    with pytest.raises(TypeError, match="`model`"):
        regularize_model("model.keras", li=0.1)


def test_gradient_of_a_nearly_dead_group_is_finite_and_bounded():
    # Norms below 1e-12 divide by 1e-12: the gradient stays below the strength.
    w = np.random.randn(4, 3).astype("float32")
    w[:, 1] = 1e-30  # squares underflow: a norm of 0 with non-zero weights
    w[:, 2] = 1e-14
    _, grad = value_and_grad(LiRegularizer(0.5), w)
    assert np.all(np.isfinite(grad))
    assert np.all(np.abs(grad[:, 1:]) <= 0.5)
    np.testing.assert_allclose(grad[:, 0], 0.5 * w[:, 0] / np.linalg.norm(w[:, 0]), rtol=1e-5)
