"""What every export shares: the backends that can export, output path checks, sizes."""

import os

import keras

from keras_dropneuron import checks

# Keras exports a SavedModel from these backends (JAX through jax2tf).
SAVED_MODEL_BACKENDS = ("tensorflow", "jax")


def check_export_backend(what: str) -> None:
    """Refuses, with a clear message, a SavedModel or TFLite export Keras cannot do here.

    Args:
        what: The function asked to export, named in the message.

    Raises:
        NotImplementedError: If the Keras backend is not one of
            `SAVED_MODEL_BACKENDS` (PyTorch).
    """
    backend = keras.backend.backend()
    if backend not in SAVED_MODEL_BACKENDS:
        raise NotImplementedError(
            f"`{what}` needs the TensorFlow or JAX backend: Keras {keras.__version__} cannot "
            f"export a TensorFlow SavedModel (or TFLite) from the {backend!r} backend. Save "
            "the model with `model.save('slim.keras')` and export it in a process started "
            "with KERAS_BACKEND=tensorflow (or jax), for example with "
            "`keras-dropneuron slim slim.keras -o out.keras --saved-model DIR --tflite FILE`."
        )


def check_output_path(name: str, path: str | os.PathLike, directory: bool = False) -> str:
    """Returns `path` as a string after checking it can be written.

    Its parent directory must exist (nothing is created on the way), and a file
    output must not be an existing directory.

    Args:
        name: The argument that holds `path`, named in the messages.
        path: The output path.
        directory: Whether the output is a directory that must not exist yet
            (a SavedModel). Defaults to `False`.

    Returns:
        `path` as a string.

    Raises:
        TypeError: If `path` is not a string or path-like.
        ValueError: If `path` is empty, its parent directory does not exist or
            is a file, or a file output names a directory.
        FileExistsError: If a directory output (`directory=True`) exists.
    """
    if not isinstance(path, str | os.PathLike):
        raise checks.invalid_type(name, "a path (str or os.PathLike)", path)
    path = os.fspath(path)
    if not path:
        raise checks.invalid_value(name, "a non-empty path", path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise ValueError(
            f"Invalid value for argument `{name}`: its directory {parent!r} {what}. "
            f"Received: {name}={path!r}"
        )
    if directory and os.path.exists(path):
        raise FileExistsError(
            f"Invalid value for argument `{name}`: expected a path that does not "
            f"exist yet. Received: {name}={path!r}, which exists"
        )
    if not directory and os.path.isdir(path):
        raise ValueError(
            f"Invalid value for argument `{name}`: expected a file path. "
            f"Received: {name}={path!r}, which is a directory"
        )
    return path


def artifact_size(path: str | os.PathLike) -> int:
    """Bytes of the file `path`, or of every file below the directory `path` (a SavedModel).

    Args:
        path: An exported file or directory.

    Returns:
        Its size in bytes.
    """
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    return os.path.getsize(path)
