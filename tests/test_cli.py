"""The `keras-dropneuron slim` command."""

import hashlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_dropneuron.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")


def digest(path):
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


@pytest.fixture
def pruned(tmp_path):
    inputs = keras.Input((8,), name="x")
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
    kernel = model.get_layer("out").kernel.numpy()
    kernel[:20] = 0
    model.get_layer("out").kernel.assign(kernel)
    path = tmp_path / "pruned.keras"
    model.save(path)
    return model, str(path)


def test_slim_verb(pruned, tmp_path, capsys):
    model, path = pruned
    out = str(tmp_path / "slim.keras")
    before = digest(path)
    sm, tfl = str(tmp_path / "sm"), str(tmp_path / "slim.tflite")
    assert main(["slim", path, "-o", out, "--saved-model", sm, "--tflite", tfl]) == 0
    printed = capsys.readouterr().out
    assert "hidden (Dense)" in printed and "32 -> 12" in printed
    assert f"model file: {os.path.getsize(path):,} -> " in printed
    assert "TFLite file:" in printed and "SavedModel:" in printed
    assert os.path.isdir(sm) and os.path.getsize(tfl) > 0
    slim = keras.saving.load_model(out)
    assert slim.count_params() == (8 * 12 + 12) + (12 * 3 + 3)
    x = np.random.default_rng(0).standard_normal((2, 8)).astype("float32")
    np.testing.assert_allclose(slim(x), model(x), atol=1e-5)
    assert digest(path) == before


def test_threshold_option(pruned, tmp_path):
    _, path = pruned
    out = str(tmp_path / "slim.h5")
    assert main(["slim", path, "-o", out, "--threshold", "1e9"]) == 0
    # Every weight of `out` counts as zero; one unit is kept so shapes stay valid.
    assert keras.saving.load_model(out).get_layer("hidden").units == 1


@keras.saving.register_keras_serializable(package="test_cli")
class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def bad_inputs(tmp_path, pruned):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    subclassed = Subclassed()
    subclassed(np.zeros((1, 3), "float32"))
    subclassed_path = tmp_path / "subclassed.keras"
    subclassed.save(subclassed_path)
    return {
        "missing": (str(tmp_path / "missing.keras"), "input model not found"),
        "corrupt": (str(corrupt), "cannot load model"),
        "subclassed": (str(subclassed_path), "unsupported model"),
        "same_output": (pruned[1], "refusing to overwrite"),
    }


@pytest.mark.parametrize("case", ["missing", "corrupt", "subclassed", "same_output"])
def test_errors_are_one_line(case, pruned, tmp_path, capsys):
    path, message = bad_inputs(tmp_path, pruned)[case]
    out = path if case == "same_output" else str(tmp_path / "out.keras")
    before = digest(path) if os.path.exists(path) else None
    assert main(["slim", path, "-o", out]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert err.startswith("keras-dropneuron: error: ")
    if before:
        assert digest(path) == before
    if case != "same_output":
        assert not os.path.exists(out)


def test_no_verb_is_usage_error(capsys):
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_module_entry_point(pruned, tmp_path):
    _, path = pruned
    out = str(tmp_path / "slim.keras")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", "keras_dropneuron.cli", "slim", path, "-o", out],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Slim report" in result.stdout and os.path.exists(out)


def test_report_verb(pruned, tmp_path, capsys):
    from keras_dropneuron import sparsity_report

    model, path = pruned
    before = digest(path)
    assert main(["report", path]) == 0
    out = capsys.readouterr().out
    assert str(sparsity_report(model)) in out
    assert "hidden (Dense)" in out and "12/32" in out  # 20 of 32 hidden units unread
    assert digest(path) == before
    assert main(["report", str(tmp_path / "missing.keras")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found" in err
