"""`export_model`: one entry point for every format the command line writes."""

import os

import keras

from keras_dropneuron import checks
from keras_dropneuron.export.calibration import RepresentativeData
from keras_dropneuron.export.common import check_output_path
from keras_dropneuron.export.onnx import export_onnx
from keras_dropneuron.export.saved_model import export_saved_model
from keras_dropneuron.export.tflite import export_tflite

# `export_model` formats, as the command line names them.
EXPORT_FORMATS = ("keras", "h5", "saved_model", "litert", "onnx")
_KERAS_SUFFIXES = {"keras": (".keras",), "h5": (".h5", ".hdf5")}


def _save(model, path, format):
    """`model.save(path)` for the Keras formats, after checking the path and its suffix."""
    path = check_output_path("path", path)
    suffixes = _KERAS_SUFFIXES[format]
    if not path.endswith(suffixes):
        raise ValueError(
            f"Invalid value for argument `path`: format={format!r} needs a path ending with "
            f"{' or '.join(suffixes)}. Received: path={path!r}"
        )
    model.save(path)
    return path


def export_model(
    model: keras.Model,
    path: str | os.PathLike,
    format: str,
    *,
    int8: bool = False,
    representative_data: RepresentativeData | None = None,
) -> str:
    """Writes `model` to `path` in one of `EXPORT_FORMATS`.

    Args:
        model: The model to write.
        path: Output path (a directory for `"saved_model"`, else a file).
        format: `"keras"`, `"h5"` (`model.save`), `"saved_model"`, `"litert"`
            (TFLite) or `"onnx"`.
        int8: Full-integer TFLite quantization; `"litert"` only. Defaults to
            `False`.
        representative_data: Calibration samples for `int8=True`. Defaults to
            `None`.

    Returns:
        `path` as a string.

    Raises:
        TypeError: If `model` is not a `keras.Model`, `format` not a string or
            `int8` not a bool.
        ValueError: If `format` is unknown, or `int8` is asked of another
            format; and whatever the format's own export raises.

    Example:

    >>> export_model(slim, "/tmp/slim.tflite", "litert")
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
    return _save(model, path, format)
