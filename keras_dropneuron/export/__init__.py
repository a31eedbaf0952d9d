"""Ship a slim model: Keras files, TensorFlow SavedModel, TFLite (LiteRT) and ONNX.

Every export goes through Keras's own `model.export(path, format=...)` where the
installed Keras offers the format, so a slim model ships exactly as any Keras
model would. TFLite files can be fully integer-quantized (post-training, with a
representative data set). One module per format:

- `saved_model`: `export_saved_model`.
- `tflite`: `export_tflite` and `tflite_bytes`, float or int8.
- `calibration`: `representative_dataset`, the int8 calibration samples.
- `onnx`: `export_onnx`.
- `formats`: `export_model`, one entry point for every format by name.
- `common`: the backends that can export, output path checks, `artifact_size`.

Example:

>>> from keras_dropneuron import export_tflite, slim_model
>>> export_tflite(slim_model(pruned), "/tmp/slim.tflite")
"""

from keras_dropneuron.export.calibration import RepresentativeData, representative_dataset
from keras_dropneuron.export.common import (
    SAVED_MODEL_BACKENDS,
    artifact_size,
    check_export_backend,
    check_output_path,
)
from keras_dropneuron.export.formats import EXPORT_FORMATS, export_model
from keras_dropneuron.export.onnx import export_onnx, onnx_missing_packages
from keras_dropneuron.export.saved_model import export_saved_model
from keras_dropneuron.export.tflite import export_tflite, tflite_bytes

__all__ = [
    "EXPORT_FORMATS",
    "SAVED_MODEL_BACKENDS",
    "RepresentativeData",
    "artifact_size",
    "check_export_backend",
    "check_output_path",
    "export_model",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "onnx_missing_packages",
    "representative_dataset",
    "tflite_bytes",
]
