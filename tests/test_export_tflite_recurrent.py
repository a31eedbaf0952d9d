"""Recurrent layers export to TFLite files the standard interpreter runs, or to a clear refusal.

The standard interpreter here is `tf.lite.Interpreter` without the Flex delegate: a
file that holds Select TF ("Flex") ops fails in its `allocate_tensors`. Float files
match the Keras model to 1e-5.
"""

import pathlib

import keras
import numpy as np
import pytest
from backend_utils import tensorflow_only

from keras_dropneuron.export import export_tflite, tflite_bytes

pytestmark = tensorflow_only("Keras converts LSTMs to TFLite from TensorFlow only")

T, FEATURES, UNITS = 5, 3, 4
L = keras.layers

RECURRENT = {
    "lstm": lambda: L.LSTM(UNITS, name="rec"),
    "gru": lambda: L.GRU(UNITS, name="rec"),
    "simple_rnn": lambda: L.SimpleRNN(UNITS, name="rec"),
    "bidirectional": lambda: L.Bidirectional(L.LSTM(UNITS), name="rec"),
}
CLASS = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN", "bidirectional": "Bidirectional"}


def recurrent_model(kind):
    inputs = keras.Input((T, FEATURES), name="x")
    return keras.Model(inputs, RECURRENT[kind]()(inputs))


def samples(n, steps=T, seed=0):
    return np.random.default_rng(seed).standard_normal((n, steps, FEATURES)).astype("float32")


def run_standard(flatbuffer, x):
    """Runs `x` through TFLite's builtin-only interpreter (no Flex delegate)."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    (given,) = interpreter.get_input_details()
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    (output,) = interpreter.get_output_details()
    return interpreter.get_tensor(output["index"]), tuple(given["shape"])


class Erf(L.Layer):
    """An op TFLite has no builtin kernel for, but Select TF ops have (tf.Erf)."""

    def call(self, x):
        return keras.ops.erf(x)


@pytest.mark.parametrize("kind", list(RECURRENT))
def test_float_file_runs_in_the_standard_interpreter(kind, tmp_path):
    model = recurrent_model(kind)
    with pytest.warns(UserWarning, match=rf"batch size of 1: .*'rec' \({CLASS[kind]}\)"):
        path = export_tflite(model, tmp_path / "rec.tflite")
    data = pathlib.Path(path).read_bytes()
    assert b"Flex" not in data  # no Select TF op names in the operator codes
    x = samples(1)
    output, input_shape = run_standard(data, x)
    assert input_shape == (1, T, FEATURES)
    np.testing.assert_allclose(output, keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_variable_length_sequential_runs_any_length():
    model = keras.Sequential(
        [keras.Input((None, FEATURES)), L.GRU(UNITS, return_sequences=True), L.Dense(2)]
    )
    with pytest.warns(UserWarning, match=r"batch size of 1: .*\(GRU\)"):
        data = tflite_bytes(model)
    x = samples(1, steps=7)
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=data)
    (given,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(given["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(output, keras.ops.convert_to_numpy(model(x)), atol=1e-5)


@pytest.mark.parametrize("kind", list(RECURRENT))
def test_int8_is_refused_naming_the_layer(kind, tmp_path):
    model = recurrent_model(kind)
    weights = [w.copy() for w in model.get_weights()]
    path = tmp_path / "rec.tflite"
    path.write_bytes(b"the user's file")
    with pytest.raises(
        ValueError, match=rf"argument `int8`.*'rec' \({CLASS[kind]}\).*export_onnx"
    ):
        export_tflite(model, path, int8=True, representative_data=samples(8))
    assert path.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.tflite"]
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_select_tf_ops_keeps_flex_ops_and_the_batch_size():
    import tensorflow as tf

    data = tflite_bytes(recurrent_model("lstm"), select_tf_ops=True)  # no batch-1 warning
    assert b"FlexTensorListReserve" in data
    interpreter = tf.lite.Interpreter(model_content=data)
    assert interpreter.get_input_details()[0]["shape_signature"][0] == -1
    with pytest.raises(RuntimeError, match="Flex delegate"):
        interpreter.allocate_tensors()


def test_a_flex_op_is_refused_naming_its_layer_until_allowed(tmp_path):
    inputs = keras.Input((T, FEATURES))
    outputs = L.LSTM(UNITS, name="rec")(Erf(name="odd")(inputs))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "odd.tflite"
    with pytest.raises(ValueError, match=r"'odd' \(Erf\) need .*\(tf\.Erf\).*select_tf_ops=True"):
        export_tflite(model, path)
    assert list(tmp_path.iterdir()) == []
    export_tflite(model, path, select_tf_ops=True)
    assert b"FlexErf" in path.read_bytes()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(select_tf_ops="yes"), TypeError, "Invalid type for argument `select_tf_ops`"),
        (
            dict(select_tf_ops=True, int8=True, representative_data=samples(4)),
            ValueError,
            "Invalid value for argument `select_tf_ops`: int8=True",
        ),
    ],
    ids=["not_bool", "with_int8"],
)
def test_select_tf_ops_bad_values(kwargs, error, message):
    with pytest.raises(error, match=message):
        tflite_bytes(recurrent_model("simple_rnn"), **kwargs)
