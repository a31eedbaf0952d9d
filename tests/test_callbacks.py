import csv

import keras
import numpy as np
import pytest
from backend_utils import BACKEND, sync, tensorflow_only
from shared_layers import shared_with_nested_model

import keras_dropneuron
from keras_dropneuron import DropNeuronRegularizer, LiRegularizer, PruneCallback, pruning
from keras_dropneuron.layer_rules import WeightLayout

L = keras.layers
THRESHOLD = 0.05


def _data(n=256, features=12):
    x = np.random.randn(n, features).astype("float32")
    y = (x[:, :2].sum(axis=1, keepdims=True) > 0).astype("float32")
    return x, y


def _mlp(reg=True, **compile_kwargs):
    kwargs = {"kernel_regularizer": DropNeuronRegularizer(li=1e-3, lo=1e-3)} if reg else {}
    model = keras.Sequential(
        [
            keras.Input((12,)),
            L.Dense(16, activation="relu", name="h1", **kwargs),
            L.Dense(8, activation="relu", name="h2", **kwargs),
            L.Dense(1, activation="sigmoid", name="out"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy", **compile_kwargs)
    return model


class ZeroWatcher(keras.callbacks.Callback):
    """Records, after every batch, whether the given positions are still zero."""

    def __init__(self, variable, positions):
        super().__init__()
        self.variable, self.positions, self.violations = variable, positions, 0

    def on_train_batch_end(self, batch, logs=None):
        sync(self.model)
        self.violations += int(np.count_nonzero(self.variable.numpy()[self.positions]))


class BeforeEvent(keras.callbacks.Callback):
    """Records a weight at the end of each epoch; placed before PruneCallback, before its event."""

    def __init__(self, variable):
        super().__init__()
        self.variable, self.value = variable, None

    def on_epoch_end(self, epoch, logs=None):
        sync(self.model)
        self.value = np.asarray(self.variable.numpy())


@pytest.mark.parametrize("jit_compile", [True, False])
def test_pruned_weights_stay_zero_across_epochs(jit_compile):
    model = _mlp(jit_compile=jit_compile)
    x, y = _data()
    kernel = model.get_layer("h1").kernel
    before = BeforeEvent(kernel)
    model.fit(
        x, y, epochs=1, batch_size=32, verbose=0, callbacks=[before, PruneCallback(THRESHOLD)]
    )
    after_first = np.asarray(kernel.numpy())
    pruned = after_first == 0
    # Exactly the weights below the threshold at the event are zero, the others untouched.
    assert pruned.any()
    np.testing.assert_array_equal(pruned, np.abs(before.value.astype(np.float64)) < THRESHOLD)
    np.testing.assert_array_equal(after_first[~pruned], before.value[~pruned])

    watcher = ZeroWatcher(kernel, pruned)
    model.fit(
        x, y, epochs=2, batch_size=32, verbose=0, callbacks=[PruneCallback(THRESHOLD), watcher]
    )
    # Adam's momentum would move them; the masks are applied after every step.
    assert watcher.violations == 0
    assert np.all(kernel.numpy()[pruned] == 0)


def test_logs_hold_sparsity_and_alive_units_in_history_and_csv(tmp_path):
    model = _mlp()
    x, y = _data()
    path = tmp_path / "log.csv"
    history = model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[PruneCallback(THRESHOLD), keras.callbacks.CSVLogger(str(path))],
    )
    kernels = [np.asarray(model.get_layer(n).kernel.numpy()) for n in ("h1", "h2")]
    zeros = sum(int(np.sum(k == 0)) for k in kernels)
    total = sum(k.size for k in kernels)
    alive = sum(int(np.any(k != 0, axis=0).sum()) for k in kernels)
    assert history.history["sparsity"][-1] == pytest.approx(zeros / total)
    assert history.history["alive_units"][-1] == alive
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["sparsity"]) == pytest.approx(zeros / total)


def test_default_layers_are_the_regularized_ones_else_all():
    inputs = keras.Input((12,))
    h = L.Dense(16, name="h1", kernel_regularizer=LiRegularizer(1e-3))(inputs)
    out = L.Dense(1, name="out")(h)
    model = keras.Model(inputs, out)
    model.compile("adam", "mse")
    # 0.3, not more: Glorot weights of h1 lie within +-0.46, and a threshold that
    # zeroes a whole layer is refused.
    x, y = _data()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[PruneCallback(0.3)])
    assert np.any(model.get_layer("h1").kernel.numpy() == 0)
    assert np.all(model.get_layer("out").kernel.numpy() != 0)

    plain = _mlp(reg=False)
    plain.fit(x, y, epochs=1, verbose=0, callbacks=[PruneCallback(0.3)])
    assert all(np.any(plain.get_layer(n).kernel.numpy() == 0) for n in ("h1", "h2", "out"))


def test_warmup_delays_pruning():
    model = _mlp()
    x, y = _data()
    kernel = model.get_layer("h1").kernel
    callback = PruneCallback(THRESHOLD, warmup_epochs=2)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    assert np.all(kernel.numpy() != 0)
    model.fit(x, y, epochs=3, initial_epoch=2, verbose=0, callbacks=[callback])
    assert np.any(kernel.numpy() == 0)


def test_frequency_in_batches_prunes_inside_the_epoch():
    model = _mlp()
    x, y = _data(n=64)

    class FirstZeroStep(keras.callbacks.Callback):
        step = None

        def on_train_batch_end(self, batch, logs=None):
            sync(self.model)
            if self.step is None and np.any(self.model.get_layer("h1").kernel.numpy() == 0):
                self.step = batch

    probe = FirstZeroStep()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[PruneCallback(0.3, 3), probe])
    assert probe.step == 2  # the third batch


def test_incoming_mode_kills_exactly_the_units_whose_incoming_norm_is_below_threshold():
    model = _mlp()
    x, y = _data()
    before = BeforeEvent(model.get_layer("h1").kernel)
    callbacks = [before, PruneCallback(1.0, mode="incoming")]
    model.fit(x, y, epochs=1, verbose=0, callbacks=callbacks)
    kernel = np.asarray(model.get_layer("h1").kernel.numpy())
    weak = np.linalg.norm(before.value.astype(np.float64), axis=0) < 1.0
    assert 0 < weak.sum() < weak.size  # the threshold splits the units
    np.testing.assert_array_equal(np.all(kernel == 0, axis=0), weak)
    # The other columns are untouched (no single weights pruned).
    np.testing.assert_array_equal(kernel[:, ~weak], before.value[:, ~weak])


class EpochZeroWatcher(keras.callbacks.Callback):
    """Counts weights zero at the end of one epoch that are non-zero after a later batch."""

    def __init__(self, variable):
        super().__init__()
        self.variable, self.pruned, self.pruned_counts, self.violations = variable, None, [], 0

    def on_train_batch_end(self, batch, logs=None):
        if self.pruned is not None:
            sync(self.model)
            self.violations += int(np.count_nonzero(self.variable.numpy()[self.pruned]))

    def on_epoch_end(self, epoch, logs=None):
        sync(self.model)
        self.pruned = np.asarray(self.variable.numpy()) == 0
        self.pruned_counts.append(int(self.pruned.sum()))


@pytest.mark.parametrize("jit_compile", [True, False])
def test_weights_pruned_at_an_epoch_end_stay_zero_in_the_next_epochs(jit_compile):
    # The masks change inside one fit: a train step that froze them when it was
    # traced (all ones) would let every weight pruned at an epoch end move again.
    model = _mlp(jit_compile=jit_compile)
    x, y = _data()
    kernel = model.get_layer("h1").kernel
    watcher = EpochZeroWatcher(kernel)  # after PruneCallback: sees the pruned weights
    model.fit(x, y, epochs=3, verbose=0, callbacks=[PruneCallback(THRESHOLD), watcher])
    assert 0 < watcher.pruned_counts[0] <= watcher.pruned_counts[-1]
    assert watcher.violations == 0


@pytest.mark.parametrize("jit_compile", [True, False])
def test_batch_frequency_masks_hold_between_events(jit_compile):
    model = _mlp(jit_compile=jit_compile)
    x, y = _data(n=64)
    kernel = model.get_layer("h1").kernel

    class Between(keras.callbacks.Callback):
        """After every batch: every weight that was zero after the previous one still is."""

        pruned, violations, counts = None, 0, []

        def on_train_batch_end(self, batch, logs=None):
            sync(self.model)
            value = np.asarray(kernel.numpy())
            if self.pruned is not None:
                self.violations += int(np.count_nonzero(value[self.pruned]))
            self.pruned = value == 0
            self.counts.append(int(self.pruned.sum()))

    probe = Between()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[PruneCallback(0.3, 3), probe])
    # 16 batches, events after batches 3, 6, ..., 15 of the run.
    assert probe.counts[:2] == [0, 0] and probe.counts[2] > 0
    assert probe.violations == 0


@tensorflow_only("tf.distribute.MirroredStrategy")
def test_mirrored_strategy_keeps_replicas_identical():
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest configures two logical CPUs"
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        model = _mlp()
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[PruneCallback(THRESHOLD)])
    kernel = model.get_layer("h1").kernel
    replicas = [np.asarray(v.numpy()) for v in kernel.value.values]
    assert len(replicas) == 2
    np.testing.assert_array_equal(replicas[0], replicas[1])
    assert np.any(replicas[0] == 0)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_prunes_the_float32_weights_below_threshold(policy):
    keras.config.set_dtype_policy(policy)
    model = _mlp()
    x, y = _data()
    kernel = model.get_layer("h1").kernel
    before = BeforeEvent(kernel)
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[before, PruneCallback(THRESHOLD)])
    assert kernel.dtype == "float32"
    after = np.asarray(kernel.numpy())
    assert np.any(after == 0)
    np.testing.assert_array_equal(after == 0, np.abs(before.value.astype(np.float64)) < THRESHOLD)
    assert np.all(np.isfinite(history.history["loss"]))


def test_existing_zeros_count_as_pruned_after_restart():
    model = _mlp()
    x, y = _data()
    kernel = model.get_layer("h1").kernel
    w = np.asarray(kernel.numpy())
    w[:4, :] = 0  # e.g. restored from a pruned checkpoint
    kernel.assign(w)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[PruneCallback(0.0)])
    assert np.all(kernel.numpy()[:4, :] == 0)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"threshold": -1}, ValueError, "`threshold`"),
        ({"threshold": "x"}, TypeError, "`threshold`"),
        ({"frequency": 0}, ValueError, "`frequency`.*0"),
        ({"frequency": "batch"}, ValueError, "`frequency`"),
        ({"mode": "filters"}, ValueError, "`mode`"),
        ({"layers": "h1"}, TypeError, "`layers`"),
        ({"warmup_epochs": -1}, ValueError, "`warmup_epochs`"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        PruneCallback(**kwargs)


def test_unknown_layer_is_reported_when_training_starts():
    model = _mlp()
    x, y = _data()
    with pytest.raises(ValueError, match="'nope' is not a layer"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[PruneCallback(layers=["nope"])])


def test_config_round_trips_through_from_config_and_keras_serialization():
    callback = PruneCallback(0.02, frequency=5, mode="neuron", layers=["a"], warmup_epochs=3)
    config = callback.get_config()
    assert config == {
        "threshold": 0.02,
        "frequency": 5,
        "mode": "neuron",
        "layers": ["a"],
        "warmup_epochs": 3,
        "keep_last_unit": False,
    }
    assert PruneCallback.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert type(restored) is PruneCallback and restored.get_config() == config


def test_user_constraint_still_applies_and_is_given_back():
    model = keras.Sequential(
        [
            keras.Input((12,)),
            L.Dense(
                16,
                name="h1",
                kernel_constraint=keras.constraints.NonNeg(),
                kernel_regularizer=LiRegularizer(1e-3),
            ),
            L.Dense(1, name="out"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = _data()
    kernel = model.get_layer("h1").kernel
    original = kernel.constraint
    model.fit(x, y, epochs=2, verbose=0, callbacks=[PruneCallback(THRESHOLD)])
    pruned = kernel.numpy() == 0
    assert pruned.any() and np.all(kernel.numpy() >= 0)
    assert kernel.constraint is original  # our mask is not left behind
    # Without the callback the masks are gone: pruned weights may grow again.
    model.fit(x, y, epochs=1, verbose=0)
    assert np.any(kernel.numpy()[pruned] != 0)


def _record_pruning_events(monkeypatch):
    """Records `(epoch, batch)` of every pruning event (masks updated at a threshold)."""
    events, where = [], {}
    on_batch_end = PruneCallback.on_train_batch_end
    update_masks = PruneCallback._update_masks

    def on_train_batch_end(self, batch, logs=None):
        where["batch"] = batch
        on_batch_end(self, batch, logs)

    def _update_masks(self, threshold):
        if threshold is not None:
            events.append((self._schedule.epoch, where["batch"]))
        update_masks(self, threshold)

    monkeypatch.setattr(PruneCallback, "on_train_batch_end", on_train_batch_end)
    monkeypatch.setattr(PruneCallback, "_update_masks", _update_masks)
    return events


# Keras's PyTorch trainer refuses steps_per_execution > 1.
needs_steps_per_execution = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras's PyTorch backend needs steps_per_execution=1"
)


@needs_steps_per_execution
@pytest.mark.parametrize(
    "steps_per_execution,batches",
    [
        (1, [2, 5, 8, 11, 14, 17, 20, 23]),  # batch index 2 is the third batch
        (3, [2, 5, 8, 11, 14, 17, 20, 23]),
        # Batches 9 and 12 end in the third execution (batches 9-12), 21 and 24 in
        # the sixth: one event each, at the end of the execution.
        (4, [3, 7, 11, 15, 19, 23]),
    ],
)
def test_frequency_counts_batches_with_steps_per_execution(
    monkeypatch, steps_per_execution, batches
):
    events = _record_pruning_events(monkeypatch)
    model = _mlp(steps_per_execution=steps_per_execution)
    x, y = _data(n=24 * 8)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[PruneCallback(0.05, 3)])
    assert events == [(0, b) for b in batches]


@needs_steps_per_execution
def test_frequency_counts_the_batches_of_a_shorter_last_execution(monkeypatch):
    events = _record_pruning_events(monkeypatch)
    model = _mlp(steps_per_execution=4)
    x, y = _data(n=26 * 8)
    # 26 batches an epoch: executions end after batches 4, 8, ..., 24 and 26 (whose
    # hook Keras reports as batch index 27). Batch 27 (of the run) is the first of
    # the second epoch, so the first event there follows its fourth batch.
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[PruneCallback(0.05, 3)])
    first = [(0, b) for b in (3, 7, 11, 15, 19, 23)]
    second = [(1, b) for b in (3, 7, 11, 15, 19, 23, 27)]  # the last: batch 51 of 52
    assert events == first + second


class RaiseAtBatch(keras.callbacks.Callback):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            raise RuntimeError("interrupted")


def _constrained_mlp():
    """`_mlp` with a user constraint on h1 and the first four rows of h1 zero."""
    model = keras.Sequential(
        [
            keras.Input((12,)),
            L.Dense(16, name="h1", kernel_constraint=keras.constraints.MaxNorm(100.0)),
            L.Dense(1, name="out"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    kernel = model.get_layer("h1").kernel
    kernel.assign(np.concatenate([np.zeros((4, 16)), np.asarray(kernel.numpy())[4:]]))
    return model


def _assert_masks_are_gone(model, constraints):
    """After a plain fit the user's constraints are back and the old zeros moved."""
    variables = [layer.kernel for layer in model.layers]
    x, y = _data()
    model.fit(x, y, epochs=1, verbose=0)
    assert all(v.constraint is c for v, c in zip(variables, constraints, strict=True))
    assert np.all(model.get_layer("h1").kernel.numpy()[:4] != 0)
    assert "make_train_function" not in vars(model)


def test_constraints_come_back_after_another_callback_raises():
    model = _constrained_mlp()
    constraints = [layer.kernel.constraint for layer in model.layers]
    x, y = _data()
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[PruneCallback(0.0), RaiseAtBatch(2)])
    # No hook runs when another callback raises: the next fit gives them back first.
    _assert_masks_are_gone(model, constraints)


def test_constraints_come_back_after_a_refused_pruning_event():
    model = _constrained_mlp()
    constraints = [layer.kernel.constraint for layer in model.layers]
    x, y = _data()
    with pytest.raises(ValueError, match="would remove every unit"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[PruneCallback(100.0)])
    # The refusal is the callback's own error: the constraints are back at once.
    assert all(
        layer.kernel.constraint is c for layer, c in zip(model.layers, constraints, strict=True)
    )
    assert np.all(model.get_layer("h1").kernel.numpy()[:4] == 0)  # weights as they were
    _assert_masks_are_gone(model, constraints)


def test_layer_shared_with_a_nested_model_is_masked_once_and_given_back():
    constraint = keras.constraints.MaxNorm(100.0)
    model = shared_with_nested_model(constraint)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x = np.random.randn(64, 8).astype("float32")
    y = np.random.randn(64, 2).astype("float32")
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[PruneCallback(0.1)])
    kernels = [np.asarray(model.get_layer(n).kernel.numpy()) for n in ("shared", "out")]
    zeros = sum(int(np.sum(k == 0)) for k in kernels)
    assert zeros > 0
    assert history.history["sparsity"] == [pytest.approx(zeros / (32 + 8))]
    assert model.get_layer("shared").kernel.constraint is constraint
    assert model.get_layer("out").kernel.constraint is None


def test_two_callbacks_on_other_layers_keep_their_masks_and_give_them_back():
    model = _constrained_mlp()
    constraints = [layer.kernel.constraint for layer in model.layers]
    out = model.get_layer("out").kernel
    out.assign(np.concatenate([np.zeros((2, 1)), np.asarray(out.numpy())[2:]]))
    watchers = [ZeroWatcher(model.get_layer("h1").kernel, np.s_[:4]), ZeroWatcher(out, np.s_[:2])]
    callbacks = [PruneCallback(0.0, layers=["h1"]), PruneCallback(0.0, layers=["out"])]
    x, y = _data()
    model.fit(x, y, epochs=1, verbose=0, callbacks=callbacks + watchers)
    assert [watcher.violations for watcher in watchers] == [0, 0]
    assert all(
        layer.kernel.constraint is c for layer, c in zip(model.layers, constraints, strict=True)
    )
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[*callbacks, RaiseAtBatch(2)])
    _assert_masks_are_gone(model, constraints)
    assert np.all(out.numpy()[:2] != 0)


def test_keep_last_unit_keeps_each_emptied_layer_at_its_strongest_unit():
    model = _mlp()
    x, y = _data()
    # Threshold 100 would empty h1 and h2; without keep_last_unit the event is refused.
    model.fit(x, y, epochs=1, verbose=0, callbacks=[PruneCallback(100.0, keep_last_unit=True)])
    for name in ("h1", "h2"):
        kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
        alive = np.flatnonzero(np.any(kernel != 0, axis=0))
        assert alive.size == 1, (name, alive)
    slim = keras_dropneuron.slim_model(model)
    assert [slim.get_layer(n).units for n in ("h1", "h2")] == [1, 1]
    np.testing.assert_allclose(slim.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert PruneCallback(keep_last_unit=True).get_config()["keep_last_unit"] is True
    with pytest.raises(TypeError, match="keep_last_unit"):
        PruneCallback(keep_last_unit="yes")


def test_keep_strongest_units_matches_numpy_on_a_gated_kernel():
    rng = np.random.default_rng(0)
    units, gates = 5, 4
    value = rng.normal(size=(3, gates * units)) * 0.01
    value[:, 2::units] *= 3  # unit 2's columns in every gate block are the largest
    layout = WeightLayout("cell.kernel", "kernel_regularizer", (-2,), (-1,), gates=gates)
    keep = np.zeros(value.shape, dtype=bool)  # pruning would remove everything
    (result,) = pruning.keep_strongest_units([(None, layout, None)], [value], [keep])
    norms = np.square(value).reshape(3, gates, units).sum(axis=(0, 1))
    expected = np.zeros(value.shape, dtype=bool)
    expected[:, np.argmax(norms) :: units] = True
    np.testing.assert_array_equal(result, expected)
    # A layer that keeps a unit anyway is left as pruning would leave it.
    partial = np.zeros(value.shape, dtype=bool)
    partial[:, 0] = True
    (result,) = pruning.keep_strongest_units([(None, layout, None)], [value], [partial])
    np.testing.assert_array_equal(result, partial)
