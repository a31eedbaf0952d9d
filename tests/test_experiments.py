import json

import keras
import numpy as np
import pytest

from keras_dropneuron import cli, prune_weights
from keras_dropneuron.experiments import data, runner
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
    assert runner.score("error", y, p) == 25.0
    yr = np.array([[1.0], [2.0]])
    pr = np.array([[1.0], [1.0]])
    assert runner.score("mse", yr, pr) == 0.5
    assert runner.score("nmse", yr, pr) == pytest.approx(1.0 / 5.0)


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


def test_reproduce_with_auto_threshold_records_the_chosen_threshold(mnist_path, tmp_path):
    args = ["reproduce", "lenet-300-100", "--quick", "--mnist", str(mnist_path)]
    assert cli.main([*args, "--out", str(tmp_path), "--auto-threshold", "0"]) == 0
    (run,) = json.loads((tmp_path / "results.json").read_text())
    assert run["method"] == "threshold+auto"
    assert run["auto_threshold_tolerance"] == 0.0
    assert run["chosen_threshold"] >= 0.0
    assert run["slim_matches"]


def test_auto_threshold_validates_on_held_out_data_and_prunes_units(mnist_path, monkeypatch):
    calls = []

    def fake_choose_threshold(model, x, y, tolerance, mode, score):
        calls.append((x, y, tolerance, mode, keras.models.clone_model(model)))
        calls[-1][-1].set_weights(model.get_weights())
        # Just above the smallest group norm of the model: prunes that group.
        kernels = [layer.kernel.numpy() for layer in model.layers]
        smallest = min(np.linalg.norm(k, axis=a).min() for k in kernels for a in (0, 1))
        return 1.0001 * float(smallest), {}

    monkeypatch.setattr(runner, "choose_threshold", fake_choose_threshold)
    result, model = quick_lenet_300_100(mnist_path, auto_threshold=0.5)
    ((x_val, y_val, tolerance, mode, trained),) = calls
    (x, y), _, _ = SETUPS["lenet-300-100"].load(0, mnist_path)
    start = int(runner.QUICK_SAMPLES * (1 - runner.VALIDATION_FRACTION))
    np.testing.assert_array_equal(x_val, x[start : runner.QUICK_SAMPLES])
    np.testing.assert_array_equal(y_val, y[start : runner.QUICK_SAMPLES])
    assert (tolerance, mode) == (0.5, "neuron")
    chosen = result["chosen_threshold"]
    assert chosen > 0
    # The returned model is the trained one pruned at the chosen threshold
    # (quick mode does not fine-tune).
    prune_weights(trained, chosen, mode="neuron")
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
    (row,) = runner.summarize([result])
    assert row["method"] == "threshold (li=0.0002)"
    # Runs with other overrides are other rows.
    other = {**result, "penalties": {}}
    assert [r["method"] for r in runner.summarize([result, other])] == [
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
