"""Interrupted runs: BackupAndRestore after a killed process, ModelCheckpoint files,
and loading saved models with and without `import keras_dropneuron`."""

import csv
import json
import time

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from scripts import processes, resumable_fit

from keras_dropneuron import DropNeuronRegularizer, LiRegularizer, LoRegularizer

SCRIPT = processes.SCRIPTS / "resumable_fit.py"
KERNELS = ("h1", "h2")
HANG_EPOCH, HANG_BATCH = 2, 7  # mid-epoch: the backup holds the end of epoch 2 (index 1)


def _kernels(path):
    model = keras.saving.load_model(path)  # default safe_mode=True
    return {name: np.asarray(model.get_layer(name).kernel.numpy()) for name in KERNELS}


def _sparsity(kernels):
    zeros = sum(int(np.sum(k == 0)) for k in kernels.values())
    return zeros / sum(k.size for k in kernels.values())


def _logged_sparsity(workdir):
    with open(workdir / "log.csv") as f:
        return {int(row["epoch"]): float(row["sparsity"]) for row in csv.DictReader(f)}


def _wait_for(path, proc, log, timeout=180):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited early:\n{processes.tail(log)}"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def uninterrupted():
    """Kernels at the end of an uninterrupted in-process run."""
    model = resumable_fit.build()
    resumable_fit.fit(model, [resumable_fit.PruneCallback(resumable_fit.THRESHOLD)])
    return {name: np.asarray(model.get_layer(name).kernel.numpy()) for name in KERNELS}


@pytest.mark.slow
def test_killed_run_resumes_with_its_sparsity(tmp_path, uninterrupted):
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    hang = ["--hang-at", HANG_EPOCH, HANG_BATCH]
    victim = processes.start([SCRIPT, interrupted, *hang], interrupted / "out.log")
    with processes.killed_on_exit(victim):
        _wait_for(interrupted / "hanging", victim, interrupted / "out.log")
        victim.kill()  # SIGKILL: no callback, no clean-up runs
        assert victim.wait(timeout=30) < 0
        assert not (interrupted / "final.keras").exists()
        done = sorted(p.name for p in interrupted.glob("epoch_*.keras"))
        assert done == ["epoch_01.keras", "epoch_02.keras"]
        before_kill = _kernels(interrupted / "epoch_02.keras")

        # Resume on the same directory, and, meanwhile, load a checkpoint in a fresh
        # interpreter that has not imported keras_dropneuron.
        resumed = processes.start([SCRIPT, interrupted], interrupted / "resume.log")
        loader = processes.start(
            [
                processes.SCRIPTS / "load_without_import.py",
                interrupted / "epoch_02.keras",
                tmp_path / "load.json",
            ],
            tmp_path / "load.log",
        )
        with processes.killed_on_exit(resumed, loader):
            for proc, log in [
                (resumed, interrupted / "resume.log"),
                (loader, tmp_path / "load.log"),
            ]:
                assert proc.wait(timeout=240) == 0, processes.tail(log)

    # The resumed run started from the end of epoch 2, not from scratch.
    assert not (interrupted / "backup").exists()  # removed once training finished
    logged = _logged_sparsity(interrupted)
    assert sorted(logged) == [0, 1, 2, 3, 4]
    final = _kernels(interrupted / "final.keras")
    expected = uninterrupted  # the same run, in this process, without interruption
    for name in KERNELS:
        # Weights pruned before the kill are still zero ...
        assert np.all(final[name][before_kill[name] == 0] == 0)
        # ... and the run ends where the uninterrupted one does.
        np.testing.assert_array_equal(final[name] == 0, expected[name] == 0)
        np.testing.assert_allclose(final[name], expected[name], atol=1e-6)
    assert _sparsity(final) == _sparsity(expected) > _sparsity(before_kill) > 0
    assert logged[4] == _sparsity(final)

    # Every ModelCheckpoint file reloads with the sparsity logged for its epoch.
    for epoch in range(5):
        kernels = _kernels(interrupted / f"epoch_{epoch + 1:02d}.keras")
        assert _sparsity(kernels) == pytest.approx(logged[epoch])

    # Without `import keras_dropneuron` Keras cannot find the regularizers and its
    # error names the module to import; with it, the file loads with its zeros.
    loaded = json.loads((tmp_path / "load.json").read_text())
    assert loaded["imported_before"] is False
    assert loaded["error"]["type"] == "TypeError"
    assert "'module': 'keras_dropneuron.regularizers'" in loaded["error"]["message"]
    assert "keras_dropneuron>DropNeuronRegularizer" in loaded["error"]["message"]
    assert {name: loaded["zeros"][name] for name in KERNELS} == {
        name: int(np.sum(k == 0)) for name, k in before_kill.items()
    }


class Interrupt(keras.callbacks.Callback):
    """Raises in the middle of epoch HANG_EPOCH, as a crash would."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (HANG_EPOCH, HANG_BATCH):
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("backup_first", [True, False], ids=["backup_first", "prune_first"])
def test_resume_in_process_matches_uninterrupted_run_in_either_order(
    tmp_path, backup_first, uninterrupted
):
    crashed = resumable_fit.build()
    with pytest.raises(RuntimeError, match="interrupted"):
        resumable_fit.fit(
            crashed, [*resumable_fit.callbacks(tmp_path, backup_first, files=False), Interrupt()]
        )
    assert (tmp_path / "backup").exists()
    resumed = resumable_fit.build()  # a fresh model, as after a restart
    resumable_fit.fit(resumed, resumable_fit.callbacks(tmp_path, backup_first, files=False))
    for name in KERNELS:
        expected = uninterrupted[name]
        final = np.asarray(resumed.get_layer(name).kernel.numpy())
        np.testing.assert_array_equal(final == 0, expected == 0)
        np.testing.assert_allclose(final, expected, atol=1e-6)


@pytest.mark.parametrize(
    "reg",
    [LiRegularizer(0.1), LoRegularizer(0.2, axis=-2), DropNeuronRegularizer(li=0.1, l1=0.01)],
    ids=["li", "lo", "dropneuron"],
)
def test_safe_mode_load_keeps_regularizer_and_zeros(tmp_path, reg):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, kernel_regularizer=reg)])
    kernel = np.asarray(model.layers[0].kernel.numpy())
    kernel[:, 1] = 0
    kernel[2, :] = 0
    model.layers[0].kernel.assign(kernel)
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    layer = reloaded.layers[0]
    assert type(layer.kernel_regularizer) is type(reg)
    assert layer.kernel_regularizer.get_config() == reg.get_config()
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel)
    np.testing.assert_allclose(to_numpy(reloaded.losses[0]), to_numpy(reg(kernel)), rtol=1e-6)
