"""Property: random stacks with random dead units slim exactly."""

import keras
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_dropneuron import sparsity_report
from keras_dropneuron.surgery import slim_model


@st.composite
def stacks(draw):
    conv = draw(st.booleans())
    widths = draw(st.lists(st.integers(2, 7), min_size=1, max_size=3))
    layers = []
    for width in widths:
        dead = draw(st.sets(st.integers(0, width - 1), max_size=width - 1))
        layers.append(
            {
                "width": width,
                "kernel": draw(st.integers(1, 3)) if conv else 1,
                "activation": draw(st.sampled_from(["relu", "tanh", "linear"])),
                "batchnorm": draw(st.booleans()),
                # Per dead unit: read by nobody, or a constant (zero kernel).
                "dead": {u: draw(st.sampled_from(["out", "in"])) for u in dead},
            }
        )
    return conv, draw(st.integers(2, 4)), layers, draw(st.integers(0, 2**16))


@settings(max_examples=12, deadline=None)
@given(spec=stacks())
def test_random_stacks(spec):
    conv, channels_in, layers, seed = spec
    rng = np.random.default_rng(seed)
    inputs = keras.Input((9, channels_in) if conv else (channels_in,))
    x = inputs
    for i, layer in enumerate(layers):
        if conv:
            x = keras.layers.Conv1D(
                layer["width"],
                layer["kernel"],
                activation=layer["activation"],
                name=f"l{i}",
            )(x)
        else:
            x = keras.layers.Dense(layer["width"], activation=layer["activation"], name=f"l{i}")(x)
        if layer["batchnorm"]:
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
    if conv:
        x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    for i, layer in enumerate(layers):
        if layer["batchnorm"]:
            width = layer["width"]
            model.get_layer(f"bn{i}").set_weights(
                [
                    rng.uniform(0.5, 2, width),
                    rng.normal(size=width),
                    rng.normal(size=width),
                    rng.uniform(0.5, 2, width),
                ]
            )
        producer = model.get_layer(f"l{i}")
        reader = model.get_layer(f"l{i + 1}" if i + 1 < len(layers) else "head")
        kernel, bias = producer.kernel.numpy(), producer.bias.numpy()
        read = reader.kernel.numpy()
        for unit, how in layer["dead"].items():
            if how == "in":
                kernel[..., unit] = 0
                bias[unit] = rng.normal()
            else:
                read[..., unit, :] = 0
        producer.kernel.assign(kernel)
        producer.bias.assign(bias)
        reader.kernel.assign(read)
    slim = slim_model(model)
    # The report reads the surgeon's own analysis: it predicts the slim model.
    report = sparsity_report(model)
    assert report.totals["params_after_slim"] == slim.count_params()
    for row in report.rows:
        layer = slim.get_layer(row["layer"])
        width = layer.units if isinstance(layer, keras.layers.Dense) else layer.filters
        assert row["units_after_slim"] == width
    data = rng.standard_normal((3,) + tuple(inputs.shape[1:])).astype("float32")
    expected_out = np.asarray(model(data))
    deviation = np.max(np.abs(np.asarray(slim(data)) - expected_out))
    assert deviation <= 1e-5 * (1 + np.max(np.abs(expected_out)))
    expected, previous = 0, channels_in
    for layer in layers:
        kept = layer["width"] - len(layer["dead"])
        expected += layer["kernel"] * previous * kept + kept
        expected += 4 * kept if layer["batchnorm"] else 0
        previous = kept
    expected += previous * 2 + 2
    assert slim.count_params() == expected
