"""The same API on every Keras backend: imports, float64, JAX's DataParallel.

The rest of the suite runs per backend (`KERAS_BACKEND=jax python -m pytest`); these
tests check what differs between backends, some in a process of their own.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from backend_utils import BACKEND, float64_mode, sync, to_numpy

from keras_dropneuron import LiRegularizer, LoRegularizer, ProximalGroupShrinkage, PruneCallback

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "scripts"


def _run(code_or_script, env, cwd=REPO, timeout=300):
    command = [
        sys.executable,
        *(["-c", code_or_script] if "\n" in code_or_script else [code_or_script]),
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        cwd=cwd,
        timeout=timeout,
    )


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_import_does_not_import_tensorflow_on_other_backends(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[backends]')")
    code = """
import sys
import keras_dropneuron
from keras_dropneuron import PruneCallback, regularize_model, slim_model, sparsity_report
import keras
print(keras.backend.backend(), sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))
"""
    done = _run(code, {"KERAS_BACKEND": backend})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [backend, "[]"]


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's keras.distribution.DataParallel")
@pytest.mark.slow
def test_jax_data_parallel_on_two_host_devices():
    # XLA_FLAGS must be set before JAX starts: a process of its own.
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = _run(str(SCRIPTS / "jax_data_parallel.py"), env, cwd=SCRIPTS, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith("ok")


def _penalty_numpy(w, li, lo):
    return li * np.linalg.norm(w, axis=0).sum() + lo * np.linalg.norm(w, axis=1).sum()


@pytest.fixture
def floatx_float64():
    # Keras sums the losses in floatx (TensorFlow refuses to mix float64 and float32).
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


def test_float64_trains_penalises_and_prunes_in_float64(floatx_float64):
    # On JAX this needs its x64 mode (float64_mode); the other backends just do it.
    with float64_mode():
        x = np.random.randn(64, 6)
        y = x[:, :1]
        model = keras.Sequential(
            [
                keras.Input((6,), dtype="float64"),
                keras.layers.Dense(
                    5,
                    dtype="float64",
                    name="h",
                    kernel_regularizer=LiRegularizer(1e-2),
                    bias_regularizer=None,
                ),
                keras.layers.Dense(1, dtype="float64", name="o"),
            ]
        )
        kernel = model.get_layer("h").kernel
        w = to_numpy(kernel.value)
        assert w.dtype == np.float64
        (penalty,) = to_numpy(model.losses)
        assert penalty.dtype == np.float64
        np.testing.assert_allclose(penalty, _penalty_numpy(w, 1e-2, 0.0), rtol=1e-13)
        model.compile(keras.optimizers.SGD(0.05), "mse")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[PruneCallback(0.1)])
        value = to_numpy(kernel.value)
        assert value.dtype == np.float64
        assert np.any(value == 0)
        assert np.all(np.abs(value[value != 0]) >= 0.1)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's x64 mode")
def test_float64_without_jax_x64_mode_is_a_clear_error():
    import jax

    assert not jax.config.jax_enable_x64
    w = np.random.randn(4, 3)  # float64
    for reg in (LiRegularizer(0.1), LoRegularizer(0.1)):
        with pytest.raises(ValueError, match="x64 mode is off.*JAX_ENABLE_X64=1"):
            reg(w)
    np.testing.assert_allclose(
        LiRegularizer(0.1)(w.astype("float32")), 0.1 * np.linalg.norm(w, axis=0).sum(), rtol=1e-5
    )


@pytest.mark.parametrize("jit_compile", [True, False])
def test_proximal_step_and_masks_together(jit_compile):
    # Both callbacks on one model: the masks hold and the proximal step shrinks.
    x = np.random.randn(128, 10).astype("float32")
    y = x[:, 2:3]
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(8, name="h"), keras.layers.Dense(1, name="o")]
    )
    model.compile(keras.optimizers.SGD(0.05), "mse", jit_compile=jit_compile)
    kernel = model.get_layer("h").kernel
    w = to_numpy(kernel.value)
    w[:2] = 0.0
    kernel.assign(w)

    class Watch(keras.callbacks.Callback):
        moved = 0

        def on_train_batch_end(self, batch, logs=None):
            sync(self.model)
            self.moved += int(np.count_nonzero(to_numpy(kernel.value)[:2]))

    watch = Watch()
    callbacks = [
        PruneCallback(0.0, layers=["h"]),
        ProximalGroupShrinkage(lo=2.0, layers=["h"]),
        watch,
    ]
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=callbacks)
    assert watch.moved == 0
    assert np.any(np.all(to_numpy(kernel.value)[2:] == 0, axis=1))  # shrunk to exact zeros
    assert "make_train_function" not in vars(model)
    # Both are off again: a plain fit moves the old zeros.
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.all(to_numpy(kernel.value)[:2] != 0)
