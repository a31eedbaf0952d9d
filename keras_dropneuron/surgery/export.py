"""Helpers to ship a slim model: TensorFlow SavedModel, TFLite (LiteRT) and ONNX files.

Every export goes through Keras's own `model.export(path, format=...)` where the
installed Keras offers the format, so a slim model ships exactly as any Keras
model would. TFLite files can be fully integer-quantized (post-training, with a
representative data set).
"""

import importlib.util
import os
import shutil
import tempfile
import warnings

import keras
import numpy as np

from keras_dropneuron import checks

# Keras exports a SavedModel from these backends (JAX through jax2tf).
SAVED_MODEL_BACKENDS = ("tensorflow", "jax")

# `export_model` formats, as the command line names them.
EXPORT_FORMATS = ("keras", "h5", "saved_model", "litert", "onnx")

# What `model.export(format="onnx")` imports on each backend (Keras 3.15).
_ONNX_NEEDS = {
    "tensorflow": ("tf2onnx", "onnx"),
    "jax": ("jax2onnx", "onnx"),
    "torch": ("onnxscript", "onnx"),
}


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


def check_output_path(name, path, directory=False):
    """Returns `path` as a string after checking it can be written.

    Its parent directory must exist (nothing is created on the way), and a file
    output must not be an existing directory.

    Raises:
        TypeError: If `path` is not a string or path-like.
        ValueError: If the parent directory does not exist or is a file, or if a
            file output names a directory.
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
    """Bytes of the file `path`, or of every file below the directory `path` (a SavedModel)."""
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    return os.path.getsize(path)


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


def _input_names(model):
    return [getattr(t, "name", None) or f"input_{i}" for i, t in enumerate(model.inputs)]


def _calibration_arrays(model, data):
    """The representative data as one float32 array per model input, checked."""
    names = _input_names(model)
    if isinstance(data, dict):
        if set(data) != set(names):
            raise ValueError(
                "Invalid value for argument `representative_data`: expected a dict keyed by "
                f"the model's input names {names}. Received keys {sorted(data)}"
            )
        arrays = [data[name] for name in names]
    elif isinstance(data, list | tuple) and len(names) > 1:
        if len(data) != len(names):
            raise ValueError(
                "Invalid value for argument `representative_data`: expected one array per "
                f"model input ({len(names)}: {names}). Received {len(data)} arrays"
            )
        arrays = list(data)
    else:
        if len(names) > 1:
            raise checks.invalid_type(
                "representative_data",
                f"a list or dict of {len(names)} arrays (one per input {names}) or a callable",
                data,
            )
        arrays = [data]
    checked = []
    for name, tensor, array in zip(names, model.inputs, arrays, strict=True):
        try:
            array = np.asarray(array)
        except (TypeError, ValueError):
            raise checks.invalid_type(
                "representative_data", "an array, a list or dict of arrays, or a callable", data
            ) from None
        if array.dtype.kind not in "biuf":
            raise checks.invalid_type(
                "representative_data",
                "numeric arrays (or a callable)",
                f"<array of dtype {array.dtype}>",
            )
        expected = tuple(tensor.shape[1:])
        shape_ok = array.ndim == len(expected) + 1 and all(
            want is None or want == got
            for want, got in zip(expected, array.shape[1:], strict=True)
        )
        if not shape_ok:
            raise ValueError(
                f"Invalid value for argument `representative_data`: input {name!r} expects "
                f"samples of shape (n, {', '.join(str(d) for d in expected)}). Received an "
                f"array of shape {array.shape}"
            )
        if len(array) == 0:
            raise ValueError(
                "Invalid value for argument `representative_data`: expected at least one "
                f"sample. Received an empty array for input {name!r}"
            )
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ValueError(
                "Invalid value for argument `representative_data`: the samples for input "
                f"{name!r} contain NaN or infinite values, which calibration cannot use"
            )
        checked.append(array.astype(tensor.dtype or "float32"))
    counts = {len(a) for a in checked}
    if len(counts) > 1:
        raise ValueError(
            "Invalid value for argument `representative_data`: every input needs the same "
            f"number of samples. Received {[len(a) for a in checked]}"
        )
    return names, checked


def representative_dataset(model, data):
    """A TFLite `representative_dataset` callable for `model` from `data`.

    Args:
        model: The model to be converted.
        data: Calibration samples: an array `(n, *input_shape)` for a one-input
            model; a list (in input order) or a dict (by input name) of such
            arrays for several inputs; or a callable returning an iterable of
            samples, in TFLite's convention (passed on unchanged).

    Returns:
        A callable yielding `{input name: one sample with a batch axis of 1}`.

    Raises:
        TypeError: If `data` is none of the above.
        ValueError: If the arrays do not match the model's inputs, are empty,
            or hold NaN or infinite values.
    """
    if callable(data):
        return data
    names, arrays = _calibration_arrays(model, data)

    def samples():
        for i in range(len(arrays[0])):
            yield {name: array[i : i + 1] for name, array in zip(names, arrays, strict=True)}

    return samples


def _converter_options(model, int8, representative_data):
    """TFLiteConverter attributes for the request (none for a float file)."""
    checks.check_bool("int8", int8)
    if not int8:
        if representative_data is not None:
            raise ValueError(
                "Invalid value for argument `representative_data`: it calibrates int8 "
                "quantization and is only used with `int8=True`. Received int8=False"
            )
        return {}
    if representative_data is None:
        raise ValueError(
            "Missing argument `representative_data`: int8=True (full-integer post-training "
            "quantization) needs calibration samples: an array of inputs (100-500 samples "
            "typical) or a callable yielding them"
        )
    import tensorflow as tf

    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": representative_dataset(model, representative_data),
        # Integer kernels only; float32 input and output (quantized at the edges).
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
    }


def _keras_litert(model, path, options):
    """Writes `path` with Keras's `format="litert"`; False where this Keras lacks it."""
    if keras.backend.backend() != "tensorflow":
        return False  # Keras converts to LiteRT from TensorFlow (and PyTorch) only
    try:
        model.export(path, format="litert", verbose=False, **options)
    except ValueError as error:
        if "Unrecognized format" in str(error):
            return False
        raise
    return True


def _converter_litert(model, path, options, tmp):
    """Writes `path` from a temporary SavedModel with `tf.lite.TFLiteConverter`."""
    import tensorflow as tf  # TFLite needs TensorFlow whatever the backend

    saved = export_saved_model(model, os.path.join(tmp, "saved_model"))
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    for name, value in options.items():
        if name == "target_spec":
            for key, item in value.items():
                setattr(converter.target_spec, key, item)
        else:
            setattr(converter, name, value)
    with open(path, "wb") as file:
        file.write(converter.convert())


def tflite_bytes(model: keras.Model, *, int8: bool = False, representative_data=None) -> bytes:
    """Converts `model` to a TFLite (LiteRT) flatbuffer.

    Uses Keras's `model.export(format="litert")` where the installed Keras has it
    (Keras 3.15 on TensorFlow), else `tf.lite.TFLiteConverter` on a temporary
    SavedModel (the JAX backend, older Keras).

    Args:
        model: The model to convert.
        int8: Full-integer post-training quantization: int8 weights and
            activations, integer kernels only (the conversion fails rather than
            keep a float op), float32 input and output. Defaults to `False`.
        representative_data: Calibration samples for `int8=True` (see
            `representative_dataset`); required with it, refused without it.

    Returns:
        The flatbuffer bytes.

    Raises:
        TypeError: If `model` is not a `keras.Model` or `int8` not a bool.
        ValueError: If `int8=True` comes without `representative_data` (or the
            reverse), or the data do not fit the model's inputs.
        NotImplementedError: On the PyTorch backend (see `export_saved_model`).
    """
    checks.check_keras_model("model", model)
    check_export_backend("export_tflite")
    options = _converter_options(model, int8, representative_data)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")  # Keras wants the .tflite suffix
        if not _keras_litert(model, path, options):
            _converter_litert(model, path, options, tmp)
        with open(path, "rb") as file:
            return file.read()


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    int8: bool = False,
    representative_data=None,
) -> str:
    """Writes `model` as a TFLite (LiteRT) file.

    Args:
        model: The model to convert.
        path: File to write (overwritten if it exists); its directory must exist.
        int8: Full-integer post-training quantization (see `tflite_bytes`).
            Defaults to `False`.
        representative_data: Calibration samples, required with `int8=True`:
            an array `(n, *input_shape)`, a list or dict of arrays for several
            inputs, or a callable in TFLite's `representative_dataset`
            convention.

    Returns:
        `path` as a string.

    Raises:
        TypeError: If `model` is not a `keras.Model`, `path` not a path or
            `int8` not a bool.
        ValueError: If the directory of `path` does not exist, `int8=True` comes
            without `representative_data` (or the reverse), or the data do not
            fit the model's inputs.
        NotImplementedError: On the PyTorch backend (see `export_saved_model`).

    Example:

    >>> export_tflite(slim, "/tmp/slim.tflite")
    >>> export_tflite(slim, "/tmp/slim_int8.tflite", int8=True, representative_data=x[:200])
    """
    checks.check_keras_model("model", model)
    check_export_backend("export_tflite")
    path = check_output_path("path", path)
    data = tflite_bytes(model, int8=int8, representative_data=representative_data)
    with open(path, "wb") as file:
        file.write(data)
    return path


def onnx_missing_packages():
    """The packages `export_onnx` needs on this backend that are not installed."""
    needed = _ONNX_NEEDS.get(keras.backend.backend(), ("onnx",))
    return [name for name in needed if importlib.util.find_spec(name) is None]


def export_onnx(
    model: keras.Model, path: str | os.PathLike, *, opset_version: int | None = None
) -> str:
    """Writes `model` as an ONNX file with Keras's `model.export(format="onnx")`.

    Run it with `onnxruntime.InferenceSession(path)`. Needs the `onnx` extra
    (`pip install keras-dropneuron[onnx]`: tf2onnx and onnx on TensorFlow;
    Keras uses jax2onnx on JAX and torch.onnx with onnxscript on PyTorch).

    Args:
        model: The model to export (float32; Keras refuses other dtype policies).
        path: File to write (overwritten if it exists); its directory must exist.
        opset_version: ONNX opset, or `None` for the converter's default.

    Returns:
        `path` as a string.

    Raises:
        TypeError: If `model` is not a `keras.Model` or `path` not a path.
        ValueError: If the directory of `path` does not exist.
        ImportError: If the converter packages are not installed.

    Example:

    >>> export_onnx(slim, "/tmp/slim.onnx")
    """
    checks.check_keras_model("model", model)
    path = check_output_path("path", path)
    if opset_version is not None:
        opset_version = checks.check_int("opset_version", opset_version, minimum=1)
    missing = onnx_missing_packages()
    if missing:
        raise ImportError(
            f"`export_onnx` needs {' and '.join(missing)} on the "
            f"{keras.backend.backend()!r} backend: pip install 'keras-dropneuron[onnx]' "
            f"(or pip install {' '.join(missing)})"
        )
    with tempfile.TemporaryDirectory() as tmp:
        # Converted aside, so a failure leaves no partial file at `path`.
        written = os.path.join(tmp, "model.onnx")
        with warnings.catch_warnings():
            # Keras's numpy-2 patch of tf2onnx probes `np.object`, which numpy warns about.
            warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
            model.export(written, format="onnx", verbose=False, opset_version=opset_version)
        shutil.move(written, path)
    return path


def export_model(
    model: keras.Model,
    path: str | os.PathLike,
    format: str,
    *,
    int8: bool = False,
    representative_data=None,
) -> str:
    """Writes `model` to `path` in one of `EXPORT_FORMATS`.

    Args:
        model: The model to write.
        path: Output path (a directory for `"saved_model"`, else a file).
        format: `"keras"`, `"h5"` (`model.save`), `"saved_model"`, `"litert"`
            (TFLite) or `"onnx"`.
        int8: Full-integer TFLite quantization; `"litert"` only.
        representative_data: Calibration samples for `int8=True`.

    Returns:
        `path` as a string.

    Raises:
        ValueError: If `format` is unknown, or `int8` is asked of another
            format; and whatever the format's own export raises.
    """
    checks.check_keras_model("model", model)
    format = checks.check_choice("format", format, EXPORT_FORMATS)
    checks.check_bool("int8", int8)
    if format != "litert" and (int8 or representative_data is not None):
        raise ValueError(
            "Invalid value for argument `int8`: full-integer quantization is a TFLite "
            f"conversion (format='litert'). Received: format={format!r}"
        )
    if format == "saved_model":
        return export_saved_model(model, path)
    if format == "litert":
        return export_tflite(model, path, int8=int8, representative_data=representative_data)
    if format == "onnx":
        return export_onnx(model, path)
    path = check_output_path("path", path)
    suffixes = {"keras": (".keras",), "h5": (".h5", ".hdf5")}[format]
    if not path.endswith(suffixes):
        raise ValueError(
            f"Invalid value for argument `path`: format={format!r} needs a path ending with "
            f"{' or '.join(suffixes)}. Received: path={path!r}"
        )
    model.save(path)
    return path
