"""JAX DataParallel on 2 host devices, started by `test_backends.py` in its own process.

Usage: `python jax_data_parallel.py` with `KERAS_BACKEND=jax` and
`XLA_FLAGS=--xla_force_host_platform_device_count=2` (set before JAX starts).

Trains the MLP of `mwms_worker.build()` (DropNeuron penalties on both hidden layers,
`PruneCallback`, SGD) once on one device and once under
`keras.distribution.DataParallel` over both devices, from the same weights and the same
batches, and checks: each device holds the same weights and masks, the pruned weights
stay zero after every step, and both runs end with the same weights and losses
(the penalties are counted once: counted twice, the updates would differ). Prints
`ok` and exits 0, else raises.
"""

import jax
import keras
import numpy as np
from mwms_worker import EPOCHS, GLOBAL_BATCH, THRESHOLD, build, data

from keras_dropneuron import PruneCallback


def _shards_equal(variable):
    shards = [np.asarray(s.data) for s in variable.value.addressable_shards]
    return len(shards) == 2 and all(np.array_equal(shards[0], s) for s in shards[1:])


class Check(keras.callbacks.Callback):
    """After every batch: pruned weights still zero, replicas (weights, masks) identical."""

    def __init__(self, prune):
        super().__init__()
        self.prune, self.pruned, self.violations, self.unequal = prune, None, 0, 0

    def on_train_batch_end(self, batch, logs=None):
        self.model.jax_state_sync()
        kernel = self.model.get_layer("h1").kernel
        value = np.asarray(kernel.numpy())
        if self.pruned is not None:
            self.violations += int(np.count_nonzero(value[self.pruned]))
        self.pruned = value == 0
        if keras.distribution.distribution() is not None:
            masks = self.prune._weight_masks.masks
            variables = [layer.kernel for layer in self.model.layers] + masks
            self.unequal += sum(not _shards_equal(v) for v in variables)


def train():
    model = build()
    prune = PruneCallback(THRESHOLD)
    check = Check(prune)
    x, y = data()
    history = model.fit(
        x,
        y,
        epochs=EPOCHS,
        batch_size=GLOBAL_BATCH,
        shuffle=False,
        verbose=0,
        callbacks=[prune, check],
    )
    return model, history.history, check


def main():
    devices = jax.devices()
    assert len(devices) == 2, devices
    single, single_logs, single_check = train()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    parallel, parallel_logs, parallel_check = train()
    kernel = parallel.get_layer("h1").kernel
    assert len(kernel.value.sharding.device_set) == 2, kernel.value.sharding
    assert parallel_check.unequal == 0, "replicas differ"
    assert single_check.violations == parallel_check.violations == 0, "a pruned weight moved"
    assert parallel_check.pruned.any(), "nothing was pruned"
    for a, b in zip(single.get_weights(), parallel.get_weights(), strict=True):
        np.testing.assert_array_equal(a == 0, b == 0)  # the same masks
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(parallel_logs["loss"], single_logs["loss"], rtol=1e-4)
    np.testing.assert_allclose(parallel_logs["sparsity"], single_logs["sparsity"])
    print("ok", single_logs["loss"], parallel_logs["loss"], parallel_logs["sparsity"])


if __name__ == "__main__":
    main()
