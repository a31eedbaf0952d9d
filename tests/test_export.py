"""A slim model saves, reloads and exports with the same outputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_dropneuron.surgery import slim_model
from keras_dropneuron.surgery.export import export_saved_model, export_tflite

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")


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


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_reload(pair, tmp_path, suffix):
    model, slim, x = pair
    path = tmp_path / f"slim{suffix}"
    slim.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)
    assert loaded.get_layer("c1").filters == 4


def test_saved_model_serving_signature(pair, tmp_path):
    model, slim, x = pair
    path = export_saved_model(slim, tmp_path / "sm")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    (output,) = serve(tf.constant(x)).values()
    np.testing.assert_allclose(output.numpy(), model(x), atol=1e-5)
    with pytest.raises(FileExistsError, match="argument `path`"):
        export_saved_model(slim, path)


def test_tflite(pair, tmp_path):
    model, slim, x = pair
    path = export_tflite(slim, tmp_path / "slim.tflite")
    interpreter = tf.lite.Interpreter(model_path=path)
    (runner,) = [interpreter.get_signature_runner(k) for k in interpreter.get_signature_list()]
    for row in x:
        (output,) = runner(**{name: row[None] for name in runner.get_input_details()}).values()
        np.testing.assert_allclose(output[0], model(row[None])[0], atol=1e-4)
