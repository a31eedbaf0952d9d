"""Export to ONNX, through Keras's `model.export(format="onnx")`."""

import importlib.util
import os
import shutil
import tempfile
import warnings

import keras

from keras_dropneuron import checks
from keras_dropneuron.export.common import check_output_path

# What `model.export(format="onnx")` imports on each backend (Keras 3.15).
_ONNX_NEEDS = {
    "tensorflow": ("tf2onnx", "onnx"),
    "jax": ("jax2onnx", "onnx"),
    "torch": ("onnxscript", "onnx"),
}


def onnx_missing_packages() -> list[str]:
    """The packages `export_onnx` needs on this backend that are not installed.

    Returns:
        Their names, in the order they are needed; empty if none is missing.
    """
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
            Defaults to `None`.

    Returns:
        `path` as a string.

    Raises:
        TypeError: If `model` is not a `keras.Model`, `path` not a path or
            `opset_version` not an int.
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
