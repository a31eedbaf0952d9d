"""Helpers to ship a slim model as a TensorFlow SavedModel or a TFLite file."""

import os
import tempfile

import keras

from keras_dropneuron import checks


def export_saved_model(model: keras.Model, path: str | os.PathLike) -> str:
    """Exports `model` as an inference-only TensorFlow SavedModel.

    The SavedModel has a `serving_default` signature, usable from
    `tf.saved_model.load(path).signatures["serving_default"]` or TF Serving.

    Args:
        model: The model to export.
        path: Directory to write; it must not exist yet.

    Returns:
        `path` as a string.

    Raises:
        TypeError: If `model` is not a `keras.Model`.
        FileExistsError: If `path` already exists.

    Example:

    >>> export_saved_model(slim, "/tmp/slim_saved_model")
    """
    checks.check_keras_model("model", model)
    path = os.fspath(path)
    if os.path.exists(path):
        raise FileExistsError(
            f"Invalid value for argument `path`: expected a path that does not "
            f"exist yet. Received: path={path!r}, which exists"
        )
    model.export(path, format="tf_saved_model", verbose=False)
    return path


def tflite_bytes(model: keras.Model) -> bytes:
    """Converts `model` to a TFLite flatbuffer (via a temporary SavedModel).

    Args:
        model: The model to convert.

    Returns:
        The flatbuffer bytes.

    Raises:
        TypeError: If `model` is not a `keras.Model`.
    """
    checks.check_keras_model("model", model)
    import tensorflow as tf  # TFLite needs TensorFlow whatever the backend

    with tempfile.TemporaryDirectory() as tmp:
        saved = export_saved_model(model, os.path.join(tmp, "saved_model"))
        return tf.lite.TFLiteConverter.from_saved_model(saved).convert()


def export_tflite(model: keras.Model, path: str | os.PathLike) -> str:
    """Writes `model` as a TFLite file.

    Args:
        model: The model to convert.
        path: File to write (overwritten if it exists).

    Returns:
        `path` as a string.

    Raises:
        TypeError: If `model` is not a `keras.Model`.

    Example:

    >>> export_tflite(slim, "/tmp/slim.tflite")
    """
    checks.check_keras_model("model", model)
    path = os.fspath(path)
    data = tflite_bytes(model)
    with open(path, "wb") as file:
        file.write(data)
    return path
