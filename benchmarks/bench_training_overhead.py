"""Time per training step with Li+Lo regularizers, against none and against Keras's L2.

Usage:

    python benchmarks/bench_training_overhead.py                 # LeNet-300-100, LeNet-5, ResNet50
    python benchmarks/bench_training_overhead.py --tiny          # one small MLP, for CI
    python benchmarks/bench_training_overhead.py --out train.json
    python benchmarks/bench_training_overhead.py --backend jax     # or torch, tensorflow

For every model, four copies with the same weights are compiled (Adam, sparse categorical
cross-entropy) and their compiled train function is timed alternately on one fixed batch:

- `none`: no regularizer;
- `keras_l2`: `keras.regularizers.L2(1e-4)` on every Dense/Conv kernel;
- `dn_l2`: our `DropNeuronRegularizer(l2=1e-4)` on the same kernels (same loss as
  `keras_l2`: isolates the cost of our wrapper);
- `li_lo`: `regularize_model(model, li=1e-4, lo=1e-4)`, i.e. both group-lasso terms on
  every Dense/Conv kernel.

Ratios are medians of per-step times: `li_lo / none` (target <= 1.05) and
`li_lo / keras_l2` (target <= 1.05 on every backend).

`--backend` picks the Keras backend (it must be chosen before Keras is imported, so it is
read from the command line first; imported as a module, the script runs on the backend
already loaded and refuses another). The step timed is the backend's own compiled train
function: a `tf.function` (TensorFlow), the jitted stateless step with its state carried
from call to call (JAX), or Keras's PyTorch train step (eager, as Keras runs it by
default).
"""

import os

import _backend_choice

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if __name__ == "__main__":
    _backend_choice.choose_from_argv()

import _common  # noqa: E402
import _models  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dropneuron import regularize_model  # noqa: E402

STRENGTH = 1e-4
# name -> (builder kwargs, batch size), batch sizes as in the experiments.
CONFIGS = {
    "lenet-300-100": ({}, 256),
    "lenet-5": ({}, 64),
    "resnet50": ({"size": 32}, 32),
}
TINY = {"lenet-300-100": ({"hidden": (32, 16)}, 32)}


def variants(model):
    return {
        "none": keras.models.clone_model(model),
        "keras_l2": _models.with_kernel_regularizer(
            model, lambda: keras.regularizers.L2(STRENGTH)
        ),
        "dn_l2": regularize_model(model, l2=STRENGTH),
        "li_lo": regularize_model(model, li=STRENGTH, lo=STRENGTH),
    }


def step_function(model, x, y):
    """One compiled training step on `(x, y)` that blocks until the loss is computed."""
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.train_on_batch(x, y)  # builds optimizer state and the train function
    backend = keras.backend.backend()
    if backend == "jax":
        import jax.numpy as jnp

        data = (jnp.asarray(x), jnp.asarray(y))
        state = [
            [v.value for v in variables]
            for variables in (
                model.trainable_variables,
                model.non_trainable_variables,
                model.optimizer.variables,
                model.metrics_variables,
            )
        ]

        def step():
            nonlocal state
            logs, state = model.train_function(state, iter([data]))
            np.asarray(logs["loss"])

        # The state the step returns is laid out as jit leaves it, not as the variables
        # held it: the second call compiles again. Both happen before timing.
        step()
        step()
        return step
    if backend == "torch":
        data = [(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))]
    else:
        import tensorflow as tf

        data = [(tf.constant(x), tf.constant(y))]

    def step():
        keras.ops.convert_to_numpy(model.train_function(data)["loss"])

    return step


def main(argv=None):
    p = _common.parser(__doc__, repeats=15)
    p.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    _backend_choice.add_argument(p)
    args = p.parse_args(argv)
    _backend_choice.check(p, args)
    keras.utils.set_random_seed(0)
    rows = []
    configs = TINY if args.tiny else {name: CONFIGS[name] for name in args.models}
    for name, (kwargs, batch_size) in configs.items():
        model = _models.BUILDERS[name](**kwargs)
        x, y = _models.random_batch(model, batch_size)
        steps = {k: step_function(m, x, y) for k, m in variants(model).items()}
        ms = {k: 1000 * t for k, t in _common.alternate(steps, args.repeats).items()}
        rows.append(
            {
                "model": name,
                "backend": args.backend,
                "batch": batch_size,
                **{f"{k}_ms": v for k, v in ms.items()},
                "li_lo/none": ms["li_lo"] / ms["none"],
                "li_lo/keras_l2": ms["li_lo"] / ms["keras_l2"],
                "keras_l2/none": ms["keras_l2"] / ms["none"],
                "dn_l2/keras_l2": ms["dn_l2"] / ms["keras_l2"],
            }
        )
        figures = ", ".join(
            f"{k}={v:.4g}" for k, v in rows[-1].items() if k not in ("model", "backend")
        )
        print(f"{name}: {figures}", flush=True)
    _common.print_table(rows, list(rows[0]))
    _common.finish(args, rows, strength=STRENGTH, backend=args.backend)


if __name__ == "__main__":
    main()
