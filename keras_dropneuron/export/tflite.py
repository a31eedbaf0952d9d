"""Export to TFLite (LiteRT), float or with full-integer post-training quantization.

Keras's own `model.export(format="litert")` converts where the installed Keras
offers it (Keras 3.15 on TensorFlow); elsewhere (the JAX backend, older Keras)
`tf.lite.TFLiteConverter` converts a temporary SavedModel.

Files hold TFLite builtin ops only unless `select_tf_ops=True`: a file with
Select TF (Flex) ops does not run in the standard interpreter. Recurrent layers
(LSTM, GRU, SimpleRNN, Bidirectional) convert to builtin ops only with a fixed
batch size, so their files take a batch of 1.
"""

import os
import re
import tempfile
import uuid
import warnings

import keras

from keras_dropneuron import checks, keras_internals
from keras_dropneuron.export.calibration import RepresentativeData, representative_dataset
from keras_dropneuron.export.common import check_export_backend, check_output_path
from keras_dropneuron.export.saved_model import export_saved_model


def _converter_options(model, int8, representative_data, select_tf_ops):
    """TFLiteConverter attributes for the request."""
    import tensorflow as tf

    checks.check_bool("int8", int8)
    checks.check_bool("select_tf_ops", select_tf_ops)
    if not int8:
        if representative_data is not None:
            raise ValueError(
                "Invalid value for argument `representative_data`: it calibrates int8 "
                "quantization and is only used with `int8=True`. Received int8=False"
            )
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if select_tf_ops:
            ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        return {"target_spec": {"supported_ops": ops}}
    if select_tf_ops:
        raise ValueError(
            "Invalid value for argument `select_tf_ops`: int8=True converts to integer "
            "builtin kernels only and cannot keep TensorFlow (Flex) ops. Received: "
            "select_tf_ops=True with int8=True"
        )
    if representative_data is None:
        raise ValueError(
            "Missing argument `representative_data`: int8=True (full-integer post-training "
            "quantization) needs calibration samples: an array of inputs (100-500 samples "
            "typical) or a callable yielding them"
        )
    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": representative_dataset(model, representative_data),
        # Integer kernels only; float32 input and output (quantized at the edges).
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
    }


def _describe(layers):
    return ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in layers)


def _looping_recurrent_layers(model):
    """Recurrent layers that run as a loop (`unroll=False`); a Bidirectional counts once."""
    layers = keras_internals.sublayers(model)
    wrapped = set()
    for layer in layers:
        if isinstance(layer, keras.layers.Bidirectional):
            wrapped.update({id(layer.forward_layer), id(layer.backward_layer)})
    found = []
    for layer in layers:
        if isinstance(layer, keras.layers.Bidirectional):
            if not (layer.forward_layer.unroll and layer.backward_layer.unroll):
                found.append(layer)
        elif isinstance(layer, keras.layers.RNN) and id(layer) not in wrapped:
            if not layer.unroll:
                found.append(layer)
    return found


def _batch_one_signature(model):
    """The model's input signature with a batch size of 1 (`None` for a subclassed model)."""
    functional = (
        keras_internals.functional_of(model) if keras_internals.is_graph_model(model) else None
    )
    if functional is None:
        return None

    def spec(tensor):
        return keras.InputSpec(shape=(1, *tensor.shape[1:]), dtype=tensor.dtype, name=tensor.name)

    return [keras.tree.map_structure(spec, keras_internals.inputs_struct(functional))]


def _unsupported(model, error):
    """The TF ops a builtins-only conversion refused, and the layers they come from."""
    layers = {layer.name: layer for layer in keras_internals.sublayers(model)}
    ops, culprits = [], []
    for item in getattr(error, "errors", ()):
        op = item.operator.name
        calls = item.location.call
        if not calls or op == "tf.Const":  # a constant without location follows its user
            continue
        if op not in ops:
            ops.append(op)
        # Locations read "functional_1/rec_1/TensorArrayV2@...": the model's scope, then
        # each layer's name with Keras's uniquifying suffix; the outermost layer counts.
        for part in calls[0].name.split("@")[0].split("/")[1:]:
            layer = layers.get(part) or layers.get(re.sub(r"_\d+$", "", part))
            if layer is not None and not isinstance(layer, keras.Model):
                if layer not in culprits:
                    culprits.append(layer)
                break
    return ops, culprits


def _keras_litert(model, path, options, input_signature=None):
    """Writes `path` with Keras's `format="litert"`; False where this Keras lacks it."""
    if keras.backend.backend() != "tensorflow":
        return False  # Keras converts to LiteRT from TensorFlow (and PyTorch) only
    try:
        model.export(
            path, format="litert", verbose=False, input_signature=input_signature, **options
        )
    except ValueError as error:
        if "Unrecognized format" in str(error):
            return False
        raise
    return True


def _converter_litert(model, path, options, tmp, input_signature=None):
    """Writes `path` from a temporary SavedModel with `tf.lite.TFLiteConverter`."""
    import tensorflow as tf  # TFLite needs TensorFlow whatever the backend

    saved = os.path.join(tmp, "saved_model")
    if input_signature is None:
        export_saved_model(model, saved)
    else:
        model.export(
            saved, format="tf_saved_model", verbose=False, input_signature=input_signature
        )
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    for name, value in options.items():
        if name == "target_spec":
            for key, item in value.items():
                setattr(converter.target_spec, key, item)
        else:
            setattr(converter, name, value)
    with open(path, "wb") as file:
        file.write(converter.convert())


def _convert(model, options, input_signature=None):
    """One conversion: the flatbuffer bytes, or the converter's `ConverterError`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")  # Keras wants the .tflite suffix
        if not _keras_litert(model, path, options, input_signature):
            _converter_litert(model, path, options, tmp, input_signature)
        with open(path, "rb") as file:
            return file.read()


def tflite_bytes(
    model: keras.Model,
    *,
    int8: bool = False,
    representative_data: RepresentativeData | None = None,
    select_tf_ops: bool = False,
) -> bytes:
    """Converts `model` to a TFLite (LiteRT) flatbuffer.

    Uses Keras's `model.export(format="litert")` where the installed Keras has it
    (Keras 3.15 on TensorFlow), else `tf.lite.TFLiteConverter` on a temporary
    SavedModel (the JAX backend, older Keras).

    The flatbuffer holds TFLite builtin ops only, which every TFLite runtime
    runs, unless `select_tf_ops=True`. Recurrent layers (`LSTM`, `GRU`,
    `SimpleRNN`, `Bidirectional`, any `keras.layers.RNN` with `unroll=False`)
    become builtin ops only with a fixed batch size: where the model's own
    signature needs TensorFlow ops, the conversion is redone with a batch size
    of 1, with a `UserWarning`, and the file then takes exactly one sample per
    call (same outputs; the interpreter cannot resize its batch).

    Args:
        model: The model to convert.
        int8: Full-integer post-training quantization: int8 weights and
            activations, integer kernels only (the conversion fails rather than
            keep a float op), float32 input and output. Not available for
            recurrent layers that loop over time (`unroll=False`). Defaults to
            `False`.
        representative_data: Calibration samples for `int8=True` (see
            `representative_dataset`); required with it, refused without it.
            Defaults to `None`.
        select_tf_ops: Let the converter keep TensorFlow ops that TFLite has no
            builtin kernel for as Select TF ops ("Flex" custom ops), at the
            model's own batch size. Such a file runs only in a runtime that
            links the Flex delegate (on Android the
            `tensorflow-lite-select-tf-ops` dependency, several MB). Float
            only. Defaults to `False`: a model that needs these ops is
            refused with a `ValueError` naming its layers.

    Returns:
        The flatbuffer bytes.

    Raises:
        TypeError: If `model` is not a `keras.Model`, or `int8` or
            `select_tf_ops` not a bool.
        ValueError: If `int8=True` comes without `representative_data` (or the
            reverse) or with `select_tf_ops=True`, the data do not fit the
            model's inputs, `int8=True` meets a looping recurrent layer, or
            (without `select_tf_ops=True`) the model needs TensorFlow ops.
        NotImplementedError: On the PyTorch backend (see `export_saved_model`).

    Example:

    >>> flatbuffer = tflite_bytes(slim)
    """
    checks.check_keras_model("model", model)
    check_export_backend("export_tflite")
    options = _converter_options(model, int8, representative_data, select_tf_ops)
    recurrent = _looping_recurrent_layers(model)
    if int8 and recurrent:
        # Refused before converting: the converter fails on the quantized loop at a
        # dynamic batch size and crashes the process at a fixed one (TF 2.21).
        raise ValueError(
            f"Invalid value for argument `int8`: full-integer TFLite quantization is not "
            f"available for the recurrent layers {_describe(recurrent)}, which loop over "
            "time. Export them in float (`int8=False`, builtin ops at a batch size of 1) "
            "or with `export_onnx`, or build them with `unroll=True` (a fixed number of "
            "time steps), which quantizes. Received: int8=True"
        )
    from tensorflow.lite.python.convert_phase import ConverterError  # not in tf.lite's API

    try:
        return _convert(model, options)
    except ConverterError as error:
        if select_tf_ops or int8:
            raise
        failure = error
    signature = _batch_one_signature(model) if recurrent else None
    if signature is not None:
        try:
            flatbuffer = _convert(model, options, signature)
        except ConverterError as error:
            failure = error
        else:
            warnings.warn(
                f"The TFLite file takes a batch size of 1: the recurrent layers "
                f"{_describe(recurrent)} convert to builtin TFLite ops only with a fixed "
                "batch size. Call the interpreter once per sample, build the layers with "
                "`unroll=True` (a fixed number of time steps) for any batch size, or pass "
                "`select_tf_ops=True` for a file that needs the Flex delegate.",
                stacklevel=2,
            )
            return flatbuffer
    import tensorflow as tf

    # Would Select TF ops make it convert? Then the refusal is about them.
    allowed = [*options["target_spec"]["supported_ops"], tf.lite.OpsSet.SELECT_TF_OPS]
    flex = {**options, "target_spec": {"supported_ops": allowed}}
    try:
        _convert(model, flex)
    except ConverterError:
        raise failure from None  # not a matter of TensorFlow ops
    ops, culprits = _unsupported(model, failure)
    where = f"the layers {_describe(culprits)} need" if culprits else "the model needs"
    raise ValueError(
        f"Cannot convert to builtin TFLite ops: {where} TensorFlow ops that TFLite has no "
        f"builtin kernel for ({', '.join(ops) or 'see the converter error above'}), which "
        "the standard TFLite interpreter cannot run. Pass `select_tf_ops=True` to keep them "
        "as Select TF (Flex) ops, for a runtime that links the Flex delegate, or export "
        "with `export_onnx`."
    ) from failure


def _write_whole(path, data):
    """Writes `data` to `path` through a sibling file, so `path` is never left half-written."""
    partial = f"{path}.{uuid.uuid4().hex[:8]}.partial"
    try:
        with open(partial, "xb") as file:
            file.write(data)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    int8: bool = False,
    representative_data: RepresentativeData | None = None,
    select_tf_ops: bool = False,
) -> str:
    """Writes `model` as a TFLite (LiteRT) file.

    The file holds TFLite builtin ops only unless `select_tf_ops=True`; models
    with recurrent layers get a batch size of 1 (see `tflite_bytes`). Nothing is
    written when the conversion fails, and an existing file at `path` is
    replaced only by a complete one.

    Args:
        model: The model to convert.
        path: File to write (overwritten if it exists); its directory must exist.
        int8: Full-integer post-training quantization (see `tflite_bytes`).
            Defaults to `False`.
        representative_data: Calibration samples, required with `int8=True`:
            an array `(n, *input_shape)`, a list or dict of arrays for several
            inputs, or a callable in TFLite's `representative_dataset`
            convention. Defaults to `None`.
        select_tf_ops: Keep TensorFlow ops that TFLite has no builtin kernel
            for as Select TF (Flex) ops; the file then runs only where the Flex
            delegate is linked (see `tflite_bytes`). Defaults to `False`.

    Returns:
        `path` as a string.

    Raises:
        TypeError: If `model` is not a `keras.Model`, `path` not a path, or
            `int8` or `select_tf_ops` not a bool.
        ValueError: If the directory of `path` does not exist, `int8=True` comes
            without `representative_data` (or the reverse), the data do not
            fit the model's inputs, or the conversion needs what was not
            allowed (see `tflite_bytes`).
        NotImplementedError: On the PyTorch backend (see `export_saved_model`).

    Example:

    >>> export_tflite(slim, "/tmp/slim.tflite")
    >>> export_tflite(slim, "/tmp/slim_int8.tflite", int8=True, representative_data=x[:200])
    """
    checks.check_keras_model("model", model)
    check_export_backend("export_tflite")
    path = check_output_path("path", path)
    data = tflite_bytes(
        model, int8=int8, representative_data=representative_data, select_tf_ops=select_tf_ops
    )
    _write_whole(path, data)
    return path
