"""Export to a TensorFlow SavedModel, through Keras's `model.export`."""

import os

import keras

from keras_dropneuron import checks
from keras_dropneuron.export.common import check_export_backend, check_output_path


def export_saved_model(model: keras.Model, path: str | os.PathLike) -> str:
    """Exports `model` as an inference-only TensorFlow SavedModel.

    The SavedModel has a `serving_default` signature, usable from
    `tf.saved_model.load(path).signatures["serving_default"]` or TF Serving.

    Args:
        model: The model to export.
        path: Directory to write; it must not exist yet, its parent must.

    Returns:
        `path` as a string.

    Raises:
        TypeError: If `model` is not a `keras.Model`.
        FileExistsError: If `path` already exists.
        ValueError: If the parent directory of `path` does not exist.
        NotImplementedError: On the PyTorch backend, from which Keras cannot
            export a SavedModel (TensorFlow and JAX can).

    Example:

    >>> export_saved_model(slim, "/tmp/slim_saved_model")
    """
    checks.check_keras_model("model", model)
    check_export_backend("export_saved_model")
    path = check_output_path("path", path, directory=True)
    model.export(path, format="tf_saved_model", verbose=False)
    return path
