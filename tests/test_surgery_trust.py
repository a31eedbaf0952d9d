"""slim_model never returns a different function.

Each model here is one a surgeon can easily get wrong: normalization in
training mode, adapted statistics, quantized or LoRA layers, unknown weights,
nested models reusing a layer name, user regularizers and activations. The
surgeon keeps whole what it does not fully understand, copies the whole state
of every layer it does not resize, and verifies its result before returning
it (a weighted layer without `get_config` is in test_surgery_errors.py).
"""

import warnings

import keras
import numpy as np
import pytest
from backend_utils import tensorflow_only, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_dropneuron import SlimVerificationError, slim_model, sparsity_report
from keras_dropneuron.layer_rules import rule_for
from keras_dropneuron.layer_rules.dense import DenseRule
from keras_dropneuron.surgery import plan
from keras_dropneuron.surgery.graph import build_graph


def _outputs(model, x):
    # `model(x)`, not `training=False`, which would override `training=True`
    # inside the graph.
    return np.asarray(keras.ops.convert_to_numpy(model(x)))


def _dead_constant_unit(layer, unit, bias):
    kernel = layer.kernel.numpy()
    kernel[:, unit] = 0
    layer.kernel.assign(kernel)
    values = layer.bias.numpy()
    values[unit] = bias
    layer.bias.assign(values)


@keras.saving.register_keras_serializable(package="keras_dropneuron_tests")
class GainDense(keras.layers.Dense):
    """A Dense with one extra per-unit weight the surgeon does not know."""

    def build(self, input_shape):
        super().build(input_shape)
        self.gain = self.add_weight(shape=(self.units,), initializer="ones", name="gain")

    def call(self, x):
        return super().call(x) * self.gain


def test_batchnorm_in_training_mode_is_a_barrier():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(5, activation="relu", name="h")(inputs)
    normed = keras.layers.BatchNormalization(name="bn")(hidden, training=True)
    model = keras.Model(inputs, keras.layers.Dense(2)(normed))
    _dead_constant_unit(model.get_layer("h"), 0, 0.8)
    stats = [v.numpy().copy() for v in model.get_layer("bn").non_trainable_weights]
    slim = slim_model(model)
    # Verification ran the model, but the user's moving statistics are untouched.
    for variable, before in zip(model.get_layer("bn").non_trainable_weights, stats, strict=True):
        np.testing.assert_array_equal(variable.numpy(), before)
    # Unit 0 is a constant, but BN sees it through batch statistics: kept.
    assert slim.get_layer("h").units == 5
    x = np.random.default_rng(0).standard_normal((16, 3)).astype("float32")
    np.testing.assert_allclose(_outputs(slim, x), _outputs(model, x), atol=1e-6)


def test_barrier_rule_reads_the_call_arguments():
    inputs = keras.Input((3,))
    x = keras.layers.BatchNormalization(name="on")(inputs, training=True)
    x = keras.layers.BatchNormalization(name="inherits")(x)
    x = keras.layers.BatchNormalization(name="off")(x, training=False)
    calls = {call.name: call for call in build_graph(keras.Model(inputs, x)).calls}
    assert [calls[n].training for n in ("on", "inherits", "off")] == [True, None, False]

    def in_training(name, leaked):
        layer = calls[name].layer
        return plan.runs_in_training_mode(layer, rule_for(layer), calls[name].training, leaked)

    assert in_training("on", leaked=False)
    assert not in_training("inherits", leaked=False)
    # Keras hands an explicit training=True on to later layers of the same call.
    assert in_training("inherits", leaked=True)
    assert not in_training("off", leaked=True)


def test_training_mode_reaches_later_layers():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="d0")(inputs)
    x = keras.layers.BatchNormalization(name="bn0")(x, training=True)
    x = keras.layers.Dense(4, activation="relu", name="h")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)  # runs in training mode too
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    _dead_constant_unit(model.get_layer("h"), 0, 0.8)
    slim = slim_model(model)
    assert slim.get_layer("h").units == 4
    x = np.random.default_rng(0).standard_normal((16, 3)).astype("float32")
    np.testing.assert_allclose(_outputs(slim, x), _outputs(model, x), atol=1e-5)


def test_adapted_normalization_keeps_its_statistics(tmp_path):
    rng = np.random.default_rng(1)
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(rng.standard_normal((100, 3)) * 3 + 2)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4)(norm(inputs))))
    slim = slim_model(model)
    x = rng.standard_normal((8, 3)).astype("float32")
    np.testing.assert_allclose(_outputs(slim, x), _outputs(model, x), atol=1e-6)
    slim.save(tmp_path / "slim.keras")
    reloaded = keras.saving.load_model(tmp_path / "slim.keras")
    np.testing.assert_allclose(_outputs(reloaded, x), _outputs(slim, x), atol=1e-6)


def test_int8_quantized_model_keeps_its_scales():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="relu", name="h")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "InputLayer has no quantize"
        model.quantize("int8")
    slim = slim_model(model)
    x = np.random.default_rng(2).standard_normal((8, 3)).astype("float32")
    np.testing.assert_array_equal(_outputs(slim, x), _outputs(model, x))
    np.testing.assert_array_equal(
        slim.get_layer("h").kernel_scale.numpy(), model.get_layer("h").kernel_scale.numpy()
    )


def _change(layer, mode):
    if mode == "lora":
        layer.enable_lora(2)
        # A trained adapter: without it LoRA adds nothing and hides any mistake.
        layer.lora_kernel_b.assign(np.full(layer.lora_kernel_b.shape, 0.5, "float32"))
    else:
        layer.quantize(mode)


@pytest.mark.parametrize("mode", ["int8", "int4", "float8", "lora"])
def test_quantized_or_lora_layer_is_not_resized(mode):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="relu", name="h")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    kernel = model.get_layer("out").kernel.numpy()
    kernel[1] = 0  # hidden unit 1 is never read: removable in a float model
    model.get_layer("out").kernel.assign(kernel)
    assert slim_model(model).get_layer("h").units == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _change(model.get_layer("h"), mode)
    # The layer now holds weights (scales, adapters) the Dense rule does not slice.
    layer = model.get_layer("h")
    assert not plan.holds_only_known_weights(layer, rule_for(layer))
    slim, report = slim_model(model, return_report=True)
    assert slim.get_layer("h").units == 4
    # The reason names the weights, as the layer holds them.
    unknown = plan.unknown_weights(layer, rule_for(layer))
    assert unknown and unknown[0].rsplit("/", 1)[-1] in report.kept_whole["h"]
    x = np.random.default_rng(3).standard_normal((8, 3)).astype("float32")
    np.testing.assert_array_equal(_outputs(slim, x), _outputs(model, x))


@pytest.mark.parametrize("dead", [False, True])
def test_subclass_with_an_unknown_weight_is_kept_whole(dead):
    inputs = keras.Input((3,))
    layer = GainDense(4, name="gd")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(layer(inputs)))
    layer.gain.assign(np.random.default_rng(4).standard_normal(4) * 3)
    if dead:
        kernel = model.get_layer("out").kernel.numpy()
        kernel[2] = 0
        model.get_layer("out").kernel.assign(kernel)
    slim = slim_model(model)
    assert slim.get_layer("gd").units == 4
    np.testing.assert_array_equal(slim.get_layer("gd").gain.numpy(), layer.gain.numpy())
    x = np.random.default_rng(5).standard_normal((8, 3)).astype("float32")
    np.testing.assert_allclose(_outputs(slim, x), _outputs(model, x), atol=1e-6)


def test_nested_models_reusing_a_layer_name_get_unique_names():
    def block(name):
        x = keras.Input((4,))
        y = keras.layers.Reshape((4,), name="r")(keras.layers.Dense(4)(x))
        return keras.Model(x, y, name=name)

    inputs = keras.Input((4,))
    model = keras.Model(inputs, block("b2")(block("b1")(inputs)))
    slim = slim_model(model)
    names = [layer.name for layer in slim.layers]
    assert len(names) == len(set(names)) and "r" in names and "b2_r" in names
    x = np.random.default_rng(6).standard_normal((8, 4)).astype("float32")
    np.testing.assert_allclose(_outputs(slim, x), _outputs(model, x), atol=1e-6)


class NoConfigRegularizer(keras.regularizers.Regularizer):
    def __call__(self, weights):
        return 0.01 * keras.ops.sum(weights**2)


@pytest.mark.parametrize("keep_regularizers", [True, False])
def test_regularizer_without_get_config_is_kept_or_dropped(keep_regularizers):
    regularizer = NoConfigRegularizer()
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="h")(inputs)
    out = keras.layers.Dense(2, kernel_regularizer=regularizer, name="out")(hidden)
    model = keras.Model(inputs, out)
    slim = slim_model(model, keep_regularizers=keep_regularizers)
    expected = regularizer if keep_regularizers else None
    assert slim.get_layer("out").kernel_regularizer is expected
    x = np.random.default_rng(7).standard_normal((8, 3)).astype("float32")
    np.testing.assert_array_equal(_outputs(slim, x), _outputs(model, x))


def scaled_tanh(x):
    return keras.ops.tanh(x) * 2.0


def test_user_activation_functions_keep_their_layer_whole():
    inputs = keras.Input((3,))
    first = keras.layers.Dense(4, activation="relu", name="a")(inputs)
    hidden = keras.layers.Dense(4, activation=scaled_tanh, name="h")(first)
    model = keras.Model(inputs, keras.layers.Dense(2, activation=lambda t: t * 3.0)(hidden))
    kernel = model.get_layer("h").kernel.numpy()
    kernel[0] = 0
    model.get_layer("h").kernel.assign(kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras warns on lambdas
        slim = slim_model(model)
    assert slim.get_layer("a").units == 3
    # A user function might mix channels (a hand-written softmax): h stays whole.
    assert slim.get_layer("h").units == 4
    assert slim.get_layer("h").activation is scaled_tanh
    x = np.random.default_rng(8).standard_normal((8, 3)).astype("float32")
    np.testing.assert_allclose(_outputs(slim, x), _outputs(model, x), atol=1e-6)


def test_nan_weights_refused():
    inputs = keras.Input((3,))
    layer = keras.layers.Dense(4, name="h")
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    kernel = layer.kernel.numpy()
    kernel[0, 0] = np.nan
    layer.kernel.assign(kernel)
    with pytest.raises(ValueError, match="layer 'h' holds NaN or infinite values"):
        slim_model(model)


def _foldable_model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="relu", name="h")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    _dead_constant_unit(model.get_layer("h"), 1, 0.7)  # folded into out's bias
    return model


def test_verification_catches_a_wrong_slim_model(monkeypatch):
    model = _foldable_model()
    monkeypatch.setattr(DenseRule, "fold_bias", lambda self, layer, constants: 0.0)
    with pytest.raises(SlimVerificationError, match="first layer whose output differs is 'out'"):
        slim_model(model)
    try:
        slim_model(model)
    except SlimVerificationError as error:
        assert error.layer == "out" and error.deviation > error.tolerance > 0
    slim = slim_model(model, verify=False)  # the unverified result, on request
    assert slim.get_layer("h").units == 3


def test_verification_records_its_deviation():
    model = _foldable_model()
    slim, report = slim_model(model, return_report=True)
    assert slim.get_layer("h").units == 3
    assert 0 <= report.max_deviation <= report.tolerance
    assert "tolerance" in str(report)
    _, unverified = slim_model(model, return_report=True, verify=False)
    assert unverified.max_deviation is None


def test_verify_inputs_with_dropped_inputs():
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
    kernel = model.get_layer("out").kernel.numpy()
    kernel[2] = 0
    model.get_layer("out").kernel.assign(kernel)
    batch = np.random.default_rng(9).standard_normal((5, 4)).astype("float32")
    for batches in (batch, [batch], {"x": batch}):
        slim, report = slim_model(
            model, drop_inputs=True, verify_inputs=batches, return_report=True
        )
        np.testing.assert_array_equal(report.kept_inputs["x"], [0, 1, 3])
        assert report.max_deviation <= report.tolerance


@pytest.mark.parametrize(
    ("verify_inputs", "error", "match"),
    [
        ("data", TypeError, "Invalid type for argument `verify_inputs`"),
        (np.zeros((5, 3), "float32"), ValueError, r"shape \(batch, 4\)"),
        ([np.zeros((5, 4)), np.zeros((5, 4))], ValueError, "expected 1 arrays"),
        ({"y": np.zeros((5, 4))}, ValueError, "input names"),
    ],
)
def test_bad_verify_inputs(verify_inputs, error, match):
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(error, match=match):
        slim_model(model, verify_inputs=verify_inputs)


@tensorflow_only("string tensors exist only on TensorFlow")
def test_string_inputs_need_verify_inputs():
    lookup = keras.layers.StringLookup(vocabulary=["a", "b", "c"], name="lookup")
    inputs = keras.Input((2,), dtype="string")
    embedded = keras.layers.Embedding(5, 3)(lookup(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(embedded)))
    with pytest.raises(ValueError, match="Pass `verify_inputs=`"):
        slim_model(model)
    batch = np.array([["a", "c"], ["b", "z"]])
    slim = slim_model(model, verify_inputs=batch)
    np.testing.assert_array_equal(_outputs(slim, batch), _outputs(model, batch))


def test_random_model_is_measured_with_a_warning():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4)(inputs)
    noisy = keras.layers.Dropout(0.5)(hidden, training=True)
    model = keras.Model(inputs, keras.layers.Dense(2)(noisy))
    # Not pytest.warns: it would re-raise TensorFlow's unrelated DeprecationWarning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slim, report = slim_model(model, return_report=True)
    assert any("could not verify" in str(w.message) for w in caught)
    assert report.max_deviation is None
    assert slim.count_params() == model.count_params()


# ------------------------------------------------------------ property test

_BLOCKS = ("dense", "gain", "int8", "bn", "bn_training", "normalization")


@st.composite
def exotic_stacks(draw):
    """Dense stacks with layers the surgeon must keep whole or handle exactly."""
    blocks = draw(st.lists(st.sampled_from(_BLOCKS), min_size=1, max_size=4))
    widths = [draw(st.integers(2, 5)) for _ in blocks]
    dead = [
        {u: draw(st.sampled_from(["in", "out"])) for u in draw(st.sets(st.integers(0, w - 1)))}
        for w in widths
    ]
    return blocks, widths, dead, draw(st.integers(0, 2**16))


def _exotic_model(blocks, widths, dead, rng):
    inputs = keras.Input((3,))
    x, producers, quantize = inputs, [], []
    for i, (block, width) in enumerate(zip(blocks, widths, strict=True)):
        if block == "normalization":
            norm = keras.layers.Normalization(name=f"norm{i}")
            norm.adapt(rng.standard_normal((32, x.shape[-1])) * 2 + 1)
            x = norm(x)
        layer_type = GainDense if block == "gain" else keras.layers.Dense
        layer = layer_type(width, activation="relu", name=f"d{i}")
        x = layer(x)
        producers.append(layer)
        if block == "gain":
            layer.gain.assign(rng.uniform(0.5, 2, width))
        if block == "int8":
            quantize.append(layer)
        if block in ("bn", "bn_training"):
            bn = keras.layers.BatchNormalization(name=f"bn{i}")
            x = bn(x, training=True) if block == "bn_training" else bn(x)
            bn.set_weights(
                [rng.uniform(0.5, 2, width), rng.normal(size=width)]
                + [rng.normal(size=width), rng.uniform(0.5, 2, width)]
            )
    head = keras.layers.Dense(2, name="head")
    model = keras.Model(inputs, head(x))
    readers = producers[1:] + [head]
    for producer, reader, units in zip(producers, readers, dead, strict=True):
        kernel, bias, read = producer.kernel.numpy(), producer.bias.numpy(), reader.kernel.numpy()
        for unit, how in units.items():
            if how == "in":
                kernel[:, unit], bias[unit] = 0, rng.normal()
            else:
                read[unit] = 0
        producer.kernel.assign(kernel)
        producer.bias.assign(bias)
        reader.kernel.assign(read)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for layer in quantize:
            layer.quantize("int8")
    return model


@settings(max_examples=20, deadline=None)
@given(spec=exotic_stacks())
def test_exotic_stacks_verify_or_are_refused(spec):
    blocks, widths, dead, seed = spec
    rng = np.random.default_rng(seed)
    model = _exotic_model(blocks, widths, dead, rng)
    x = rng.standard_normal((6, 3)).astype("float32")
    expected = _outputs(model, x)
    try:
        slim, report = slim_model(model, return_report=True)
    except SlimVerificationError:
        raise  # the surgeon built a wrong model: a bug, even though it was caught
    except ValueError as error:  # refusing is allowed, but only by name
        assert "Cannot copy layer" in str(error)
        return
    assert report.max_deviation <= report.tolerance
    assert sparsity_report(model).totals["params_after_slim"] == slim.count_params()
    got = _outputs(slim, x)
    np.testing.assert_allclose(got, expected, atol=1e-5 * (1 + np.max(np.abs(expected))))
    assert slim.count_params() <= model.count_params()


def test_dict_inputs_and_outputs_are_verified():
    a, b = keras.Input((3,), name="xa"), keras.Input((2,), name="xb")
    hidden = keras.layers.Dense(4, name="h")(keras.layers.Concatenate()([a, b]))
    outputs = {
        "first": keras.layers.Dense(2, name="o1")(hidden),
        "second": keras.layers.Dense(1, name="o2")(hidden),
    }
    model = keras.Model({"xa": a, "xb": b}, outputs)
    for name in ("o1", "o2"):
        kernel = model.get_layer(name).kernel.numpy()
        kernel[1] = 0
        model.get_layer(name).kernel.assign(kernel)
    batch = {"xa": np.ones((2, 3), "float32"), "xb": np.full((2, 2), -1.0, "float32")}
    for verify_inputs in (None, batch):
        slim, report = slim_model(model, verify_inputs=verify_inputs, return_report=True)
        assert slim.get_layer("h").units == 3
        assert report.max_deviation <= report.tolerance
    expected, got = model(batch), slim(batch)
    for key in outputs:
        np.testing.assert_allclose(to_numpy(got[key]), to_numpy(expected[key]), atol=1e-6)


# ------------------------------------------------------ what a new user tries


def test_dict_passed_to_a_nested_model_goes_by_input_name():
    z, a = keras.Input((4,), name="z"), keras.Input((4,), name="a")
    inner = keras.Model([z, a], keras.layers.Dense(3)(keras.layers.Concatenate()([z, a])))
    first, second = keras.Input((4,)), keras.Input((4,))
    # Keras matches the dict to the submodel's inputs by name, not by sorted key.
    outputs = inner({"z": keras.ops.sqrt(first), "a": keras.ops.sqrt(second)})
    model = keras.Model([first, second], keras.layers.Dense(2)(outputs))
    slim = slim_model(model)
    rng = np.random.default_rng(10)
    x = [rng.poisson(3, (4, 4)).astype("float32") for _ in range(2)]
    np.testing.assert_allclose(_outputs(slim, x), _outputs(model, x), atol=1e-5)


def test_outputs_that_are_never_finite_cannot_be_verified():
    inputs = keras.Input((3,))
    nan = keras.layers.Lambda(lambda t: t * np.nan)(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(nan))
    with pytest.raises(ValueError, match="outputs NaN or infinite values on random data"):
        slim_model(model)
    with pytest.raises(ValueError, match="expected finite values"):
        slim_model(model, verify_inputs=np.full((2, 3), np.nan, "float32"))
    assert slim_model(model, verify=False).count_params() == model.count_params()


class CenteredDense(keras.layers.Dense):
    """Same weights as a Dense, but its call() mixes the output channels."""

    def call(self, x):
        y = super().call(x)
        return y - keras.ops.mean(y, axis=-1, keepdims=True)


def test_subclass_overriding_call_is_kept_whole():
    inputs = keras.Input((6,))
    small = keras.layers.Dense(3, name="d2")(CenteredDense(8, name="centered")(inputs))
    large = keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(2e4))(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()([small, large]))
    kernel = model.get_layer("d2").kernel.numpy()
    kernel[[0, 1]] = 0
    model.get_layer("d2").kernel.assign(kernel)
    slim = slim_model(model)
    assert slim.get_layer("centered").units == 8
    x = np.random.default_rng(11).standard_normal((5, 6)).astype("float32")
    np.testing.assert_allclose(_outputs(slim, x)[:, :3], _outputs(model, x)[:, :3], atol=1e-6)


def test_a_large_output_channel_does_not_hide_an_error_in_a_small_one(monkeypatch):
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="relu", name="h")(inputs)
    small = keras.layers.Dense(2, name="out")(hidden)
    large = keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(2e4))(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()([small, large]))
    _dead_constant_unit(model.get_layer("h"), 1, 0.7)
    monkeypatch.setattr(DenseRule, "fold_bias", lambda self, layer, constants: 0.0)
    # The error (about 0.7 * |kernel|) is far below 3.5e-4 * 2e4 = 7.
    with pytest.raises(SlimVerificationError, match="'out'"):
        slim_model(model)


def test_training_flag_of_a_nested_call_is_kept():
    inner_inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8)(inner_inputs)
    normed = keras.layers.BatchNormalization(name="bn")(hidden)
    inner = keras.Model(inner_inputs, keras.layers.Dense(3)(normed))
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs, training=True)))
    statistics = model.get_layer(inner.name).get_layer("bn").moving_mean.numpy().copy()
    slim = slim_model(model)  # verifies in the same (training) mode as the source
    bn = model.get_layer(inner.name).get_layer("bn")
    np.testing.assert_array_equal(bn.moving_mean.numpy(), statistics)
    x = np.random.default_rng(12).standard_normal((5, 6)).astype("float32")
    np.testing.assert_allclose(_outputs(slim, x), _outputs(model, x), atol=1e-5)


class RunningMax(keras.layers.Layer):
    """A calibration layer: it updates a non-trainable weight on every call."""

    def build(self, shape):
        self.peak = self.add_weight(shape=(shape[-1],), initializer="zeros", trainable=False)

    def call(self, x):
        self.peak.assign(keras.ops.maximum(self.peak, keras.ops.max(keras.ops.abs(x), axis=0)))
        return x


def test_verification_leaves_layer_state_as_it_was():
    inputs = keras.Input((4,))
    model = keras.Model(
        inputs, keras.layers.Dense(2)(RunningMax(name="peak")(keras.layers.Dense(6)(inputs)))
    )
    slim = slim_model(model)
    np.testing.assert_array_equal(model.get_layer("peak").peak.numpy(), np.zeros(6))
    np.testing.assert_array_equal(slim.get_layer("peak").peak.numpy(), np.zeros(6))


class LayerScale(keras.layers.Layer):
    """Like ConvNeXt's layer scale: a weight created without a name."""

    def build(self, shape):
        self.gamma = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gamma


def test_weights_created_without_a_name_are_copied():
    inputs = keras.Input((6,))
    scale = LayerScale(name="scale")
    model = keras.Model(
        inputs, keras.layers.Dense(3)(keras.layers.Dense(8)(scale(keras.layers.Dense(6)(inputs))))
    )
    scale.gamma.assign(np.arange(1, 7, dtype="float32"))
    slim = slim_model(model)
    np.testing.assert_array_equal(slim.get_layer("scale").gamma.numpy(), scale.gamma.numpy())
    x = np.random.default_rng(13).standard_normal((5, 6)).astype("float32")
    np.testing.assert_allclose(_outputs(slim, x), _outputs(model, x), atol=1e-5)


def test_slim_layers_keep_their_initializers():
    # Weights are built as zeros and then overwritten; the config must not say so.
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, kernel_initializer="he_normal", name="h")(inputs)
    normed = keras.layers.BatchNormalization(gamma_initializer="ones", name="bn")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(normed))
    kernel = model.get_layer("out").kernel.numpy()
    kernel[0] = 0
    model.get_layer("out").kernel.assign(kernel)
    slim = slim_model(model)
    assert slim.get_layer("h").units == 3
    for name in ("h", "bn", "out"):
        assert slim.get_layer(name).get_config() == {
            **model.get_layer(name).get_config(),
            **({"units": 3} if name == "h" else {}),
        }


def test_a_layer_shared_by_inputs_of_different_lengths_is_kept_whole():
    # One Embedding reads id sequences of two lengths: its inputs' last axes
    # (24 and 58 positions) are not channels to tie together.
    short, long = keras.Input((24,), dtype="int32"), keras.Input((58,), dtype="int32")
    embedding = keras.layers.Embedding(100, 16, name="embedding")
    joined = keras.layers.Concatenate(axis=1)([embedding(short), embedding(long)])
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(joined)
    pooled = keras.layers.GlobalAveragePooling1D()(hidden)
    model = keras.Model([short, long], keras.layers.Dense(3)(pooled))
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[:, :3], bias[:3] = 0.0, 0.0
    model.get_layer("hidden").set_weights([kernel, bias])

    slim = slim_model(model)
    assert slim.get_layer("hidden").units == 5
    assert slim.get_layer("embedding").output_dim == 16
    rng = np.random.default_rng(0)
    x = [rng.integers(0, 100, (4, 24)), rng.integers(0, 100, (4, 58))]
    np.testing.assert_allclose(_outputs(slim, x), _outputs(model, x), atol=1e-5)
