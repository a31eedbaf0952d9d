import json

import keras
import numpy as np
import pytest

from keras_dropneuron import cli, prune_weights
from keras_dropneuron.experiments import data, measure, runner, summary
from keras_dropneuron.experiments.setups import SETUPS


def test_load_mnist_from_argument_and_environment(mnist_path, monkeypatch):
    (x, y), (xt, yt) = data.load_mnist(mnist_path)
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    with np.load(mnist_path) as raw:
        np.testing.assert_array_equal(y, raw["y_train"])
        np.testing.assert_allclose(xt[0], raw["x_test"][0] / 255.0, rtol=1e-6)
    monkeypatch.setenv(data.MNIST_ENV, str(mnist_path))
    (_, y_env), _ = data.load_mnist()
    np.testing.assert_array_equal(y_env, y)


def test_load_mnist_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="--mnist|KERAS_DROPNEURON_MNIST|argument"):
        data.load_mnist(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros(3))
    with pytest.raises(ValueError, match="not an MNIST"):
        data.load_mnist(bad)
    monkeypatch.delenv(data.MNIST_ENV, raising=False)

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(RuntimeError, match="--mnist PATH"):
        data.load_mnist()


def test_sparse_regression_data_is_exactly_linear_and_sparse():
    (x, y), (xt, yt), support = data.sparse_regression_data(seed=3)
    assert x.shape == (500, 20) and xt.shape == (500, 20) and support.size == 2
    # y is an exact linear function of the two support features only.
    coef, *_ = np.linalg.lstsq(x.astype("float64"), y[:, 0].astype("float64"), rcond=None)
    off = np.setdiff1d(np.arange(20), support)
    np.testing.assert_allclose(coef[off], 0.0, atol=1e-4)
    assert np.all(np.abs(coef[support]) >= 0.5)
    assert 8.0 < x.std() < 12.0


def test_score_formulas():
    y = np.array([0, 1, 2, 1])
    p = np.eye(3)[[0, 1, 1, 1]]
    assert measure.score("error", y, p) == 25.0
    yr = np.array([[1.0], [2.0]])
    pr = np.array([[1.0], [1.0]])
    assert measure.score("mse", yr, pr) == 0.5
    assert measure.score("nmse", yr, pr) == pytest.approx(1.0 / 5.0)


def test_slim_matches_means_equal_outputs_not_equal_scores(monkeypatch):
    setup = SETUPS["lenet-300-100"]
    model = setup.build("dropneuron", setup.penalties)
    x = np.random.default_rng(0).random((64, 784)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=-1)
    figures = measure.slim_and_measure(model, setup, x, y, quick=True)
    assert figures["slim_matches"] and figures["error"] == figures["slim_error"] == 0.0
    real_slim_model = measure.slim_model

    def sharper_slim_model(model, **kwargs):
        slim, report = real_slim_model(model, **kwargs)
        # Logits times 1.01: every argmax (so the error) stays, the outputs move.
        for variable in slim.get_layer("fc3").weights:
            variable.assign(variable.numpy() * 1.01)
        return slim, report

    monkeypatch.setattr(measure, "slim_model", sharper_slim_model)
    figures = measure.slim_and_measure(model, setup, x, y, quick=True)
    assert figures["error"] == figures["slim_error"] == 0.0
    assert figures["slim_max_abs_deviation"] > 10 * measure.SLIM_TOLERANCE
    assert not figures["slim_matches"]


def test_reproduce_quick_from_the_command_line(mnist_path, tmp_path, capsys):
    # The other experiments run in quick mode through the notebooks' test.
    status = cli.main(
        [
            "reproduce",
            "lenet-300-100",
            "--quick",
            "--mnist",
            str(mnist_path),
            "--out",
            str(tmp_path),
            "--method",
            "both",
        ]
    )
    assert status == 0
    rows = json.loads((tmp_path / "summary.json").read_text())
    runs = json.loads((tmp_path / "results.json").read_text())
    assert [(r["experiment"], r["method"]) for r in rows] == [
        ("lenet-300-100", "threshold"),
        ("lenet-300-100", "proximal"),
    ]
    # Every slim model scores exactly as its pruned model.
    assert all(r["slim_exact"] for r in rows)
    for run in runs:
        assert run["slim_error"] == pytest.approx(run["error"], abs=1e-9)
        assert run["slim_params"] <= run["params"]
        alive = [u["alive"] for u in run["units"]]
        assert all(0 < a <= u["total"] for a, u in zip(alive, run["units"], strict=True))
    assert "| lenet-300-100 |" in (tmp_path / "results.md").read_text()
    assert "| lenet-300-100 |" in capsys.readouterr().out


def test_reproduce_without_mnist_offline_is_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(data.MNIST_ENV, raising=False)

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    status = cli.main(["reproduce", "lenet-300-100", "--quick", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert status == 1
    assert len(err.splitlines()) == 1 and "--mnist PATH" in err


def quick_lenet_300_100(mnist_path, **kwargs):
    return runner.run_once(
        "lenet-300-100", "dropneuron", 0, quick=True, mnist=mnist_path, verbose=0, **kwargs
    )


def test_reproduce_with_auto_threshold_records_the_chosen_threshold(
    mnist_path, tmp_path, monkeypatch
):
    real_choose_threshold = runner.choose_threshold
    returned = []

    def recording_choose_threshold(*args, **kwargs):
        returned.append(real_choose_threshold(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(runner, "choose_threshold", recording_choose_threshold)
    args = ["reproduce", "lenet-300-100", "--quick", "--mnist", str(mnist_path)]
    assert cli.main([*args, "--out", str(tmp_path), "--auto-threshold", "0"]) == 0
    (run,) = json.loads((tmp_path / "results.json").read_text())
    assert run["method"] == "threshold+auto"
    assert run["auto_threshold_tolerance"] == 0.0
    # The stored threshold is the one choose_threshold picked on the held-out data:
    # one of its candidates (0.0: none) that loses nothing on it.
    ((chosen, scores),) = returned
    assert run["chosen_threshold"] == chosen
    assert chosen in scores and scores[chosen] <= scores[0.0]
    assert run["slim_matches"]


def test_auto_threshold_validates_on_held_out_data_and_prunes_units(mnist_path, monkeypatch):
    calls, chosen = [], []

    def fake_choose_threshold(model, x, y, tolerance, mode, score):
        calls.append((x, y, tolerance, mode, keras.models.clone_model(model)))
        calls[-1][-1].set_weights(model.get_weights())
        # Just above the smallest group norm of the model: prunes that group.
        kernels = [layer.kernel.numpy() for layer in model.layers]
        smallest = min(np.linalg.norm(k, axis=a).min() for k in kernels for a in (0, 1))
        chosen.append(1.0001 * float(smallest))
        return chosen[-1], {}

    monkeypatch.setattr(runner, "choose_threshold", fake_choose_threshold)
    result, model = quick_lenet_300_100(mnist_path, auto_threshold=0.5)
    ((x_val, y_val, tolerance, mode, trained),) = calls
    (x, y), _, _ = SETUPS["lenet-300-100"].load(0, mnist_path)
    start = int(runner.QUICK_SAMPLES * (1 - runner.VALIDATION_FRACTION))
    np.testing.assert_array_equal(x_val, x[start : runner.QUICK_SAMPLES])
    np.testing.assert_array_equal(y_val, y[start : runner.QUICK_SAMPLES])
    assert (tolerance, mode) == (0.5, "neuron")
    assert result["chosen_threshold"] == chosen[0]
    # The returned model is the trained one pruned at the chosen threshold
    # (quick mode does not fine-tune).
    prune_weights(trained, chosen[0], mode="neuron")
    for expected, actual in zip(trained.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(actual, expected)
    assert result["slim_params"] < result["params"]


@pytest.mark.parametrize("value", ["-1", "inf", "nan", "abc"])
def test_reproduce_rejects_bad_auto_threshold(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["reproduce", "lenet-300-100", "--auto-threshold", value])
    assert exit_info.value.code == 2
    assert "--auto-threshold" in capsys.readouterr().err


def test_penalty_overrides_reach_the_model_and_the_results(mnist_path, tmp_path):
    result, model = quick_lenet_300_100(mnist_path, penalties={"li": 2e-4})
    reg = model.get_layer("fc1").kernel_regularizer
    assert (reg.li, reg.lo) == (2e-4, SETUPS["lenet-300-100"].penalties["lo"])
    assert result["penalties"] == {"li": 2e-4}
    (row,) = summary.summarize([result])
    assert row["method"] == "threshold (li=0.0002)"
    # Runs with other overrides are other rows.
    other = {**result, "penalties": {}}
    assert [r["method"] for r in summary.summarize([result, other])] == [
        "threshold (li=0.0002)",
        "threshold",
    ]


@pytest.mark.parametrize(
    "penalties, match",
    [({"li_typo": 1.0}, "one of"), ({"li": -1.0}, "finite float >= 0"), ({"lo": "x"}, "float")],
)
def test_bad_penalty_overrides_raise_naming_the_key(penalties, match):
    with pytest.raises((TypeError, ValueError), match=match) as info:
        runner.check_penalties("lenet-300-100", penalties)
    assert "penalties" in str(info.value)


def test_reproduce_penalty_option(mnist_path, tmp_path, capsys):
    args = ["reproduce", "lenet-300-100", "--quick", "--mnist", str(mnist_path)]
    assert cli.main([*args, "--out", str(tmp_path), "--penalty", "lo=1e-4"]) == 0
    (run,) = json.loads((tmp_path / "results.json").read_text())
    assert run["penalties"] == {"lo": 1e-4}
    assert cli.main([*args, "--out", str(tmp_path), "--penalty", "nope=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--penalty" in err and "'nope'" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*args, "--penalty", "li"])
    assert exit_info.value.code == 2


def test_proximal_runs_carry_no_penalty(mnist_path):
    # The autoencoder has an extra strength (`input_lo`) besides li and lo.
    _, model = runner.run_once(
        "autoencoder", "dropneuron", 0, "proximal", quick=True, mnist=mnist_path, verbose=0
    )
    assert SETUPS["autoencoder"].penalties["input_lo"] > 0
    assert [float(loss) for loss in model.losses] == [0.0] * len(model.losses)


def test_autoencoder_per_layer_li_penalizes_each_layer_by_its_strength():
    setup = SETUPS["autoencoder"]
    strengths = {"li": 1e-3, "lo": 2e-3, "input_lo": 3e-3, "output_lo": 4e-3, "enc1_li": 5e-3}
    model = setup.build("dropneuron", {**setup.penalties, **strengths, "code_li": 6e-3})
    expected = {
        "enc1": (5e-3, 3e-3),
        "code": (6e-3, 2e-3),
        "dec1": (1e-3, 2e-3),
        "recon": (0, 4e-3),
    }
    for layer in model.layers:
        w = np.asarray(layer.kernel.numpy(), "float64")
        li, lo = expected[layer.name]
        norms = li * np.linalg.norm(w, axis=0).sum() + lo * np.linalg.norm(w, axis=1).sum()
        penalty = float(keras.ops.convert_to_numpy(layer.kernel_regularizer(layer.kernel)))
        assert penalty == pytest.approx(norms, rel=1e-5), layer.name
    # Without them, enc1 and the code take `li` (the set-up's defaults are None).
    model = setup.build("dropneuron", {**setup.penalties, **strengths, "enc1_li": None})
    assert model.get_layer("enc1").kernel_regularizer.li == 1e-3


# ------------------------------------------------------------------ LeNet-5-Caffe


def test_lenet_5_caffe_penalties_are_group_norms_of_filters_channels_and_units():
    setup = SETUPS["lenet-5-caffe"]
    strengths = {"li": 1e-3, "lo": 2e-3, "conv_li": 3e-3, "conv_lo": 4e-3}
    model = setup.build("dropneuron", {**setup.penalties, **strengths})
    assert [layer.name for layer in model.layers if layer.weights] == [
        "conv1",
        "conv2",
        "fc1",
        "fc2",
    ]
    assert model.output_shape == (None, 10)
    assert model.get_layer("fc1").input.shape[-1] == 800

    def kernel(name):
        return keras.ops.convert_to_numpy(model.get_layer(name).kernel).astype("float64")

    def norms(w, keep):  # one L2 norm per index of axis `keep`
        axes = tuple(a for a in range(w.ndim) if a != keep % w.ndim)
        return np.sqrt(np.sum(w**2, axis=axes))

    conv1, conv2, fc1, fc2 = (kernel(n) for n in ("conv1", "conv2", "fc1", "fc2"))
    expected = [
        3e-3 * norms(conv1, -1).sum(),  # conv1 filters
        3e-3 * norms(conv2, -1).sum() + 4e-3 * norms(conv2, 2).sum(),  # filters, channels
        1e-3 * norms(fc1, -1).sum() + 2e-3 * norms(fc1, 0).sum(),  # units, inputs
        2e-3 * norms(fc2, 0).sum(),  # fc1's units as the output layer reads them
    ]
    np.testing.assert_allclose([float(v) for v in model.losses], expected, rtol=1e-5)
    unpenalized = setup.build("unpenalized", setup.penalties)
    assert unpenalized.losses == [] and unpenalized.count_params() == model.count_params()


def test_lenet_5_caffe_dead_filters_and_units_are_sliced_away_exactly():
    from keras_dropneuron import slim_model, sparsity_report

    setup = SETUPS["lenet-5-caffe"]
    model = setup.build("unpenalized", setup.penalties)
    # conv1 filters 0-10 and conv2 filters 0-31 receive nothing (relu(0) = 0).
    for name, dead in (("conv1", slice(0, 11)), ("conv2", slice(0, 32))):
        _kill(model.get_layer(name).kernel, (..., dead))
        _kill(model.get_layer(name).bias, dead)
    # fc1 reads 65 of the 800 flattened features (row p * 50 + c for position p,
    # channel c), all from live channels, and its units 0-474 receive nothing.
    rng = np.random.default_rng(4)
    live_rows = np.flatnonzero(np.arange(800) % 50 >= 32)
    rows = np.sort(rng.choice(live_rows, size=65, replace=False))
    _kill(model.get_layer("fc1").kernel, np.setdiff1d(np.arange(800), rows))
    _kill(model.get_layer("fc1").kernel, (slice(None), slice(0, 475)))
    _kill(model.get_layer("fc1").bias, slice(0, 475))
    channels = np.unique(rows % 50)  # the conv2 filters that fc1 still reads
    slim = slim_model(model)
    assert slim.get_layer("conv1").filters == 9
    assert slim.get_layer("conv2").filters == len(channels)
    # A read channel keeps all its 16 positions: the convolution computes them.
    assert tuple(slim.get_layer("fc1").kernel.shape) == (16 * len(channels), 25)
    images = np.random.default_rng(5).random((16, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(slim(images)),
        keras.ops.convert_to_numpy(model(images)),
        rtol=1e-5,
        atol=1e-6,
    )
    # The records' order: conv1 filters - conv2 filters - fc1 inputs - fc1 units.
    units = measure.alive_units(setup, sparsity_report(model), model, slim)
    assert [(u["alive"], u["total"]) for u in units] == [
        (9, 20),
        (len(channels), 50),
        (65, 800),
        (25, 500),
    ]


# ------------------------------------------------------------- beyond the paper


def _kill(variable, index, value=0.0):
    weight = keras.ops.convert_to_numpy(variable).copy()
    weight[index] = value
    variable.assign(weight)


def test_vit_patches_are_the_7x7_tiles_in_reading_order():
    model = SETUPS["mnist-vit"].build("unpenalized", SETUPS["mnist-vit"].penalties)
    images = np.random.default_rng(0).random((3, 28, 28)).astype("float32")
    patches = keras.Model(model.inputs, model.get_layer("patches").output)(images)
    expected = np.stack(
        [
            images[:, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7].reshape(3, 49)
            for r in range(4)
            for c in range(4)
        ],
        axis=1,
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(patches), expected)


def test_vit_dead_heads_and_feed_forward_units_are_sliced_away_exactly():
    from keras_dropneuron import slim_model, sparsity_report

    model = SETUPS["mnist-vit"].build("unpenalized", SETUPS["mnist-vit"].penalties)
    # Block 1: feed-forward units 0-69 receive nothing (kernel columns and bias
    # zero, gelu(0) = 0); block 2: units 30-89 are read by nothing (ff2 rows).
    _kill(model.get_layer("block1_ff1").kernel, (slice(None), slice(0, 70)))
    _kill(model.get_layer("block1_ff1").bias, slice(0, 70))
    _kill(model.get_layer("block2_ff2").kernel, slice(30, 90))
    # Heads: two silenced at the output (block 1), one at the values (block 3).
    attention = model.get_layer("block1_attention")
    _kill(attention.output_dense.kernel, slice(1, 3))
    attention = model.get_layer("block3_attention")
    _kill(attention.value_dense.kernel, (slice(None), 0))
    _kill(attention.value_dense.bias, 0)
    slim, report = slim_model(model, return_report=True)
    assert [slim.get_layer(f"block{b}_ff1").units for b in range(1, 5)] == [58, 68, 128, 128]
    assert [slim.get_layer(f"block{b}_attention").num_heads for b in range(1, 5)] == [2, 4, 3, 4]
    images = np.random.default_rng(1).random((16, 28, 28)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(slim(images)),
        keras.ops.convert_to_numpy(model(images)),
        rtol=1e-5,
        atol=1e-6,
    )
    assert report.totals()["macs_after"] < report.totals()["macs_before"]
    # The runner's counts: heads from the attention rule, feed-forward units from the report.
    units = measure.alive_units(SETUPS["mnist-vit"], sparsity_report(model), model, slim)
    assert [u["alive"] for u in units] == [2, 58, 4, 68, 3, 128, 4, 128]
    assert [u["total"] for u in units] == [4, 128] * 4


def test_lstm_dead_hidden_units_and_pixels_are_sliced_away_exactly():
    from keras_dropneuron import slim_model, sparsity_report

    setup = SETUPS["sequential-mnist-lstm"]
    model = setup.build("unpenalized", setup.penalties)
    lstm = model.get_layer("lstm")
    # Hidden units 0-79 are read by nothing: their recurrent rows and output rows are zero.
    _kill(lstm.cell.recurrent_kernel, slice(0, 80))
    _kill(model.get_layer("output").kernel, slice(0, 80))
    # Pixel columns 0-5 and 22-27 (the borders) feed nothing.
    _kill(lstm.cell.kernel, np.r_[0:6, 22:28])
    slim, report = slim_model(model, drop_inputs=True, return_report=True)
    (kept,) = report.kept_inputs.values()
    np.testing.assert_array_equal(kept, np.arange(6, 22))
    assert slim.get_layer("lstm").units == 48
    images = np.random.default_rng(2).random((8, 28, 28)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(slim(images[..., kept])),
        keras.ops.convert_to_numpy(model(images)),
        rtol=1e-5,
        atol=1e-6,
    )
    units = measure.alive_units(setup, sparsity_report(model), model, slim)
    assert [(u["alive"], u["total"]) for u in units] == [(16, 28), (48, 128)]


def test_position_embedding_adds_its_table_and_round_trips():
    from keras_dropneuron.experiments.setups import PositionEmbedding

    layer = PositionEmbedding(initializer="ones")
    x = np.random.default_rng(3).random((2, 16, 8)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x + 1.0, rtol=1e-6)
    clone = PositionEmbedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("name", ["sequential-mnist-lstm", "mnist-vit"])
def test_quick_run_beyond_the_paper(name, mnist_path):
    # Both variants run through the CLI in the notebooks' test; one here.
    run, model = runner.run_once(name, "dropneuron", 0, quick=True, mnist=mnist_path, verbose=0)
    assert run["slim_matches"] and run["slim_error"] == pytest.approx(run["error"], abs=1e-9)
    assert [u["label"] for u in run["units"]] == [label for label, _, _ in SETUPS[name].units]
    assert all(0 < u["alive"] <= u["total"] for u in run["units"])
    assert run["slim_macs"] <= run["macs"]
    assert run["original_ms"] > 0 and run["slim_ms"] > 0
    assert run["speedup"] == pytest.approx(run["original_ms"] / run["slim_ms"])
    # The penalties: LSTM kernel, recurrent kernel, output layer; per ViT block
    # the four attention kernels (one HeadRegularizer) and the two feed-forward layers.
    assert len(model.losses) == (3 if name == "sequential-mnist-lstm" else 4 * (4 + 2))


def _run(experiment, variant, error, seed=0):
    units = [{"label": "hidden", "alive": 10, "total": 10}]
    return {
        "experiment": experiment,
        "variant": variant,
        "method": "threshold",
        "error": error,
        "compression": 1.0,
        "units": units,
        "slim_params": 1,
        "params": 1,
        "slim_macs": 1,
        "macs": 1,
        "speedup": 1.0,
        "slim_matches": True,
        "seed": seed,
    }


def test_summary_gives_the_gap_to_the_unpenalized_variant():
    name = "sequential-mnist-lstm"
    runs = [_run(name, "dropneuron", 1.5), _run(name, "dropneuron", 1.7, seed=1)]
    runs += [_run(name, "unpenalized", 1.2), _run(name, "unpenalized", 1.4, seed=1)]
    rows = summary.summarize(runs + [_run("lenet-5", "dropneuron", 0.8)])
    assert rows[0]["gap"] == pytest.approx(1.6 - 1.3)
    assert "gap" not in rows[1] and "gap" not in rows[2]
    assert "| error 1.60% / 1.60% / 1.70%; +0.30 vs unpenalized |" in summary.markdown_table(rows)
