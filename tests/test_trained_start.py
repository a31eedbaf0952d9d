"""Trained-start experiments: train without penalties, then `prune_to_budget`.

One quick run of `resnet20-trained` through the command line serves the
module: its figures are recomputed here from the slim model it saved, the
multiply-adds from layer shapes alone (`hand_macs`) and the accuracy with
numpy's argmax on the same test images.
"""

import contextlib
import importlib.util
import io
import json

import keras
import numpy as np
import pytest
from conftest import MNIST
from hand_macs import model_macs

from keras_dropneuron.cli import main
from keras_dropneuron.experiments import trained_setups, trained_start
from keras_dropneuron.experiments.setups import bn_cnn

NAME = "resnet20-trained"
COLUMNS = (
    "| experiment | seed | target | accuracy before | accuracy after | drop (points) "
    "| bound | met | MAC ratio | status |"
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`reproduce resnet20-trained --quick`: `(out folder, printed text, rows)`."""
    if not MNIST.exists():
        pytest.skip(f"local MNIST file not found at {MNIST}")
    out = tmp_path_factory.mktemp("trained_start")
    args = ["reproduce", NAME, "--quick", "--mnist", str(MNIST), "--out", str(out)]
    if importlib.util.find_spec("matplotlib") is not None:
        args.append("--plots")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(args)
    assert status == 0
    rows = json.loads((out / "results.json").read_text())
    return out, printed.getvalue(), rows


def _slim(row):
    assert row["status"] == "ok", row["status"]
    return keras.saving.load_model(row["slim_model"])


def test_quick_run_writes_its_rows_and_table(quick_run):
    out, printed, rows = quick_run
    assert [(r["experiment"], r["target_macs"]) for r in rows] == [
        (NAME, t) for t in trained_setups.QUICK_TARGETS
    ]
    table = (out / "results.md").read_text()
    assert table.splitlines()[0] == COLUMNS
    assert table.strip() in printed
    for row in rows:
        assert f"| {NAME} | 0 | {row['target_macs']:g} |" in table
        assert row["quick"] and row["train_size"] == trained_setups.QUICK_TRAIN


def test_mac_ratio_is_what_the_slim_model_costs(quick_run):
    _, _, rows = quick_run
    original = bn_cnn.resnet20()
    for row in rows:
        slim = _slim(row)
        ratio = model_macs(slim) / model_macs(original)
        assert row["mac_ratio"] == pytest.approx(ratio, rel=1e-9)
        assert ratio <= row["target_macs"] + 1e-9
        assert row["slim_macs"] == model_macs(slim)
        params = slim.count_params() / original.count_params()
        assert row["params_ratio"] == pytest.approx(params, rel=1e-9)


def test_accuracy_after_is_the_slim_models_on_the_same_test_images(quick_run):
    _, _, rows = quick_run
    experiment = trained_setups.EXPERIMENTS[NAME]
    _, _, (x_test, y_test) = trained_start.load_splits(experiment, True, str(MNIST))
    assert len(y_test) == trained_setups.QUICK_TEST
    for row in rows:
        scores = np.asarray(_slim(row).predict(x_test, verbose=0))
        accuracy = np.mean(np.argmax(scores, axis=1) == y_test)
        assert row["test_accuracy_after"] == pytest.approx(accuracy, abs=1e-12)
        drop = 100 * (row["test_accuracy_before"] - row["test_accuracy_after"])
        assert row["drop_points"] == pytest.approx(drop, abs=1e-9)


def _row(name, seed, target, before, after, ratio, bound=0.5):
    return {
        "experiment": name,
        "seed": seed,
        "target_macs": target,
        "test_accuracy_before": before,
        "test_accuracy_after": after,
        "mac_ratio": ratio,
        "bound_points": bound,
        "drop_points": None if after is None else 100 * (before - after),
        "met": after is not None and 100 * (before - after) <= bound,
        "status": "ok" if after is not None else "BudgetError: target_macs=0.25 not reached",
    }


def test_plot_accuracy_vs_macs_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from keras_dropneuron.experiments import plots

    rows = [
        _row("resnet20-trained", 0, 0.5, 0.99, 0.988, 0.49, bound=0.2),
        _row("resnet20-trained", 1, 0.5, 0.98, 0.979, 0.48, bound=0.2),
        _row("resnet20-trained", 0, 0.25, 0.99, None, None),
        _row("lenet-5-trained", 0, 0.25, 0.99, 0.985, 0.24),
    ]
    path = plots.plot_accuracy_vs_macs(rows, tmp_path / "a.png", anchors={"paper": (0.3, -0.5)})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert trained_start.markdown_table(rows).count("\n") == len(rows) + 1


def test_reproduce_plots_draws_accuracy_vs_macs(quick_run):
    pytest.importorskip("matplotlib")
    out, _, _ = quick_run
    assert (out / "accuracy_vs_macs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_experiment_is_a_clear_error(capsys):
    with pytest.raises(ValueError, match=r"argument `name`.*resnet20-trained.*name='resnet21'"):
        trained_start.run_trained_start("resnet21")
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "resnet21-trained", "--quick"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'resnet21-trained'" in capsys.readouterr().err


def test_method_options_do_not_apply_to_trained_start(capsys):
    assert main(["reproduce", NAME, "--quick", "--penalty", "li=1e-3"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"--penalty does not apply to {NAME}" in err


@pytest.mark.parametrize(
    "status, after, met",
    [
        ("ok", 0.986, True),  # 0.4 points lost
        ("ok", 0.984, False),  # 0.6 points
        # prune_to_budget refused it (its validation check): the user gets no model.
        ("BudgetError: the validation error rose", 0.989, False),
    ],
)
def test_a_bound_is_met_only_by_a_returned_slim_model(status, after, met):
    row = {"test_accuracy_before": 0.99, "test_accuracy_after": after, "target_macs": 0.5}
    verdict = trained_start._verdict({**row, "mac_ratio": 0.49, "status": status}, 0.5)
    assert verdict["met"] is met
    assert verdict["drop_points"] == pytest.approx(100 * (0.99 - after))
