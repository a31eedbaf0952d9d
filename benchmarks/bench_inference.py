"""Inference speed of slimmed models against the masked originals, on CPU.

Usage:

    python benchmarks/bench_inference.py                      # LeNet-300-100, LeNet-5, ResNet50
    python benchmarks/bench_inference.py --models resnet50
    python benchmarks/bench_inference.py --tiny               # LeNet-300-100 at batch 1 and 16
    python benchmarks/bench_inference.py --backend jax        # or torch: the `native` runtime

Per model three variants with the same architecture or less:

- `masked`: the original with dead units (their incoming weights and biases zeroed, as
  DropNeuron training and `PruneCallback` leave them);
- `slim`: `slim_model(masked)`, the dead units physically removed;
- `unstructured`: the original with a random unstructured mask keeping exactly as many
  non-zero kernel weights as `slim` has, which is what masking-only tools (TF Model
  Optimization's magnitude pruning) ship.

Dead units: LeNet-300-100 90% of both hidden layers; LeNet-5 half of each conv layer's
filters and 80% of fc1; ResNet50 (32x32 inputs) half the filters of every bottleneck's
inner convolutions (`*_1_conv`, `*_2_conv`), whose BatchNormalization then outputs 0.

With `--slimmed-like RESULTS.json` (rows of `benchmarks/cnn_bn_mnist.py`), the models are
instead the ResNet-20 and MobileNetV2-style networks of those rows, with random weights
and the last units of every layer dead so that `slim_model` keeps exactly the row's
`units_after`: the speed of a slim architecture does not depend on its weights, and this
times it in every runtime, TFLite included (whose converter folds BatchNormalization into
the convolutions).

Every variant runs in four runtimes: Keras (`tf.function` of `model(x)`, and the same
compiled with XLA: `keras_xla`), the SavedModel (`tf.saved_model.load(...).serve`) and the
TFLite interpreter (all CPU threads), at batch 1
(latency) and batch 256 (throughput), the three variants timed alternately. `speedup` is
masked time / slim time, `efficiency` = speedup / multiply-add ratio (target >= 0.8 at
batch 256), `unstructured_speedup` = masked time / unstructured time.

`--backend jax` or `--backend torch` picks another Keras backend (read from the command
line before Keras is imported, as in `bench_training_overhead.py`); TensorFlow need not be
installed then. Those backends have one runtime, `native`: on JAX `jax.jit` of
`model.stateless_call` on inputs already on the device, blocking with `block_until_ready`;
on PyTorch `model(x)` under `torch.no_grad()` (eager, as Keras runs it), followed by
`torch.cuda.synchronize()` when a GPU is used. Outputs stay on the device: no copy back
to the host is timed.
"""

import argparse
import json
import os
import pathlib
import tempfile
from collections.abc import Callable

import _backend_choice

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if __name__ == "__main__":
    _backend_choice.choose_from_argv()

import _common  # noqa: E402
import _models  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dropneuron import export_saved_model, slim_model  # noqa: E402

VARIANTS = ("masked", "slim", "unstructured")
TF_RUNTIMES = ("keras", "keras_xla", "saved_model", "tflite")
RUNTIMES = (*TF_RUNTIMES, "native")


def _bn_after(model, layer):
    """The BatchNormalization that directly follows `layer`, if any."""
    readers = [node.operation for node in layer._outbound_nodes]
    bns = [r for r in readers if isinstance(r, keras.layers.BatchNormalization)]
    return bns[0] if len(bns) == 1 else None


def masked_model(
    name: str, tiny: bool, rng: np.random.Generator
) -> tuple[keras.Model, list[np.ndarray]]:
    """The model of `name` with dead units, and its weights before the units were killed."""
    if name == "resnet50":
        model = _models.resnet50(32)
        fractions = {
            layer.name: 0.5
            for layer in model.layers
            if layer.name.endswith(("_1_conv", "_2_conv"))
        }
    elif name == "lenet-5":
        model = _models.lenet_5(softmax_layer=True)
        fractions = {"conv1": 0.5, "conv2": 0.5, "fc1": 0.8}
    else:
        hidden = (32, 16) if tiny else (300, 100)
        model = _models.lenet_300_100(hidden, softmax_layer=True)
        fractions = {"fc1": 0.9, "fc2": 0.9}
    base_weights = model.get_weights()
    for layer_name, fraction in fractions.items():
        layer = model.get_layer(layer_name)
        _models.kill_units(layer, fraction, rng, bn=_bn_after(model, layer))
    return model, base_weights


SLIMMED_LIKE = {"resnet20": _models.resnet20, "mobilenetv2": _models.mobilenet_v2_small}
UNIT_LAYERS = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def masked_like(row: dict) -> keras.Model:
    """The network of a `cnn_bn_mnist` row, its last units dead down to `units_after`.

    A unit dies with its kernel column (a depthwise channel: its filter) and the
    `gamma` and `beta` of the BatchNormalization that reads it; taking the last
    units everywhere gives the layers of a residual stream the same dead set.
    """
    model = SLIMMED_LIKE[row["model"]]()
    for name, units in row["units_after"].items():
        layer = model.get_layer(name)
        if not isinstance(layer, UNIT_LAYERS):
            continue
        axis = -2 if isinstance(layer, keras.layers.DepthwiseConv2D) else -1
        kernel = layer.kernel.numpy()
        index = [slice(None)] * kernel.ndim
        index[axis] = slice(units, None)
        kernel[tuple(index)] = 0
        layer.kernel.assign(kernel)
        bn = _bn_after(model, layer)
        unit_variables = [getattr(layer, "bias", None)]
        unit_variables += [bn.gamma, bn.beta] if bn is not None else []
        for variable in (v for v in unit_variables if v is not None):
            value = variable.numpy()
            value[units:] = 0
            variable.assign(value)
    return model


def kernels(model: keras.Model) -> list:
    """The kernel variables of `model`'s layers."""
    return [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]


def nonzeros(model: keras.Model) -> int:
    """The number of non-zero kernel weights of `model`."""
    return int(sum(np.count_nonzero(k.numpy()) for k in kernels(model)))


def unstructured_like(
    masked: keras.Model,
    base_weights: list[np.ndarray],
    target_nonzeros: int,
    rng: np.random.Generator,
) -> keras.Model:
    """The unpruned model, with a random mask leaving `target_nonzeros` kernel weights."""
    model = keras.models.clone_model(masked)
    model.set_weights(base_weights)
    keep = target_nonzeros / sum(int(np.prod(k.shape)) for k in kernels(model))
    for kernel in kernels(model):
        value = kernel.numpy()
        kernel.assign(np.where(rng.random(value.shape) < keep, value, 0))
    return model


def runner(
    model: keras.Model, runtime: str, batch_size: int, workdir: str, exported: dict
) -> Callable[[], np.ndarray]:
    """A callable that runs `model` once on a fixed random batch and blocks on the result.

    `exported` caches the SavedModel and TFLite artifacts across batch sizes and runtimes.
    """
    x = np.random.default_rng(0).random((batch_size, *model.input_shape[1:]), dtype=np.float32)
    if runtime == "native":
        return native_runner(model, x)
    import tensorflow as tf

    if runtime in ("keras", "keras_xla"):
        forward = tf.function(
            lambda t: model(t, training=False), jit_compile=runtime == "keras_xla"
        )
        tx = tf.constant(x)
        return lambda: np.asarray(forward(tx))
    # One SavedModel per model serves both the SavedModel runtime and the TFLite converter
    # (that is what `export_tflite` does too).
    if id(model) not in exported:
        path = export_saved_model(model, os.path.join(workdir, f"{model.name}_{id(model)}"))
        exported[id(model)] = {"path": path}
    artifacts = exported[id(model)]
    if runtime == "saved_model":
        if "loaded" not in artifacts:
            artifacts["loaded"] = tf.saved_model.load(artifacts["path"])
        loaded, tx = artifacts["loaded"], tf.constant(x)
        return lambda: np.asarray(loaded.serve(tx))  # `loaded` must stay referenced
    if "tflite" not in artifacts:
        converter = tf.lite.TFLiteConverter.from_saved_model(artifacts["path"])
        artifacts["tflite"] = converter.convert()
    interpreter = tf.lite.Interpreter(
        model_content=artifacts["tflite"], num_threads=os.cpu_count()
    )
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    output = interpreter.get_output_details()[0]["index"]

    def run():
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return run


def native_runner(model: keras.Model, x: np.ndarray) -> Callable[[], object]:
    """The `native` runtime: the JAX or PyTorch backend's own forward pass, on its device."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def forward(trainable, non_trainable, x):
            return model.stateless_call(trainable, non_trainable, x, training=False)[0]

        jx = jax.device_put(x)
        return lambda: forward(trainable, non_trainable, jx).block_until_ready()
    if backend == "torch":
        import torch

        tx = keras.ops.convert_to_tensor(x)
        sync = torch.cuda.synchronize if tx.is_cuda else (lambda: None)

        def run():
            with torch.no_grad():
                y = model(tx, training=False)
            sync()
            return y

        return run
    raise SystemExit(f"the native runtime needs the jax or torch backend, not {backend!r}")


def measure(
    name: str, args: argparse.Namespace, workdir: str, row: dict | None = None
) -> tuple[dict, list[dict]]:
    """The model's sizes, and one timing row per runtime and batch size."""
    rng = np.random.default_rng(0)
    if row is None:
        masked, base_weights = masked_model(name, args.tiny, rng)
    else:
        masked = masked_like(row)
        base_weights = masked.get_weights()
    slim, report = slim_model(masked, return_report=True)
    if row is not None:
        slim_units = {r["name"]: r["units_after"] for r in report.rows}
        wrong = {
            k: (v, slim_units.get(k))
            for k, v in row["units_after"].items()
            if slim_units.get(k) != v
        }
        if wrong:
            raise SystemExit(f"{name}: the slim units differ from the row's: {wrong}")
    totals = report.totals()
    models = {
        "masked": masked,
        "slim": slim,
        "unstructured": unstructured_like(masked, base_weights, nonzeros(slim), rng),
    }
    info = {
        "model": name,
        "mac_ratio": totals["macs_before"] / totals["macs_after"],
        "params_masked": masked.count_params(),
        "params_slim": slim.count_params(),
        **{f"nonzero_{k}": nonzeros(m) for k, m in models.items()},
    }
    print(", ".join(f"{k}={v:.4g}" for k, v in info.items() if k != "model"), flush=True)
    rows, exported = [], {}
    for runtime in args.runtimes:
        for batch_size in args.batches:
            fns = {k: runner(m, runtime, batch_size, workdir, exported) for k, m in models.items()}
            ms = {k: 1000 * t for k, t in _common.alternate(fns, args.repeats).items()}
            speedup = ms["masked"] / ms["slim"]
            rows.append(
                {
                    "model": name,
                    "runtime": runtime,
                    "batch": batch_size,
                    **{f"{k}_ms": v for k, v in ms.items()},
                    "slim_per_s": 1000 * batch_size / ms["slim"],
                    "mac_ratio": info["mac_ratio"],
                    "speedup": speedup,
                    "efficiency": speedup / info["mac_ratio"],
                    "unstructured_speedup": ms["masked"] / ms["unstructured"],
                }
            )
            print(f"{name} {runtime} batch {batch_size}: speedup {speedup:.2f}", flush=True)
    return info, rows


def main(argv: list[str] | None = None) -> None:
    """Runs the benchmark."""
    p = _common.parser(__doc__, repeats=9)
    names = ["lenet-300-100", "lenet-5", "resnet50"]
    p.add_argument("--models", nargs="+", default=names, choices=names)
    p.add_argument("--runtimes", nargs="+", choices=RUNTIMES, help="default: per backend")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 256])
    p.add_argument("--slimmed-like", help="a cnn_bn_mnist results JSON: time its slim models")
    _backend_choice.add_argument(p)
    args = p.parse_args(argv)
    _backend_choice.check(p, args)
    on_tf = args.backend == "tensorflow"
    if args.runtimes is None:
        # keras_xla on request (gpu_check.sh)
        args.runtimes = ["keras", "saved_model", "tflite"] if on_tf else ["native"]
    wrong = [r for r in args.runtimes if (r in TF_RUNTIMES) != on_tf]
    if wrong:
        p.error(f"runtimes {wrong} do not run on the {args.backend} backend")
    if args.tiny:
        args.models, args.batches = ["lenet-300-100"], [1, 16]
    keras.utils.set_random_seed(0)
    like = {}
    if args.slimmed_like:
        results = json.loads(pathlib.Path(args.slimmed_like).read_text())["rows"]
        for r in results:
            if r.get("units_after") and r["model"] in SLIMMED_LIKE:
                like[f"{r['model']}@{r['target_macs']:g} seed {r['seed']}"] = r
        args.models = list(like)
    infos, rows = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            info, model_rows = measure(name, args, workdir, like.get(name))
            infos.append(info)
            rows += model_rows
    _common.print_table(infos, list(infos[0]))
    _common.print_table(rows, list(rows[0]))
    _common.finish(args, rows, models=infos, backend=args.backend)


if __name__ == "__main__":
    main()
