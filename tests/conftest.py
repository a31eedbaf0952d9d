"""Shared test set-up: the backend, seeds, data paths, helpers.

The suite runs on the Keras backend that `KERAS_BACKEND` names (TensorFlow by
default), chosen in the process that runs pytest before Keras is imported:
`KERAS_BACKEND=jax python -m pytest`. Tests marked `tensorflow_only(reason)`
are skipped on the other backends, with their reason. With TensorFlow, two
logical CPUs are configured for the tf.distribute tests.
"""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from backend_utils import BACKEND  # noqa: E402

if BACKEND == "tensorflow":
    import tensorflow as tf

    # Must happen before TensorFlow initialises its devices, so at import time.
    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )

REPO = pathlib.Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist.npz"


def pytest_report_header(config):
    return f"Keras backend: {BACKEND} (set KERAS_BACKEND to choose)"


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    for item in items:
        marker = item.get_closest_marker("tensorflow_only")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.skip(reason=f"TensorFlow only: {reason}"))


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def mnist_path():
    if not MNIST.exists():
        pytest.skip(f"local MNIST file not found at {MNIST}")
    return MNIST


def _assert_equivalent(model, slim, inputs=None, seed=0, slim_inputs=None):
    """Asserts `slim` computes `model`'s function on random inputs."""
    if inputs is None:
        rng = np.random.default_rng(seed)
        inputs = [
            rng.standard_normal((3,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs
        ]
        inputs = inputs if len(inputs) > 1 else inputs[0]
    expected = keras.ops.convert_to_numpy(model(inputs))
    got = keras.ops.convert_to_numpy(slim(inputs if slim_inputs is None else slim_inputs))
    bound = 1e-5 * (1 + np.max(np.abs(expected)))
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= bound
    return inputs


@pytest.fixture
def assert_equivalent():
    return _assert_equivalent


def _zero_outgoing(layer, channels, attribute="kernel"):
    """Zeroes the weights of `layer` that read input `channels`."""
    variable = getattr(layer, attribute)
    kernel = variable.numpy()
    kernel[..., channels, :] = 0
    variable.assign(kernel)


def _zero_incoming(layer, channels, bias=None):
    """Makes output `channels` of `layer` the constant `activation(bias)`."""
    kernel = layer.kernel.numpy()
    kernel[..., channels] = 0
    layer.kernel.assign(kernel)
    if bias is not None:
        values = layer.bias.numpy()
        values[channels] = bias
        layer.bias.assign(values)


class _Kill:
    """Helpers that make units dead by editing weights with numpy."""

    outgoing = staticmethod(_zero_outgoing)
    incoming = staticmethod(_zero_incoming)


@pytest.fixture
def kill():
    return _Kill
