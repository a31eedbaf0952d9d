"""Helpers to ship a slim model as a TensorFlow SavedModel or a TFLite file."""

import os
import tempfile

import keras

from keras_dropneuron import checks

# Keras exports a SavedModel from these backends (JAX through jax2tf).
SAVED_MODEL_BACKENDS = ("tensorflow", "jax")


def check_export_backend(what):
    """Refuses, with a clear message, a SavedModel or TFLite export Keras cannot do here."""
    backend = keras.backend.backend()
    if backend not in SAVED_MODEL_BACKENDS:
        raise NotImplementedError(
            f"`{what}` needs the TensorFlow or JAX backend: Keras {keras.__version__} cannot "
            f"export a TensorFlow SavedModel (or TFLite) from the {backend!r} backend. Save "
            "the model with `model.save('slim.keras')` and export it in a process started "
            "with KERAS_BACKEND=tensorflow (or jax), for example with "
            "`keras-dropneuron slim slim.keras -o out.keras --saved-model DIR --tflite FILE`."
        )


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
        NotImplementedError: On the PyTorch backend, from which Keras cannot
            export a SavedModel (TensorFlow and JAX can).

    Example:

    >>> export_saved_model(slim, "/tmp/slim_saved_model")
    """
    checks.check_keras_model("model", model)
    check_export_backend("export_saved_model")
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
        NotImplementedError: On the PyTorch backend (see `export_saved_model`).
    """
    checks.check_keras_model("model", model)
    check_export_backend("export_tflite")
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
        NotImplementedError: On the PyTorch backend (see `export_saved_model`).

    Example:

    >>> export_tflite(slim, "/tmp/slim.tflite")
    """
    checks.check_keras_model("model", model)
    check_export_backend("export_tflite")
    path = os.fspath(path)
    data = tflite_bytes(model)
    with open(path, "wb") as file:
        file.write(data)
    return path
