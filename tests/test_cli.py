"""The `keras-dropneuron` command line: verbs, options and one-line errors."""

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pathlib
import re
import subprocess
import sys
import warnings
import zipfile

import keras
import numpy as np
import pytest

from keras_dropneuron.cli import common, main

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
    slim = keras.saving.load_model(out)
    assert slim.count_params() == (8 * 12 + 12) + (12 * 3 + 3)
    x = np.random.default_rng(0).standard_normal((2, 8)).astype("float32")
    np.testing.assert_allclose(slim(x), model(x), atol=1e-5)
    np.testing.assert_allclose(serve_saved_model(sm, x), model(x), atol=1e-5)
    np.testing.assert_allclose(run_tflite(tfl, x)[0], model(x), atol=1e-4)
    assert digest(path) == before


def test_threshold_option(pruned, tmp_path):
    _, path = pruned
    out = str(tmp_path / "slim.h5")
    assert main(["slim", path, "-o", out, "--threshold", "1e9"]) == 0
    # Every weight of `out` counts as zero; one unit is kept so shapes stay valid.
    assert keras.saving.load_model(out).get_layer("hidden").units == 1


def test_slim_verb_refuses_a_model_that_fails_verification(pruned, tmp_path, capsys, monkeypatch):
    from keras_dropneuron.layer_rules.dense import DenseRule

    _, path = pruned
    out = str(tmp_path / "slim.keras")
    kernel = np.zeros((8, 32), "float32")  # hidden units become constants ...
    model = keras.saving.load_model(path)
    model.get_layer("hidden").kernel.assign(kernel)
    model.get_layer("hidden").bias.assign(np.ones(32, "float32"))
    model.save(path)
    # ... and a broken fold (a stand-in for a surgeon bug) gets them wrong.
    monkeypatch.setattr(DenseRule, "fold_bias", lambda self, layer, constants: 0.0)
    assert main(["slim", path, "-o", out]) == 1
    err = capsys.readouterr().err
    assert "verification failed, nothing written" in err and "'out'" in err
    assert not os.path.exists(out)
    assert main(["slim", path, "-o", out, "--no-verify"]) == 0
    assert os.path.exists(out)


@keras.saving.register_keras_serializable(package="test_cli")
class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def bad_inputs(tmp_path, pruned):
    data = bytearray(pathlib.Path(pruned[1]).read_bytes())
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file")
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(data[:500])
    text = tmp_path / "model.txt"
    text.write_bytes(data)
    damaged = tmp_path / "damaged.keras"
    data[100] ^= 0xFF  # inside the first member: its CRC no longer matches
    damaged.write_bytes(data)
    not_keras = tmp_path / "not_keras.keras"
    with zipfile.ZipFile(not_keras, "w") as archive:
        archive.writestr("notes.txt", "a zip, not a model")
    garbage_h5 = tmp_path / "garbage.h5"
    garbage_h5.write_bytes(b"not an HDF5 file")
    directory = tmp_path / "model_dir.keras"
    directory.mkdir()
    subclassed = Subclassed()
    subclassed(np.zeros((1, 3), "float32"))
    subclassed_path = tmp_path / "subclassed.keras"
    subclassed.save(subclassed_path)
    return {
        "missing": (str(tmp_path / "missing.keras"), "input model not found"),
        "corrupt": (str(corrupt), "as a Keras model: BadZipFile: File is not a zip file"),
        "truncated": (str(truncated), "as a Keras model: BadZipFile"),
        "damaged": (str(damaged), "as a Keras model: BadZipFile: damaged archive member"),
        "not_keras": (str(not_keras), "as a Keras model: KeyError"),
        "garbage_h5": (str(garbage_h5), "as a Keras model: OSError"),
        "directory": (str(directory), "input model is a directory"),
        "extension": (str(text), "input model must be a .keras or .h5 file"),
        "subclassed": (str(subclassed_path), "unsupported model"),
        "same_output": (pruned[1], "refusing to overwrite"),
    }


def listing(folder):
    return sorted(
        (os.path.relpath(os.path.join(root, name), folder), digest(os.path.join(root, name)))
        for root, _, names in os.walk(folder)
        for name in names
    )


INPUT_CASES = [
    "missing",
    "corrupt",
    "truncated",
    "damaged",
    "not_keras",
    "garbage_h5",
    "directory",
    "extension",
]


@pytest.mark.parametrize(
    "verb, case",
    [("slim", case) for case in [*INPUT_CASES, "subclassed", "same_output"]]
    + [("report", case) for case in INPUT_CASES],
)
def test_errors_are_one_line(verb, case, pruned, tmp_path, capsys):
    path, message = bad_inputs(tmp_path, pruned)[case]
    out = path if case == "same_output" else str(tmp_path / "out.keras")
    before = listing(tmp_path)
    assert main([verb, path] + (["-o", out] if verb == "slim" else [])) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert err.startswith("keras-dropneuron: error: ")
    assert "File not found" not in err
    assert listing(tmp_path) == before  # nothing written, the input untouched


def bad_outputs(tmp_path):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_dir.keras").mkdir()
    (tmp_path / "sm").mkdir()
    ok = str(tmp_path / "slim.keras")
    missing = str(tmp_path / "nodir" / "x")
    tfl = str(tmp_path / "slim.tflite")
    calibration = str(tmp_path / "x.npy")
    np.save(calibration, np.zeros((4, 8), "float32"))
    wrong_shape = str(tmp_path / "wrong.npy")
    np.save(wrong_shape, np.zeros((4, 3), "float32"))
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy")
    int8 = ["--tflite", tfl, "--int8", "--calibration"]
    return {
        "nothing_to_write": ([], "nothing to write: give -o/--output"),
        "format_dir_missing": (["--format", f"litert={missing}.tflite"], "--format litert: the"),
        "format_keras_suffix": (["--format", f"keras={tfl}"], "a keras file must end with"),
        "format_same_as_output": (
            ["-o", ok, "--format", f"h5={ok}"],
            "a h5 file must end with .h5",
        ),
        "format_same_path": (
            ["-o", ok, "--format", f"keras={ok}"],
            "-o/--output and --format keras name the same path",
        ),
        "onnx_dir_missing": (["--onnx", missing + ".onnx"], "--onnx: the directory"),
        "int8_without_calibration": (["--tflite", tfl, "--int8"], "--int8 needs --calibration"),
        "int8_without_tflite": (["-o", ok, "--int8"], "--int8 quantizes TFLite files"),
        "calibration_without_int8": (
            ["--tflite", tfl, "--calibration", calibration],
            "--calibration is only used with --int8",
        ),
        "calibration_missing": (
            [*int8, str(tmp_path / "none.npy")],
            "--calibration: file not found",
        ),
        "calibration_directory": ([*int8, str(tmp_path / "sm")], "is a directory"),
        "calibration_suffix": ([*int8, str(tmp_path / "a_file")], "must be a .npy or .npz"),
        "calibration_garbage": ([*int8, str(garbage)], "--calibration: cannot read"),
        "calibration_wrong_shape": (
            ["-o", ok, *int8, wrong_shape],
            "the samples: input 'x' expects samples of shape (n, 8)",
        ),
        "output_dir_missing": (["-o", missing + ".keras"], "-o/--output: the directory"),
        "output_parent_is_a_file": (["-o", str(tmp_path / "a_file" / "x.keras")], "not a dir"),
        "output_is_a_dir": (["-o", str(tmp_path / "a_dir.keras")], "-o/--output is a directory"),
        "output_extension": (["-o", str(tmp_path / "slim.tflite")], "must end with .keras"),
        "tflite_dir_missing": (["-o", ok, "--tflite", missing + ".tflite"], "--tflite: the"),
        "saved_model_dir_missing": (["-o", ok, "--saved-model", missing], "--saved-model: the"),
        "saved_model_exists": (["-o", ok, "--saved-model", str(tmp_path / "sm")], "exists"),
        "same_outputs": (["-o", ok, "--tflite", ok], "-o/--output and --tflite name the same"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "output_dir_missing",
        "output_parent_is_a_file",
        "output_is_a_dir",
        "output_extension",
        "tflite_dir_missing",
        "saved_model_dir_missing",
        "saved_model_exists",
        "same_outputs",
        "nothing_to_write",
        "format_dir_missing",
        "format_keras_suffix",
        "format_same_as_output",
        "format_same_path",
        "onnx_dir_missing",
        "int8_without_calibration",
        "int8_without_tflite",
        "calibration_without_int8",
        "calibration_missing",
        "calibration_directory",
        "calibration_suffix",
        "calibration_garbage",
        "calibration_wrong_shape",
    ],
)
def test_output_paths_are_checked_before_anything_is_written(case, pruned, tmp_path, capsys):
    options, message = bad_outputs(tmp_path)[case]
    before = listing(tmp_path)
    assert main(["slim", pruned[1], *options]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keras-dropneuron: error: ")
    assert message in err
    assert listing(tmp_path) == before


def serve_saved_model(path, x):
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    (output,) = serve(tf.constant(x)).values()
    return output.numpy()


def run_tflite(path, x):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    (output,) = runner(**{name: x}).values()
    return output, interpreter


def test_slim_every_format(pruned, tmp_path, capsys):
    model, path = pruned
    paths = {
        "keras": tmp_path / "a.keras",
        "h5": tmp_path / "b.h5",
        "saved_model": tmp_path / "sm",
        "litert": tmp_path / "c.tflite",
    }
    formats = [f"--format={fmt}={out}" for fmt, out in paths.items()]
    assert main(["slim", path, *formats]) == 0
    printed = capsys.readouterr().out
    assert "hidden (Dense)" in printed and "32 -> 12" in printed
    assert f"model file: {os.path.getsize(path):,} -> {os.path.getsize(paths['h5']):,}" in printed
    assert f"TFLite file: {os.path.getsize(paths['litert']):,} bytes" in printed
    x = np.random.default_rng(0).standard_normal((5, 8)).astype("float32")
    expected = model(x)
    for fmt in ("keras", "h5"):
        loaded = keras.saving.load_model(paths[fmt])
        np.testing.assert_allclose(loaded(x), expected, atol=1e-5)
    np.testing.assert_allclose(serve_saved_model(paths["saved_model"], x), expected, atol=1e-5)
    np.testing.assert_allclose(run_tflite(paths["litert"], x)[0], expected, atol=1e-4)


@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("tf2onnx", "onnx", "onnxruntime")),
    reason="ONNX export needs the `onnx` extra: pip install 'keras-dropneuron[onnx]'",
)
def test_slim_onnx(pruned, tmp_path, capsys):
    import onnxruntime

    model, path = pruned
    out = tmp_path / "slim.onnx"
    assert main(["slim", path, "--onnx", str(out), "--format", f"onnx={tmp_path / 'b.onnx'}"]) == 0
    assert f"ONNX file: {os.path.getsize(out):,} bytes" in capsys.readouterr().out
    x = np.random.default_rng(0).standard_normal((5, 8)).astype("float32")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(output, model(x), atol=1e-5)


def test_slim_onnx_without_its_packages(pruned, tmp_path, capsys, monkeypatch):
    from keras_dropneuron import export

    monkeypatch.setattr(export, "onnx_missing_packages", lambda: ["tf2onnx"])
    out = tmp_path / "slim.keras"
    assert main(["slim", pruned[1], "-o", str(out), "--onnx", str(tmp_path / "s.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ONNX export needs tf2onnx: pip install" in err
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_slim_int8_tflite(pruned, tmp_path, capsys, suffix):
    model, path = pruned
    rng = np.random.default_rng(1)
    samples = rng.standard_normal((500, 8)).astype("float32")
    calibration = tmp_path / f"x{suffix}"
    if suffix == ".npy":
        np.save(calibration, samples)
    else:
        np.savez(calibration, x=samples)  # one array per input name
    out = tmp_path / "int8.tflite"
    args = ["slim", path, "--tflite", str(out), "--int8", "--calibration", str(calibration)]
    assert main(args) == 0
    assert f"TFLite file (int8): {os.path.getsize(out):,} bytes" in capsys.readouterr().out
    x = rng.standard_normal((64, 8)).astype("float32")  # held out from calibration
    output, interpreter = run_tflite(out, x)
    expected = np.asarray(model(x))
    # Full-integer quantization: within 5% of the output range (stated in test_export.py).
    assert 0 < np.max(np.abs(output - expected)) <= 0.05 * np.max(np.abs(expected))
    # Both kernels are int8 (the file is not smaller here: 147 weights weigh less than
    # the quantization parameters; test_export.py checks the size on a larger model).
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
    tensors = interpreter.get_tensor_details()
    assert [tensors[op["inputs"][1]]["dtype"] for op in ops] == [np.int8, np.int8]


def test_a_failed_conversion_is_one_line(pruned, tmp_path, capsys, monkeypatch):
    from keras_dropneuron import export

    def fail(*args, **kwargs):
        raise RuntimeError("converter says no\nsecond line")

    monkeypatch.setattr(export, "export_model", fail)
    out = str(tmp_path / "slim.tflite")
    assert main(["slim", pruned[1], "--tflite", out]) == 1
    err = capsys.readouterr().err
    expected = f"cannot write {out}: RuntimeError: converter says no second line"
    assert err == f"keras-dropneuron: error: {expected}\n"
    assert not os.path.exists(out)


def test_unknown_format_is_a_usage_error(pruned, tmp_path, capsys):
    for value, message in [
        ("tflite=x.tflite", "argument --format: unknown format 'tflite', expected one of: keras"),
        ("onnx", "argument --format: expected FORMAT=PATH, received: 'onnx'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["slim", pruned[1], "--format", value])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["pruned.keras"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output_directory(pruned, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["slim", pruned[1], "-o", str(locked / "slim.keras")]) == 1
    assert "is not writable" in capsys.readouterr().err
    assert not os.listdir(locked)


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-1", "abc"])
@pytest.mark.parametrize("verb", ["slim", "report"])
def test_bad_threshold_is_a_usage_error(verb, value, tmp_path, capsys, monkeypatch):
    def load(path):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(common, "load_model", load)
    args = [verb, str(tmp_path / "missing.keras"), "--threshold", value]
    with pytest.raises(SystemExit) as exit_info:
        main(args + (["-o", str(tmp_path / "out.keras")] if verb == "slim" else []))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --threshold: expected a" in err
    assert "unsupported model" not in err and not os.listdir(tmp_path)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    version = importlib.metadata.version("keras-dropneuron")
    assert capsys.readouterr().out == f"keras-dropneuron {version}\n"


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


def fake_reproduce(monkeypatch):
    from keras_dropneuron.experiments import runner

    calls = []
    monkeypatch.setattr(runner, "reproduce", lambda names, **kwargs: calls.append(kwargs))
    return calls


@pytest.mark.parametrize(
    "options, message",
    [
        (["--seed", "-1"], "argument --seed: expected an int >= 0"),
        (["--seeds", "0"], "argument --seeds: expected an int >= 1"),
        (["--epochs", "1.5"], "argument --epochs: expected an int"),
        (["--penalty", "li=inf"], "argument --penalty: expected a finite float >= 0"),
        (["--penalty", "li=x"], "argument --penalty: expected a float"),
    ],
)
def test_reproduce_bad_numbers_are_usage_errors(options, message, monkeypatch, capsys):
    calls = fake_reproduce(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "sparse-regression", *options])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not calls


@pytest.mark.parametrize("where", ["file", "below_a_file"])
def test_reproduce_out_must_be_a_directory(where, monkeypatch, tmp_path, capsys):
    calls = fake_reproduce(monkeypatch)
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / ("" if where == "file" else "runs")
    assert main(["reproduce", "sparse-regression", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out:" in err and "is not a directory" in err
    assert not calls


def test_reproduce_seeds_stay_in_numpy_range(monkeypatch, capsys):
    calls = fake_reproduce(monkeypatch)
    args = ["reproduce", "sparse-regression", "--seed", str(2**32 - 1)]
    assert main([*args, "--seeds", "2"]) == 1
    assert "at most 4294967295" in capsys.readouterr().err and not calls
    assert main(args) == 0 and calls[0]["seeds"] == [2**32 - 1]


@pytest.mark.parametrize(
    "options, tty, verbose", [([], False, 0), ([], True, 1), (["--verbose"], False, 2)]
)
def test_reproduce_shows_progress_on_a_terminal(options, tty, verbose, monkeypatch):
    calls = fake_reproduce(monkeypatch)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    assert main(["reproduce", "sparse-regression", *options]) == 0
    assert calls[0]["verbose"] == verbose


def test_slim_verb_rounds_and_benchmarks(pruned, tmp_path, capsys):
    _, path = pruned
    out = str(tmp_path / "slim.keras")
    assert main(["slim", path, "-o", out, "--round-to", "8", "--benchmark", "4"]) == 0
    printed = capsys.readouterr().out
    assert keras.saving.load_model(out).get_layer("hidden").units == 16  # 12 rounded up
    assert "Latency at batch 4 (this machine)" in printed


@pytest.mark.parametrize("option", ["--round-to", "--benchmark"])
def test_slim_verb_rejects_bad_counts(pruned, tmp_path, capsys, option):
    _, path = pruned
    with pytest.raises(SystemExit) as info:
        main(["slim", path, "-o", str(tmp_path / "slim.keras"), option, "0"])
    assert info.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


# ---------------------------------------------------------------- prune: the model's own loss


def _saved_for_prune(tmp_path, kind):
    """A trained model saved with its own loss, and its data: `regression` or `logits`."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(256, 6)).astype("float32")
    if kind == "regression":
        y, outputs, loss = x[:, :1].copy(), 1, "mse"
    else:
        y = (x[:, 0] > 0).astype("int32")
        outputs, loss = 2, keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(outputs)]
    )
    model.compile("adam", loss)
    model.fit(x, y, epochs=5 if kind == "logits" else 2, verbose=0)
    path, data = tmp_path / f"{kind}.keras", tmp_path / f"{kind}.npz"
    model.save(path)
    np.savez(data, x=x, y=y)
    return str(path), str(data)


PRUNE_OPTIONS = ["--target-units", "0.7", "--epochs", "8", "--finetune-epochs", "1"]
PRUNE_OPTIONS += ["--li", "1e-2", "--lo", "1e-2", "--learning-rate", "1e-2", "--batch-size", "32"]


@pytest.mark.parametrize("kind", ["regression", "logits"])
def test_prune_trains_with_the_saved_models_loss(kind, tmp_path, capsys, monkeypatch):
    path, data = _saved_for_prune(tmp_path, kind)
    out = tmp_path / "slim.keras"
    options = [*PRUNE_OPTIONS, "--max-accuracy-drop", "0.05"]
    from keras_dropneuron import budget

    losses = []
    prune_to_budget = budget.prune_to_budget

    def prune_and_record(model, *args, **kwargs):
        losses.append(kwargs["loss"] or model.loss)  # None: the model's own
        return prune_to_budget(model, *args, **kwargs)

    monkeypatch.setattr(budget, "prune_to_budget", prune_and_record)
    assert main(["prune", path, "--data", data, "-o", str(out), *options]) == 0
    saved = keras.saving.load_model(path).loss
    assert keras.losses.serialize(losses[0]) == keras.losses.serialize(saved)
    captured = capsys.readouterr()
    assert "Slim model:" in captured.out and captured.err == ""
    assert out.exists()


def test_prune_loss_option_overrides_and_a_training_error_is_one_line(tmp_path, capsys):
    path, data = _saved_for_prune(tmp_path, "regression")
    out = tmp_path / "slim.keras"
    options = [*PRUNE_OPTIONS, "--loss", "sparse_categorical_crossentropy"]
    assert main(["prune", path, "--data", data, "-o", str(out), *options]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"keras-dropneuron: error: cannot prune {path}: ")
    assert "label value" in err and err.count("\n") == 1
    assert not out.exists()


def test_prune_asks_for_loss_when_the_saved_loss_cannot_be_rebuilt(tmp_path, capsys):
    def unregistered_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile("adam", unregistered_loss)
    path = str(tmp_path / "custom.keras")
    model.save(path)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    data = str(tmp_path / "data.npz")
    np.savez(data, x=x, y=x[:, :1])
    command = ["prune", path, "--data", data, "-o", str(tmp_path / "s.keras")]
    command += ["--target-units", "1.0", "--epochs", "1", "--finetune-epochs", "0"]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert f"cannot compile {path} as it was saved (TypeError: Could not locate" in err
    assert err.endswith("give the loss to train with in --loss\n") and err.count("\n") == 1
    assert main([*command, "--loss", "mse", "--max-accuracy-drop", "1"]) == 0


# ---------------------------------------------------------------- prune: quiet unless --verbose


def test_prune_on_tiny_data_prints_its_own_error_only(tmp_path):
    path, _ = _saved_for_prune(tmp_path, "logits")
    tiny = tmp_path / "tiny.npz"
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    np.savez(tiny, x=x, y=np.array([0, 1, 0]))
    options = ["--target-units", "0.5", "--epochs", "1", "--finetune-epochs", "0"]
    options += ["--schedule", "penalty"]  # one epoch of penalties is too few: refused
    result = subprocess.run(  # a process of its own: warnings print as they would to a user
        [sys.executable, "-m", "keras_dropneuron.cli", "prune", path, "--data", str(tiny)]
        + ["-o", str(tmp_path / "s.keras"), *options],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        timeout=300,
    )
    assert result.returncode == 1
    # TensorFlow's C++ start-up log ("I0000 ...") is written before Python runs.
    cpp_log = re.compile(r"^([IWE]\d{4} |WARNING: All log messages before absl)")
    lines = [line for line in result.stderr.splitlines() if not cpp_log.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("keras-dropneuron: error: nothing written: BudgetError: ")
    # The advice names this command's options, not the Python arguments.
    assert "`--epochs`" in lines[0] and "`epochs=`" not in lines[0]


@pytest.mark.parametrize("verbose", [False, True])
def test_prune_shows_library_warnings_only_with_verbose(
    verbose, tmp_path, capsys, caplog, monkeypatch
):
    from keras_dropneuron import budget

    def noisy_prune_to_budget(*args, **kwargs):
        logging.getLogger("tensorflow").warning("5 out of the last 5 calls triggered retracing")
        warnings.warn("a callback's warning", UserWarning, stacklevel=1)
        raise ValueError("Invalid value for argument `x`")

    monkeypatch.setattr(budget, "prune_to_budget", noisy_prune_to_budget)
    path, data = _saved_for_prune(tmp_path, "regression")
    options = ["--target-units", "0.5", *(["--verbose"] if verbose else [])]
    with pytest.warns(UserWarning) if verbose else contextlib.nullcontext():
        assert (
            main(["prune", path, "--data", data, "-o", str(tmp_path / "s.keras"), *options]) == 1
        )
    err = capsys.readouterr().err
    assert err.endswith(
        "keras-dropneuron: error: cannot prune " + path + ": ValueError: "
        "Invalid value for argument `x`\n"
    )
    assert ("retracing" in caplog.text) == verbose
