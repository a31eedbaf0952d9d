"""File sizes and accuracy of original / slim / slim + int8 models in every export format.

Usage:

    python benchmarks/bench_export.py          # LeNet-5 on MNIST (2 epochs) and ResNet50
    python benchmarks/bench_export.py --tiny   # a few hundred samples, a small residual net

LeNet-5 (the paper's `dropneuron+conv` set-up: DropNeuron penalties on the Dense layers and
the convolutions, `PruneCallback(1e-2)`) is trained for `--epochs` on real MNIST
(`--mnist`, default `../shared/data/mnist.npz`), then slimmed; every artefact is scored on
the 10,000 test images: the original (pruned, full-size) model and the slim one as
`.keras`, TFLite and ONNX files, the slim model with full-integer TFLite quantization
(calibrated on `--calibration` training images) and with Keras's `quantize("int8")` (Dense
layers only), and the original with full-integer TFLite quantization for comparison.

ResNet50 (`weights=None`, 64x64 inputs, 10 classes) gets half of the filters of every
bottleneck's first two convolutions zeroed (kernel and bias), as `bench_surgery.py` does
with a third. Its accuracy means nothing, so it reports sizes and the largest deviation of
each artefact's outputs (softmax probabilities) from the Keras original on random images.
"""

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import _models  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dropneuron import PruneCallback  # noqa: E402
from keras_dropneuron.experiments import setups  # noqa: E402
from keras_dropneuron.experiments.data import load_mnist  # noqa: E402
from keras_dropneuron.export import (  # noqa: E402
    artifact_size,
    export_onnx,
    export_tflite,
    onnx_missing_packages,
)
from keras_dropneuron.surgery import slim_model  # noqa: E402

# TF's interpreter (also inside the int8 calibrator) warns that it is deprecated, at every use.
warnings.filterwarnings("ignore", ".*tf.lite.Interpreter is deprecated")
MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist.npz")
COLUMNS = ["model", "variant", "format", "bytes", "vs_original", "accuracy", "max_dev", "seconds"]


class TFLite:
    """A TFLite file as a batch predictor."""

    def __init__(self, path: str) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        self.runner = Interpreter(model_path=path).get_signature_runner()
        (self.name,) = self.runner.get_input_details()

    def __call__(self, x: np.ndarray, batch: int = 500) -> np.ndarray:
        parts = [self.runner(**{self.name: x[i : i + batch]}) for i in range(0, len(x), batch)]
        return np.concatenate([next(iter(p.values())) for p in parts])


class ONNX:
    """An ONNX file as a batch predictor (onnxruntime)."""

    def __init__(self, path: str) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.name: x})[0]


Predictor = Callable[[np.ndarray], np.ndarray]


def keras_predictor(model: keras.Model, batch: int = 500) -> Predictor:
    """`model` as a batch predictor: numpy in, numpy out, `batch` samples at a time."""

    def predict(x):
        parts = [model(x[i : i + batch], training=False) for i in range(0, len(x), batch)]
        return np.concatenate([keras.ops.convert_to_numpy(p) for p in parts])

    return predict


def without_optimizer(model: keras.Model) -> keras.Model:
    """A copy of `model` that saves without its optimizer state (Adam's would triple it)."""
    copy = type(model).from_config(model.get_config())  # clone_model would compile it too
    copy.set_weights(model.get_weights())
    return copy


def artefacts(
    model: keras.Model,
    slim: keras.Model,
    calibration: np.ndarray,
    workdir: str,
    label: str,
) -> Iterator[tuple[str, str, str, Predictor, float]]:
    """Writes every artefact; yields (variant, format, path, predictor, seconds)."""

    def timed(write, *args, **kwargs):
        start = time.perf_counter()
        path = write(*args, **kwargs)
        return path, time.perf_counter() - start

    def save(source, path):
        source.save(path)
        return path

    for variant, source in (("original", model), ("slim", slim)):
        path, seconds = timed(save, source, os.path.join(workdir, f"{label}_{variant}.keras"))
        yield variant, "keras", path, keras_predictor(source), seconds
        path, seconds = timed(export_tflite, source, os.path.join(workdir, f"{variant}.tflite"))
        yield variant, "tflite", path, TFLite(path), seconds
    if not onnx_missing_packages():
        path, seconds = timed(export_onnx, slim, os.path.join(workdir, "slim.onnx"))
        yield "slim", "onnx", path, ONNX(path), seconds
    for variant, source in (("original+int8", model), ("slim+int8", slim)):
        path, seconds = timed(
            export_tflite,
            source,
            os.path.join(workdir, f"{variant}.tflite"),
            int8=True,
            representative_data=calibration,
        )
        yield variant, "tflite int8", path, TFLite(path), seconds
    quantized = without_optimizer(slim)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "InputLayer does not have a `quantize` method"
        quantized.quantize("int8")
    path = os.path.join(workdir, f"{label}_slim_int8.keras")
    save(quantized, path)
    seconds = time.perf_counter() - start
    yield "slim+int8", "keras int8 (Dense)", path, keras_predictor(quantized), seconds


def measure(
    label: str,
    model: keras.Model,
    slim: keras.Model,
    calibration: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray | None = None,
) -> list[dict]:
    """One row per artefact: its size, its outputs' deviation from `model`'s, its accuracy."""
    rows = []
    reference = keras_predictor(model)(x_test)
    with tempfile.TemporaryDirectory() as workdir:
        for variant, fmt, path, predict, seconds in artefacts(
            model, slim, calibration, workdir, label
        ):
            output = predict(x_test)
            row = {
                "model": label,
                "variant": variant,
                "format": fmt,
                "bytes": artifact_size(path),
                "max_dev": float(np.max(np.abs(output - reference))),
                "seconds": seconds,
            }
            if y_test is not None:
                row["accuracy"] = float(np.mean(np.argmax(output, -1) == y_test) * 100)
            rows.append(row)
    original = rows[0]["bytes"]
    for row in rows:
        row["vs_original"] = row["bytes"] / original
    return rows


def lenet5(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """LeNet-5 trained with DropNeuron on MNIST, slimmed, and every artefact of both measured."""
    if args.tiny and not os.path.exists(args.mnist):
        rng = np.random.default_rng(0)
        x, y = rng.random((384, 28, 28, 1), np.float32), rng.integers(0, 10, 384)
        x_test, y_test = x[256:], y[256:]
        x, y = x[:256], y[:256]
    else:
        (x, y), (x_test, y_test) = load_mnist(args.mnist)
        x, x_test = x[..., None], x_test[..., None]
        if args.tiny:
            x, y, x_test, y_test = x[:256], y[:256], x_test[:128], y_test[:128]
    setup = setups.LENET_5
    keras.utils.set_random_seed(0)
    model = setup.build("dropneuron+conv", setup.penalties)
    model.compile(
        optimizer=keras.optimizers.Adam(setup.learning_rate),
        loss=setup.loss,
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(
        x,
        y,
        epochs=1 if args.tiny else args.epochs,
        batch_size=setup.batch_size,
        callbacks=[PruneCallback(setup.threshold)],
        verbose=2 if not args.tiny else 0,
    )
    train_s = time.perf_counter() - start
    slim, report = slim_model(model, return_report=True)
    print(report, flush=True)
    calibration = x[np.random.default_rng(1).permutation(len(x))[: args.calibration]]
    rows = measure("lenet-5", without_optimizer(model), slim, calibration, x_test, y_test)
    info = {
        "train_seconds": train_s,
        "epochs": 1 if args.tiny else args.epochs,
        "params": model.count_params(),
        "params_slim": slim.count_params(),
        "units": {
            layer.name: getattr(layer, "filters", None) or getattr(layer, "units", None)
            for layer in slim.layers
            if hasattr(layer, "kernel")
        },
    }
    return rows, info


def small_resnet() -> keras.Model:
    """Two bottleneck blocks named like ResNet50's, for --tiny."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inputs)
    for b in range(2):
        y = keras.layers.Conv2D(8, 1, name=f"b{b}_1_conv")(x)
        y = keras.layers.BatchNormalization(name=f"b{b}_1_bn")(y)
        y = keras.layers.ReLU()(y)
        y = keras.layers.Conv2D(8, 3, padding="same", name=f"b{b}_2_conv")(y)
        y = keras.layers.BatchNormalization(name=f"b{b}_2_bn")(y)
        y = keras.layers.ReLU()(y)
        y = keras.layers.Conv2D(16, 1, name=f"b{b}_3_conv")(y)
        x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(x))


def resnet50(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """ResNet50 with half of its bottleneck filters dead, slimmed, every artefact measured."""
    keras.utils.set_random_seed(0)
    if args.tiny:
        model = small_resnet()
    else:
        model = keras.applications.ResNet50(
            weights=None, input_shape=(64, 64, 3), classes=10, name="resnet50"
        )
    model = _models.kill_bottleneck_filters(model, 0.5)
    slim = slim_model(model)
    rng = np.random.default_rng(2)
    shape = model.input_shape[1:]
    calibration = rng.random((args.calibration, *shape), np.float32)
    x = rng.random((32, *shape), np.float32)
    rows = measure("resnet50" if not args.tiny else "small-resnet", model, slim, calibration, x)
    return rows, {"params": model.count_params(), "params_slim": slim.count_params()}


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the benchmark and returns its rows."""
    p = _common.parser(__doc__, repeats=1)
    p.add_argument("--epochs", type=int, default=2, help="LeNet-5 training epochs")
    p.add_argument("--mnist", default=MNIST, help="local mnist.npz")
    p.add_argument("--calibration", type=int, default=500, help="int8 calibration samples")
    args = p.parse_args(argv)
    if args.tiny:
        args.calibration = min(args.calibration, 32)
    rows, models = [], {}
    for name, run in (("lenet-5", lenet5), ("resnet50", resnet50)):
        model_rows, models[name] = run(args)
        _common.print_table(model_rows, COLUMNS)
        rows += model_rows
    _common.finish(args, rows, models=models)
    return rows


if __name__ == "__main__":
    main()
