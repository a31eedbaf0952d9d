"""A slim model saves, reloads and exports with the same outputs; quantized, it stays close.

Tolerances: float exports (SavedModel, TFLite, ONNX) agree with the Keras slim model within
1e-5 absolute (1e-4 for TFLite, whose kernels sum in another order). Quantized models are
held to a share of the output range, max|y|: int8 TFLite within 5%, Keras int8 within 3%,
and quantizing the slim model deviates within a factor 3 of quantizing the unslimmed one.
"""

import importlib.util
import os
import warnings

import keras
import numpy as np
import pytest
from backend_utils import BACKEND, to_numpy

from keras_dropneuron.export import (
    export_model,
    export_onnx,
    export_saved_model,
    export_tflite,
    onnx_missing_packages,
    representative_dataset,
)
from keras_dropneuron.export import tflite as tflite_module
from keras_dropneuron.surgery import slim_model

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")

# Keras exports a SavedModel from TensorFlow and JAX (jax2tf), not from PyTorch.
needs_saved_model_export = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras cannot export a SavedModel from PyTorch"
)


@pytest.fixture(scope="module")
def pair():
    inputs = keras.Input((10, 10, 3), name="image")
    x = keras.layers.Conv2D(6, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    model = keras.Model(inputs, outputs)
    kernel = model.get_layer("c1").kernel.numpy()
    kernel[..., [0, 4]] = 0
    model.get_layer("c1").kernel.assign(kernel)
    model.get_layer("c1").bias.assign(np.linspace(-0.5, 0.5, 6).astype("float32"))
    slim = slim_model(model)
    assert slim.get_layer("c1").filters == 4
    x = np.random.default_rng(0).standard_normal((2, 10, 10, 3)).astype("float32")
    return model, slim, x


def calibration(n=1000, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 10, 10, 3)).astype("float32")


def run_tflite(path, x):
    """Runs a TFLite file on the batch `x` (LiteRT's interpreter where installed, else TF's)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=str(path))
    (runner,) = [interpreter.get_signature_runner(k) for k in interpreter.get_signature_list()]
    (name,) = runner.get_input_details()
    (output,) = runner(**{name: x}).values()
    return output, interpreter


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_reload(pair, tmp_path, suffix):
    model, slim, x = pair
    path = tmp_path / f"slim{suffix}"
    slim.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-5)
    assert loaded.get_layer("c1").filters == 4


@needs_saved_model_export
def test_saved_model_serving_signature(pair, tmp_path):
    import tensorflow as tf  # reads the SavedModel whatever the backend

    model, slim, x = pair
    path = export_saved_model(slim, tmp_path / "sm")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    (output,) = serve(tf.constant(x)).values()
    np.testing.assert_allclose(output.numpy(), to_numpy(model(x)), atol=1e-5)
    with pytest.raises(FileExistsError, match="argument `path`"):
        export_saved_model(slim, path)


@needs_saved_model_export
def test_tflite(pair, tmp_path):
    import tensorflow as tf  # runs the TFLite file whatever the backend

    model, slim, x = pair
    path = export_tflite(slim, tmp_path / "slim.tflite")
    interpreter = tf.lite.Interpreter(model_path=path)
    (runner,) = [interpreter.get_signature_runner(k) for k in interpreter.get_signature_list()]
    for row in x:
        (output,) = runner(**{name: row[None] for name in runner.get_input_details()}).values()
        np.testing.assert_allclose(output[0], to_numpy(model(row[None]))[0], atol=1e-4)


@needs_saved_model_export
@pytest.mark.parametrize("keras_litert", [True, False], ids=["keras_litert", "converter"])
def test_tflite_keras_path_and_fallback_agree(pair, tmp_path, monkeypatch, keras_litert):
    model, slim, _ = pair
    x = calibration(8, seed=2)
    if not keras_litert:  # a Keras without format="litert": TFLiteConverter on a SavedModel
        monkeypatch.setattr(tflite_module, "_keras_litert", lambda *args: False)
    path = export_tflite(slim, tmp_path / "slim.bin")  # any suffix, though Keras wants .tflite
    output, _ = run_tflite(path, x)
    np.testing.assert_allclose(output, to_numpy(model(x)), atol=1e-4)


def max_deviation(a, b):
    return float(np.max(np.abs(to_numpy(a) - to_numpy(b))))


def rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


@needs_saved_model_export
def test_tflite_int8_full_integer(pair, tmp_path):
    model, slim, _ = pair
    x = calibration(32, seed=3)  # not the calibration samples
    float_path = export_tflite(slim, tmp_path / "float.tflite")
    path = export_tflite(
        slim, tmp_path / "int8.tflite", int8=True, representative_data=calibration()
    )
    output, interpreter = run_tflite(path, x)
    expected = to_numpy(slim(x))
    scale = np.max(np.abs(expected))
    deviation = max_deviation(output, expected)
    # int8 clips what calibration never saw: 1000 samples keep the tails in range.
    assert 0 < deviation <= 0.05 * scale, (deviation, scale)
    assert rms(output - expected) <= 0.03 * rms(expected)
    # Integer kernels: the convolution and the dense layer take int8 weights.
    ops = {op["op_name"]: op for op in interpreter._get_ops_details()}
    tensors = interpreter.get_tensor_details()
    for kind in ("CONV_2D", "FULLY_CONNECTED"):
        weights = tensors[ops[kind]["inputs"][1]]
        assert weights["dtype"] == np.int8, (kind, weights)
    assert os.path.getsize(path) < os.path.getsize(float_path)
    # Quantizing the unslimmed model deviates by the same order.
    path_full = export_tflite(
        model, tmp_path / "full_int8.tflite", int8=True, representative_data=calibration()
    )
    output_full, _ = run_tflite(path_full, x)
    deviation_full = max_deviation(output_full, to_numpy(model(x)))
    assert deviation <= 3 * deviation_full and deviation_full <= 3 * deviation


@needs_saved_model_export
def test_tflite_int8_accepts_a_callable(pair, tmp_path):
    _, slim, _ = pair
    samples = calibration()

    def representative():  # TFLite's own convention
        for row in samples:
            yield [row[None]]

    path = export_tflite(
        slim, tmp_path / "a.tflite", int8=True, representative_data=representative
    )
    x = calibration(8, seed=4)
    output, _ = run_tflite(path, x)
    expected = to_numpy(slim(x))
    assert max_deviation(output, expected) <= 0.05 * np.max(np.abs(expected))


def bad_tflite_calls(tmp_path):
    ok = tmp_path / "ok.tflite"
    nan = calibration(4)
    nan[0, 0, 0, 0] = np.nan
    return {
        "int8_without_data": (dict(path=ok, int8=True), ValueError, "Missing argument `rep"),
        "data_without_int8": (
            dict(path=ok, representative_data=calibration()),
            ValueError,
            "only used with `int8=True`",
        ),
        "int8_not_bool": (dict(path=ok, int8=1), TypeError, "argument `int8`: expected a bool"),
        "data_wrong_shape": (
            dict(path=ok, int8=True, representative_data=np.zeros((4, 10, 10), "float32")),
            ValueError,
            r"`representative_data`: input 'image' expects samples of shape \(n, 10, 10, 3\)",
        ),
        "data_empty": (
            dict(path=ok, int8=True, representative_data=np.zeros((0, 10, 10, 3), "float32")),
            ValueError,
            "expected at least one sample",
        ),
        "data_nan": (dict(path=ok, int8=True, representative_data=nan), ValueError, "NaN"),
        "data_strings": (
            dict(path=ok, int8=True, representative_data=np.array(["a", "b"])),
            TypeError,
            "`representative_data`: expected numeric arrays",
        ),
        "directory_missing": (
            dict(path=tmp_path / "nodir" / "x.tflite"),
            ValueError,
            "argument `path`: its directory .* does not exist",
        ),
        "path_is_a_directory": (dict(path=tmp_path), ValueError, "which is a directory"),
        "path_not_a_path": (dict(path=3), TypeError, "argument `path`: expected a path"),
    }


@needs_saved_model_export
@pytest.mark.parametrize(
    "case",
    [
        "int8_without_data",
        "data_without_int8",
        "int8_not_bool",
        "data_wrong_shape",
        "data_empty",
        "data_nan",
        "data_strings",
        "directory_missing",
        "path_is_a_directory",
        "path_not_a_path",
    ],
)
def test_tflite_bad_arguments(pair, tmp_path, case):
    _, slim, _ = pair
    kwargs, error, message = bad_tflite_calls(tmp_path)[case]
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(error, match=message):
        export_tflite(slim, **kwargs)
    assert sorted(os.listdir(tmp_path)) == before


def two_input_model():
    a = keras.Input((3,), name="a")
    b = keras.Input((2, 2), name="b")
    merged = keras.layers.Concatenate()([a, keras.layers.Flatten()(b)])
    return keras.Model([a, b], keras.layers.Dense(1)(merged))


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict", "list"])
def test_representative_dataset_of_two_inputs(as_dict):
    model = two_input_model()
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 2, 2))  # float64
    samples = list(representative_dataset(model, {"b": b, "a": a} if as_dict else [a, b])())
    assert len(samples) == 5
    for i, sample in enumerate(samples):
        assert sorted(sample) == ["a", "b"]
        assert sample["a"].dtype == sample["b"].dtype == np.float32
        np.testing.assert_array_equal(sample["a"], a[i : i + 1].astype("float32"))
        np.testing.assert_array_equal(sample["b"], b[i : i + 1].astype("float32"))


@pytest.mark.parametrize(
    "data, error, message",
    [
        (
            {"a": np.zeros((4, 3)), "c": np.zeros((4, 2, 2))},
            ValueError,
            r"keyed by .*\['a', 'b'\]",
        ),
        ([np.zeros((4, 3))], ValueError, r"one array per model input \(2"),
        (np.zeros((4, 3)), TypeError, "a list or dict of 2 arrays"),
        ([np.zeros((4, 3)), np.zeros((3, 2, 2))], ValueError, r"same number .* \[4, 3\]"),
        ([np.zeros((4, 3)), np.zeros((4, 4))], ValueError, r"input 'b' expects .* \(n, 2, 2\)"),
    ],
    ids=["dict_keys", "list_length", "one_array", "sample_counts", "shape"],
)
def test_representative_dataset_of_two_inputs_refuses(data, error, message):
    with pytest.raises(error, match=message):
        representative_dataset(two_input_model(), data)


def test_representative_dataset_passes_a_callable_on():
    def samples():
        yield [np.zeros((1, 3), "float32"), np.zeros((1, 2, 2), "float32")]

    assert representative_dataset(two_input_model(), samples) is samples


@needs_saved_model_export
def test_saved_model_directory_must_exist(pair, tmp_path):
    _, slim, _ = pair
    with pytest.raises(ValueError, match="argument `path`: its directory .* does not exist"):
        export_saved_model(slim, tmp_path / "nodir" / "sm")
    assert not (tmp_path / "nodir").exists()


needs_onnx = pytest.mark.skipif(
    bool(onnx_missing_packages()) or importlib.util.find_spec("onnxruntime") is None,
    reason="ONNX export needs the `onnx` extra: pip install 'keras-dropneuron[onnx]' "
    f"(missing here: {', '.join(onnx_missing_packages()) or 'onnxruntime'})",
)


@needs_onnx
def test_onnx_runs_in_onnxruntime(pair, tmp_path):
    import onnxruntime

    model, slim, _ = pair
    x = calibration(8, seed=5)
    path = export_onnx(slim, tmp_path / "slim.onnx")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    (output,) = session.run(None, {name: x})
    np.testing.assert_allclose(output, to_numpy(model(x)), atol=1e-5)
    assert os.path.getsize(path) < 4 * slim.count_params() + 20_000  # the slim weights only


def test_onnx_bad_arguments(pair, tmp_path, monkeypatch):
    _, slim, _ = pair
    with pytest.raises(ValueError, match="argument `path`: its directory .* does not exist"):
        export_onnx(slim, tmp_path / "nodir" / "slim.onnx")
    with pytest.raises(TypeError, match="argument `opset_version`: expected an int >= 1"):
        export_onnx(slim, tmp_path / "slim.onnx", opset_version="17")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"needs .*onnx.*keras-dropneuron\[onnx\]"):
        export_onnx(slim, tmp_path / "slim.onnx")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_export_model_keras_formats(pair, tmp_path, fmt):
    model, slim, x = pair
    path = export_model(slim, tmp_path / f"slim.{fmt}", fmt)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-5)


@pytest.mark.parametrize(
    "fmt, kwargs, error, message",
    [
        ("tflite", {}, ValueError, r"argument `format`: expected one of \('keras', 'h5'"),
        (None, {}, TypeError, "argument `format`: expected one of"),
        ("keras", {"int8": True}, ValueError, "quantization is a TFLite conversion"),
        ("h5", {"suffix": ".keras"}, ValueError, "needs a path ending with .h5 or .hdf5"),
    ],
)
def test_export_model_bad_arguments(pair, tmp_path, fmt, kwargs, error, message):
    _, slim, _ = pair
    path = tmp_path / f"slim{kwargs.pop('suffix', '.keras')}"
    with pytest.raises(error, match=message):
        export_model(slim, path, fmt, **kwargs)
    assert not os.listdir(tmp_path)


def mlp_with_dead_units():
    inputs = keras.Input((20,), name="x")
    hidden = keras.layers.Dense(64, activation="relu", name="h1")(inputs)
    hidden = keras.layers.Dense(32, activation="relu", name="h2")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(10, name="out")(hidden))
    kernel = model.get_layer("h2").kernel.numpy()
    kernel[:24] = 0  # 24 of the 64 h1 units are read by nobody
    kernel[:, :12] = 0  # 12 of the 32 h2 units are the constant relu(bias), folded
    model.get_layer("h2").kernel.assign(kernel)
    bias = np.random.default_rng(0).uniform(0, 0.5, 32).astype("float32")
    model.get_layer("h2").bias.assign(bias)
    return model


def test_keras_int8_quantization_of_a_slim_model(tmp_path):
    model = mlp_with_dead_units()
    x = np.random.default_rng(1).standard_normal((256, 20)).astype("float32")
    slim = slim_model(model)
    assert [slim.get_layer(n).units for n in ("h1", "h2")] == [40, 20]
    expected, expected_slim = to_numpy(model(x)), to_numpy(slim(x))
    np.testing.assert_allclose(expected_slim, expected, atol=1e-5)

    quantized_full = keras.models.clone_model(model)
    quantized_full.set_weights(model.get_weights())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Layer InputLayer does not have a `quantize`")
        quantized_full.quantize("int8")
        slim.quantize("int8")
    assert [slim.get_layer(n).quantization_mode for n in ("h1", "h2", "out")] == ["int8"] * 3
    deviation = max_deviation(slim(x), expected_slim)
    deviation_full = max_deviation(quantized_full(x), expected)
    scale = np.max(np.abs(expected))
    assert 0 < deviation <= 0.03 * scale, (deviation, scale)
    assert deviation <= 3 * deviation_full and deviation_full <= 3 * deviation
    # The quantized slim model saves and reloads with its int8 weights.
    slim.save(tmp_path / "slim_int8.keras")
    loaded = keras.saving.load_model(tmp_path / "slim_int8.keras")
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(slim(x)), atol=1e-6)
    assert loaded.get_layer("h1").quantization_mode == "int8"


@pytest.mark.skipif(BACKEND != "torch", reason="the clear error is PyTorch's")
@pytest.mark.parametrize("export", [export_saved_model, export_tflite])
def test_export_says_which_backends_can_on_torch(pair, tmp_path, export):
    _, slim, _ = pair
    with pytest.raises(NotImplementedError, match="needs the TensorFlow or JAX backend"):
        export(slim, tmp_path / "out")
    assert not (tmp_path / "out").exists()
