"""tf.distribute: MirroredStrategy on two logical CPUs, MultiWorkerMirroredStrategy
with two worker processes on 127.0.0.1. Both must give every replica the same masks
and weights, match a single-device run, and count each penalty exactly once."""

import json
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from backend_utils import tensorflow_only
from scripts import mwms_worker as setup
from scripts import processes

pytestmark = tensorflow_only("tf.distribute strategies (JAX's DataParallel: test_backends.py)")


def _mirrored():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest configures two logical CPUs"
    return tf.distribute.MirroredStrategy(devices)


def _penalty(model, strength=setup.STRENGTH):
    """The numpy value of the model's DropNeuron penalties (li = lo = strength)."""
    total = 0.0
    for name in ("h1", "h2"):
        w = np.asarray(model.get_layer(name).kernel.numpy(), dtype=np.float64)
        total += strength * (np.linalg.norm(w, axis=0).sum() + np.linalg.norm(w, axis=1).sum())
    return total


def _fit(strategy=None, **build_kwargs):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = setup.build(**build_kwargs)
    history = setup.train(model)
    return model, history.history


def _max_difference(a, b):
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b, strict=True))


def test_mirrored_replicas_hold_identical_weights_masks_and_optimizer_state():
    strategy = _mirrored()
    model, _ = _fit(strategy, optimizer="adam")
    variables = model.variables + model.optimizer.variables
    checked = 0
    for variable in variables:
        replicas = [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]
        if len(replicas) != 2:  # e.g. the optimizer's iteration counter lives once
            continue
        np.testing.assert_array_equal(replicas[0], replicas[1], err_msg=variable.path)
        checked += 1
    assert checked >= len(model.weights)  # every weight, plus Adam's moments
    for name in ("h1", "h2"):
        kernel = model.get_layer(name).kernel
        zeros = [np.asarray(v) == 0 for v in strategy.experimental_local_results(kernel.value)]
        assert zeros[0].any()  # something was pruned ...
        np.testing.assert_array_equal(zeros[0], zeros[1])  # ... identically on both


def test_mirrored_run_matches_single_device_run():
    mirrored, mirrored_logs = _fit(_mirrored())
    single, single_logs = _fit()
    gap = _max_difference(mirrored.get_weights(), single.get_weights())
    assert gap < 1e-5
    for a, b in zip(mirrored.get_weights(), single.get_weights(), strict=True):
        np.testing.assert_array_equal(a == 0, b == 0)  # the same masks
    np.testing.assert_allclose(mirrored_logs["loss"], single_logs["loss"], rtol=1e-5)
    assert mirrored_logs["sparsity"] == single_logs["sparsity"]
    assert mirrored_logs["sparsity"][-1] > 0
    # The comparison can tell a penalty counted twice: doubling it moves the weights
    # far beyond the tolerance used above.
    doubled, _ = _fit(strength=2 * setup.STRENGTH)
    assert _max_difference(doubled.get_weights(), single.get_weights()) > 1e3 * max(gap, 1e-8)


def test_mirrored_penalty_is_counted_once():
    strategy = _mirrored()
    with strategy.scope():
        model = setup.build(loss=None)  # no data loss: the penalties only
    expected = _penalty(model)

    @tf.function
    def penalty_per_replica():
        return strategy.run(lambda: model.compute_loss())

    per_replica = strategy.experimental_local_results(penalty_per_replica())
    # Keras scales additional losses by 1 / replicas, so the gradients summed over
    # the replicas are those of one penalty.
    np.testing.assert_allclose([float(v) for v in per_replica], [expected / 2] * 2, rtol=1e-6)
    np.testing.assert_allclose(sum(float(v) for v in per_replica), expected, rtol=1e-6)

    # evaluate() (data loss + penalty) gives the single-device value too.
    x, y = setup.data()
    with strategy.scope():
        mirrored = setup.build()
    single = setup.build()
    mirrored_loss = mirrored.evaluate(x, y, batch_size=32, verbose=0)
    single_loss = single.evaluate(x, y, batch_size=32, verbose=0)
    np.testing.assert_allclose(mirrored_loss, single_loss, rtol=1e-5)
    data_only = keras.losses.binary_crossentropy(y, single.predict(x, verbose=0))
    np.testing.assert_allclose(
        single_loss, float(np.mean(data_only)) + _penalty(single), rtol=1e-5
    )


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_two_processes(tmp_path):
    ports = [processes.free_port() for _ in range(2)]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    outputs = [tmp_path / f"worker{i}.npz" for i in range(2)]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    start = time.monotonic()
    workers = [
        processes.start(
            [processes.SCRIPTS / "mwms_worker.py", outputs[i]],
            logs[i],
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
        )
        for i in range(2)
    ]
    with processes.killed_on_exit(*workers):
        # The single-device reference trains here while the workers start up.
        single, single_logs = _fit()
        for worker, log in zip(workers, logs, strict=True):
            assert worker.wait(timeout=240) == 0, processes.tail(log)
    elapsed = time.monotonic() - start
    results = [np.load(path) for path in outputs]
    assert [int(r["replicas"]) for r in results] == [2, 2]
    weights = [[r[f"w{i}"] for i in range(len(single.weights))] for r in results]
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)  # both workers hold the same weights
    assert _max_difference(weights[0], single.get_weights()) < 1e-5
    for a, b in zip(weights[0], single.get_weights(), strict=True):
        np.testing.assert_array_equal(a == 0, b == 0)
    np.testing.assert_allclose(results[0]["loss"], single_logs["loss"], rtol=1e-5)
    np.testing.assert_array_equal(results[0]["sparsity"], single_logs["sparsity"])
    assert single_logs["sparsity"][-1] > 0
    print(f"MultiWorkerMirroredStrategy, 2 workers x 1 CPU replica: {elapsed:.1f} s")
