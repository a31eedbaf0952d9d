"""What every verb of the command line shares: one-line errors, model loading, path checks.

The verbs raise `CommandError` for anything the user got wrong; `main` prints it
as one line (`keras-dropneuron: error: ...`) and exits with status 1. Paths are
checked before anything is loaded or written, and nothing ever writes to the
input model.
"""

import argparse
import contextlib
import logging
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

from keras_dropneuron.checks import argparse_type, check_non_negative_float

PROG = "keras-dropneuron"
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

# What `ArgumentParser.add_subparsers` returns; each verb's `add_parser` takes it.
SubParsers = argparse._SubParsersAction

# `--threshold` of `slim` and `report`: the wording of the Python API's check.
THRESHOLD = argparse_type("--threshold", check_non_negative_float)


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def one_line(error: BaseException) -> str:
    """Returns `error` as `"TypeName: message"` on a single line.

    Args:
        error: The exception to describe.

    Returns:
        The type name, then the message with every run of whitespace (newlines
        included) made one space; only the type name if the message is empty.
    """
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def check_input(path: str) -> None:
    """Checks the input model file before anything loads it.

    Args:
        path: The input model, a `.keras` or `.h5` file.

    Raises:
        CommandError: If `path` is missing, a directory, has another suffix or
            cannot be read.
    """
    if not os.path.exists(path):
        raise CommandError(f"input model not found: {path}")
    if os.path.isdir(path):
        raise CommandError(f"input model is a directory, expected a .keras or .h5 file: {path}")
    if not path.endswith(MODEL_SUFFIXES):
        raise CommandError(f"input model must be a .keras or .h5 file, received: {path}")
    if not os.access(path, os.R_OK):
        raise CommandError(f"input model is not readable (permission denied): {path}")


def register_saved_classes(path: str) -> None:
    """Registers keras-hub's classes and the head-sized blocks a file may hold.

    A slim keras-hub model, or a model whose encoder lost heads, saves layers
    that only exist once keras-hub and `load_keras_hub_rules` are imported;
    keras-hub is imported only for a file that names them.
    """
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                config = archive.read("config.json").decode("utf-8", "replace")
        else:
            import h5py

            with h5py.File(path, "r") as file:
                config = str(file.attrs.get("model_config", ""))
    except Exception:  # an unreadable file is reported by the load itself
        return
    if "keras_hub" in config or "keras_dropneuron>HeadSized" in config:
        with contextlib.suppress(ImportError):
            import keras_hub  # noqa: F401  (registers its classes)
        from keras_dropneuron.layer_rules import load_keras_hub_rules

        load_keras_hub_rules()


def load_model(path: str) -> Any:
    """Loads the Keras model at `path`, uncompiled.

    Args:
        path: A `.keras` or `.h5` file that `check_input` accepted.

    Returns:
        The `keras.Model`.

    Raises:
        CommandError: If the file cannot be read as a Keras model, for whatever
            reason (a damaged archive, a missing custom class, ...).
    """
    import keras

    try:
        if path.endswith(".keras"):
            # Keras reports a damaged zip as "File not found"; name the real reason.
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
            if damaged:
                raise zipfile.BadZipFile(f"damaged archive member {damaged}")
        register_saved_classes(path)
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # any failure to read is the same to the user
        raise CommandError(f"cannot read {path} as a Keras model: {one_line(error)}") from error


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Silences Python warnings and TensorFlow's log warnings in the block, unless `verbose`.

    The verbs report what matters in their own one-line messages; the
    warnings of Keras, TensorFlow and the callbacks (e.g. tf.function
    retracing) repeat it or are noise to the command-line user.

    Args:
        verbose: Whether to let them through (`--verbose`).

    Returns:
        A context manager.
    """
    if verbose:
        yield
        return
    logger = logging.getLogger("tensorflow")  # tf.function's retracing warnings go here
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def check_directory(option: str, path: str) -> None:
    """Checks that `path` is an existing, writable directory.

    Args:
        option: The option that names it, for the message.
        path: The directory.

    Raises:
        CommandError: If `path` does not exist, is not a directory or is not
            writable.
    """
    if not os.path.exists(path):
        raise CommandError(f"{option}: the directory {path} does not exist")
    if not os.path.isdir(path):
        raise CommandError(f"{option}: {path} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise CommandError(f"{option}: the directory {path} is not writable")


def check_output(option: str, path: str, input_path: str, directory: bool = False) -> None:
    """Checks that `path` can be written, before anything is written.

    Args:
        option: The option that names it, for the message.
        path: The output file (or directory, with `directory=True`).
        input_path: The input model, which must never be overwritten.
        directory: Whether the output is a directory that must not exist yet
            (a SavedModel). Defaults to `False`.

    Raises:
        CommandError: If the parent directory cannot take it, `path` is the
            input model, or `path` exists where it must not.
    """
    check_directory(option, os.path.dirname(path) or os.curdir)
    if os.path.exists(path) and os.path.samefile(path, input_path):
        raise CommandError(f"refusing to overwrite the input model: {path}")
    if directory and os.path.exists(path):
        raise CommandError(f"{option} directory already exists: {path}")
    if os.path.isdir(path):
        raise CommandError(f"{option} is a directory, expected a file: {path}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise CommandError(f"{option}: {path} is not writable")


def check_model_output(path: str, suffixes: tuple[str, ...] = MODEL_SUFFIXES) -> None:
    """Checks the suffix of `-o/--output`, a `.keras` or `.h5` model file.

    Args:
        path: The output model path.
        suffixes: The suffixes accepted. Defaults to `MODEL_SUFFIXES`
            (`.hdf5` too).

    Raises:
        CommandError: If `path` ends with none of `suffixes`.
    """
    if not path.endswith(suffixes):
        raise CommandError(f"output must end with .keras or .h5, received: {path}")


def check_out_directory(option: str, path: str) -> None:
    """Checks that `path` is a writable directory or can be made one.

    Args:
        option: The option that names it, for the message.
        path: The directory, which may not exist yet.

    Raises:
        CommandError: If its nearest existing ancestor is not a writable
            directory.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    check_directory(option, existing)


def write(path: str, save: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Calls `save(*args, **kwargs)`, turning any failure into a one-line error.

    Args:
        path: What `save` writes, for the message.
        save: The function that writes it.
        *args: Positional arguments of `save`.
        **kwargs: Keyword arguments of `save`.

    Raises:
        CommandError: If `save` raises anything.
    """
    try:
        save(*args, **kwargs)
    except Exception as error:  # e.g. TFLite's ConverterError for an op int8 cannot take
        raise CommandError(f"cannot write {path}: {one_line(error)}") from error
