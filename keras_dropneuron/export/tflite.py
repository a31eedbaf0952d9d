"""Export to TFLite (LiteRT), float or with full-integer post-training quantization.

Keras's own `model.export(format="litert")` converts where the installed Keras
offers it (Keras 3.15 on TensorFlow); elsewhere (the JAX backend, older Keras)
`tf.lite.TFLiteConverter` converts a temporary SavedModel.
"""

import os
import tempfile

import keras

from keras_dropneuron import checks
from keras_dropneuron.export.calibration import RepresentativeData, representative_dataset
from keras_dropneuron.export.common import check_export_backend, check_output_path
from keras_dropneuron.export.saved_model import export_saved_model


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


def tflite_bytes(
    model: keras.Model,
    *,
    int8: bool = False,
    representative_data: RepresentativeData | None = None,
) -> bytes:
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
            Defaults to `None`.

    Returns:
        The flatbuffer bytes.

    Raises:
        TypeError: If `model` is not a `keras.Model` or `int8` not a bool.
        ValueError: If `int8=True` comes without `representative_data` (or the
            reverse), or the data do not fit the model's inputs.
        NotImplementedError: On the PyTorch backend (see `export_saved_model`).

    Example:

    >>> flatbuffer = tflite_bytes(slim)
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
    representative_data: RepresentativeData | None = None,
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
            convention. Defaults to `None`.

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
